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
//! - One context is kept, for cnetd's own namespace only (see `CONTEXT`).
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

/// The inode of cnetd's own network namespace (its main thread's).
fn process_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
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
        // A caller in another namespace (a container's, for its egress
        // guards; tests, tools) gets a context of its own, freed after the
        // call: a kept one's socket would keep that namespace alive.
        let mut own = None;
        let ctx = match kept.as_ref() {
            Some(c) if c.netns == netns => c.ptr,
            None if netns == process_netns() => kept.insert(new_context()?).ptr,
            _ => own.insert(new_context()?).ptr,
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
///
/// Counters' values are left out (`counter`): they change with traffic,
/// and the listing is compared to tell whether someone changed the rules.
pub fn table_terse(family: &str, name: &str) -> Result<Option<String>> {
    match run(&format!("list table {family} {name}"), Output::Terse) {
        Ok(out) => Ok(Some(without_counter_values(&out))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn without_counter_values(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    for line in listing.lines() {
        let mut words: Vec<&str> = Vec::new();
        let mut it = line.split(' ').peekable();
        while let Some(w) = it.next() {
            words.push(w);
            if w == "counter" && it.peek() == Some(&"packets") {
                // `packets N bytes M`
                for _ in 0..4 {
                    it.next();
                }
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
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
    fn counter_values_are_not_part_of_a_listing() {
        let a = "\t\tudp dport @p counter packets 0 bytes 0 drop\n";
        let b = "\t\tudp dport @p counter packets 7 bytes 644 drop\n";
        assert_eq!(without_counter_values(a), without_counter_values(b));
        assert_eq!(without_counter_values(a), "\t\tudp dport @p counter drop\n");
    }

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

// One element, looked up over nf_tables netlink: `nft get element` fills
// its cache with every element of the table first (150 ms with 10,000 port
// mappings here); the kernel answers a single lookup at once.

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_GETSETELEM: u8 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFPROTO_INET: u8 = 1;

/// The request that looks up address `ip` in set `set` of table `inet <table>`.
fn get_address_request(seq: u32, table: &str, set: &str, ip: std::net::IpAddr) -> Vec<u8> {
    use crate::nfnetlink::{message, nest, put, NLM_F_ACK, NLM_F_REQUEST};
    let cstr = |s: &str| [s.as_bytes(), &[0]].concat();
    let key = match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut attrs = Vec::new();
    put(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    put(&mut attrs, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    nest(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
        nest(b, NFTA_LIST_ELEM, |b| nest(b, NFTA_SET_ELEM_KEY, |b| put(b, NFTA_DATA_VALUE, &key)))
    });
    message(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_INET, &attrs)
}

/// Whether address `ip` is in set `set` of table `inet <table>`, in the
/// calling thread's namespace. An error of kind `NotFound` when the table or
/// the set does not exist.
pub fn has_address(table: &str, set: &str, ip: std::net::IpAddr) -> Result<bool> {
    let failed =
        |source| DataplaneError::Netlink { what: format!("looking up {ip} in set {set} of inet {table}"), source };
    // The element, or none: ENOENT says no such element, and a missing set
    // or table says ENOENT too.
    let request = |seq| get_address_request(seq, table, set, ip);
    if crate::nftobj::lookup(request, NFT_MSG_NEWSETELEM).map_err(failed)?.is_some() {
        return Ok(true);
    }
    // Tell a missing element from a missing table by the table (one netlink
    // lookup: a listing costs a ruleset cache fetch).
    match crate::nftobj::table_exists(crate::nftobj::Family::Inet, table)? {
        true => Ok(false),
        false => Err(failed(std::io::Error::from_raw_os_error(libc::ENOENT))),
    }
}

#[cfg(test)]
mod element_tests {
    use super::*;
    use crate::testutil::in_private_netns;

    #[test]
    fn a_get_element_request_is_encoded_as_the_kernel_reads_it() {
        let req = get_address_request(7, "cnet", "dnat4", "10.0.0.2".parse().unwrap());
        // nlmsghdr: length, type (NFTABLES << 8 | GETSETELEM), flags REQUEST|ACK, seq.
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize, req.len());
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().unwrap()), 10 << 8 | 13);
        assert_eq!(u16::from_ne_bytes(req[6..8].try_into().unwrap()), 0x5);
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 7);
        assert_eq!(&req[16..20], &[1, 0, 0, 0], "nfgenmsg: NFPROTO_INET, version 0");
        assert_eq!(&req[20..30], &[9, 0, 1, 0, b'c', b'n', b'e', b't', 0, 0], "table \"cnet\"");
        // The key, innermost: NFTA_DATA_VALUE with the address in network order.
        assert_eq!(&req[req.len() - 8..], &[8, 0, 1, 0, 10, 0, 0, 2]);
    }

    #[test]
    fn an_address_is_found_in_a_set_and_a_missing_table_is_not_found() {
        in_private_netns(|| {
            let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
            let missing = has_address("t", "dnat4", ip("10.0.0.2")).unwrap_err();
            assert_eq!(missing.kind(), crate::ErrorKind::NotFound, "{missing}");
            apply(concat!(
                "table inet t {\n",
                "  set dnat4 { type ipv4_addr; flags dynamic; }\n",
                "  set dnat6 { type ipv6_addr; flags dynamic; }\n",
                "}\n",
                "add element inet t dnat4 { 10.0.0.2 }\n",
                "add element inet t dnat6 { fd00::2 }\n"
            ))
            .unwrap();
            assert!(has_address("t", "dnat4", ip("10.0.0.2")).unwrap());
            assert!(!has_address("t", "dnat4", ip("10.0.0.3")).unwrap());
            assert!(has_address("t", "dnat6", ip("fd00::2")).unwrap());
            assert!(!has_address("t", "dnat6", ip("fd00::3")).unwrap());
        });
    }
}

/// Fuzzing entry point: the element lookup cnet sends for (`table`, `set`,
/// `ip`) carries exactly those, as the kernel reads them. Panics otherwise.
#[doc(hidden)]
pub fn check_element_request(table: &str, set: &str, ip: std::net::IpAddr) {
    use crate::nfnetlink::{attributes, NFGENMSG_LEN, NLMSG_HDRLEN};
    let request = get_address_request(9, table, set, ip);
    let len = u32::from_ne_bytes(request[..4].try_into().expect("a header")) as usize;
    assert_eq!(len, request.len(), "the header gives the message's length");
    let attrs = attributes(&request[NLMSG_HDRLEN + NFGENMSG_LEN..]).expect("our request parses");
    let text = |v: &[u8]| v.strip_suffix(&[0]).map(|s| s.to_vec());
    assert_eq!(text(attrs[0].1), Some(table.as_bytes().to_vec()), "the table");
    assert_eq!(text(attrs[1].1), Some(set.as_bytes().to_vec()), "the set");
    let elements = attributes(attrs[2].1).expect("the element list parses");
    let element = attributes(elements[0].1).expect("the element parses");
    let key = attributes(element[0].1).expect("the key parses");
    let octets = match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    assert_eq!(key[0].1, &octets[..], "the key is the address");
}
