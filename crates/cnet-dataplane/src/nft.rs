//! nftables, one atomic transaction per change, run by libnftables inside
//! cnetd (the engine `nft` itself uses, loaded at run time) so a change costs
//! no process start: `nft -f` took 2.7–6.3 ms per change here, mostly process
//! start-up. No maintained Rust crate speaks the nft language with
//! concatenated maps, and the nf_tables netlink crates need the whole rule
//! bytecode written by hand; libnftables keeps the rules readable. Without
//! the library (no `libnftables.so.1`) the `nft` program is run instead, with
//! the same input and the same error texts.
//!
//! Invariants:
//! - One call runs at a time (libnftables contexts share global state while
//!   they initialise), in the calling thread's network namespace.
//! - One context is kept for cnetd's own namespace (see `CONTEXT`).
//! - A failed script changes nothing (nftables transactions are atomic).
//! - A failure's kind comes from nft's error text, read by one classifier
//!   ([`crate::error`]): a missing table is [`ErrorKind::NotFound`].

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use crate::cmd::Cmd;
use crate::{DataplaneError, ErrorKind, Result};

/// Output flags of libnftables (`NFT_CTX_OUTPUT_*`), with the `nft` options they stand for.
#[derive(Clone, Copy)]
enum Output {
    Plain,
    Json,
    Terse,
}

impl Output {
    fn flags(self) -> c_uint {
        match self {
            Output::Plain => 0,
            Output::Json => 1 << 4,
            Output::Terse => 1 << 11,
        }
    }
    fn option(self) -> Option<&'static str> {
        match self {
            Output::Plain => None,
            Output::Json => Some("-j"),
            Output::Terse => Some("-t"),
        }
    }
}

/// The functions of libnftables.so.1 that cnet uses.
struct Libnftables {
    ctx_new: unsafe extern "C" fn(c_uint) -> *mut c_void,
    ctx_free: unsafe extern "C" fn(*mut c_void),
    buffer_output: unsafe extern "C" fn(*mut c_void) -> c_int,
    buffer_error: unsafe extern "C" fn(*mut c_void) -> c_int,
    output_buffer: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    error_buffer: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    set_output_flags: unsafe extern "C" fn(*mut c_void, c_uint),
    run: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
}

fn library() -> Option<&'static Libnftables> {
    static LIB: OnceLock<Option<Libnftables>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast
        // to the signature libnftables.h declares for it. The handle is never
        // closed, so the pointers stay valid for the life of the process.
        unsafe {
            let handle = libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                tracing::info!("libnftables.so.1 not found: running the nft program for each change");
                return None;
            }
            // A function pointer of type `F` for symbol `name`.
            fn sym<F: Copy>(handle: *mut c_void, name: &CStr) -> Option<F> {
                // SAFETY: `handle` came from a successful dlopen and is never
                // closed; `name` is NUL-terminated.
                let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
                // SAFETY: `p` is a non-null symbol address and `F` is always an
                // `extern "C" fn` type (pointer-sized) of the signature
                // libnftables.h declares for that symbol.
                (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
            }
            Some(Libnftables {
                ctx_new: sym(handle, c"nft_ctx_new")?,
                ctx_free: sym(handle, c"nft_ctx_free")?,
                buffer_output: sym(handle, c"nft_ctx_buffer_output")?,
                buffer_error: sym(handle, c"nft_ctx_buffer_error")?,
                output_buffer: sym(handle, c"nft_ctx_get_output_buffer")?,
                error_buffer: sym(handle, c"nft_ctx_get_error_buffer")?,
                set_output_flags: sym(handle, c"nft_ctx_output_set_flags")?,
                run: sym(handle, c"nft_run_cmd_from_buffer")?,
            })
        }
    })
    .as_ref()
}

/// A libnftables context and the network namespace its socket lives in.
struct Context {
    ptr: *mut c_void,
    netns: u64,
}

// SAFETY: the context is only used under the `CONTEXT` mutex, by one thread at a time.
unsafe impl Send for Context {}

/// The kept context. Kept, not made per call: closing an nftables socket
/// waits for the kernel to free deleted elements (an RCU grace period,
/// 10–35 ms here), which would make every element deletion that slow.
static CONTEXT: Mutex<Option<Context>> = Mutex::new(None);

/// The inode of the calling thread's network namespace.
fn thread_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

/// An nftables failure, its kind decided by the one classifier of nft's texts.
fn failed(stderr: String) -> DataplaneError {
    DataplaneError::failed("nft", stderr.trim().to_string())
}

/// Runs nftables commands; their output on success, the error text on failure.
fn run(script: &str, output: Output) -> Result<String> {
    let mut kept = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lib) = library() else {
        return Cmd::new("nft").args(output.option()).args(["-f", "-"]).stdin(script.to_string()).run();
    };
    let input = CString::new(script).map_err(|_| failed("the nftables script contains a NUL byte".into()))?;
    let netns = thread_netns();
    // SAFETY: contexts are created, used and freed under the `CONTEXT` lock
    // only; the buffers they hand out are copied before the next call.
    unsafe {
        let new_context = || {
            let ptr = (lib.ctx_new)(0);
            if ptr.is_null() {
                return Err(failed("libnftables could not create a context".into()));
            }
            (lib.buffer_output)(ptr);
            (lib.buffer_error)(ptr);
            Ok(Context { ptr, netns })
        };
        // A caller in another namespace (rare: tests, tools) gets a context of its own.
        let mut own = None;
        let ctx = match kept.as_ref() {
            Some(c) if c.netns == netns => c.ptr,
            Some(_) => own.insert(new_context()?).ptr,
            None => kept.insert(new_context()?).ptr,
        };
        (lib.set_output_flags)(ctx, output.flags());
        let rc = (lib.run)(ctx, input.as_ptr());
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let (out, err) = (text((lib.output_buffer)(ctx)), text((lib.error_buffer)(ctx)));
        if let Some(c) = own {
            (lib.ctx_free)(c.ptr);
        }
        if rc == 0 {
            Ok(out)
        } else {
            Err(failed(if err.trim().is_empty() { format!("nftables refused the change (code {rc})") } else { err }))
        }
    }
}

/// Applies a script as one atomic transaction.
pub fn apply(script: &str) -> Result<()> {
    run(script, Output::Plain).map(|_| ())
}

/// The terse listing of one table (no elements), or `None` when it does not exist.
pub fn table_terse(family: &str, name: &str) -> Result<Option<String>> {
    match run(&format!("list table {family} {name}"), Output::Terse) {
        Ok(out) => Ok(Some(out)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The JSON dump of one table, or `None` when it does not exist.
pub fn table_json(family: &str, name: &str) -> Result<Option<serde_json::Value>> {
    match run(&format!("list table {family} {name}"), Output::Json) {
        Ok(out) => serde_json::from_str(&out)
            .map(Some)
            .map_err(|e| DataplaneError::Parse { program: "nft".into(), detail: e.to_string() }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// All base chains of the ruleset with `policy drop`, as `family table chain hook`.
pub fn foreign_drop_chains(own_table: &str) -> Result<Vec<String>> {
    let out = run("list chains", Output::Json)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| DataplaneError::Parse { program: "nft".into(), detail: e.to_string() })?;
    let mut found = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["chain"];
        if c.is_null() || c["table"] == own_table || c["policy"] != "drop" {
            continue;
        }
        found.push(format!(
            "{} {} {} (hook {})",
            c["family"].as_str().unwrap_or("?"),
            c["table"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            c["hook"].as_str().unwrap_or("?")
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::in_private_netns;

    #[test]
    fn a_missing_table_lists_as_none_and_failures_have_kinds() {
        in_private_netns(|| {
            assert_eq!(table_terse("inet", "cnet_test").unwrap(), None);
            assert_eq!(table_json("inet", "cnet_test").unwrap(), None);
            apply("table inet cnet_test {\n chain c { type filter hook input priority 0; policy accept; }\n}").unwrap();
            assert!(table_terse("inet", "cnet_test").unwrap().unwrap().contains("chain c"));
            assert!(table_json("inet", "cnet_test").unwrap().is_some());

            assert_eq!(apply("create table inet cnet_test").unwrap_err().kind(), ErrorKind::Exists);
            assert_eq!(apply("delete chain inet cnet_test nope").unwrap_err().kind(), ErrorKind::NotFound);
            assert_eq!(apply("this is not nftables").unwrap_err().kind(), ErrorKind::Other);

            apply("table ip other {\n chain c { type filter hook forward priority 0; policy drop; }\n}").unwrap();
            assert_eq!(foreign_drop_chains("cnet_test").unwrap(), vec!["ip other c (hook forward)".to_string()]);
        });
    }
}
