//! How cnetd sets up glibc's allocator, before anything else runs.
//!
//! Two settings keep cnetd's heap flat under load:
//! - **At most two arenas** (`M_ARENA_MAX`). glibc gives every thread that
//!   allocates an arena of its own (up to eight per core) and keeps what is
//!   freed in it; with the runtime's blocking threads coming and going,
//!   cnetd held 64 MiB at 10,000 endpoints.
//! - **No per-thread cache** (`glibc.malloc.tcache_count=0`). A thread's
//!   cache keeps up to seven freed chunks of each size below 1 KiB, and
//!   what one thread allocates another often frees (a request is parsed on a
//!   runtime worker and handled on a blocking thread), so the caches of the
//!   long-lived threads fill for many minutes: the soak's bytes in use grew
//!   by 0.5 MB in five minutes, all of it free chunks in those caches. The
//!   cache is a tunable, read only when a program starts, so cnetd starts
//!   itself once more with it set.
//!
//! Invariants:
//! - A `GLIBC_TUNABLES` that already names `tcache_count` is the operator's
//!   choice and is kept as it is.
//! - The restart is one `exec` of the same program with the same arguments
//!   and PID; when it fails, cnetd goes on with the cache (and says so).
//! - There is at most one restart: the restarted process knows itself by
//!   `CNET_GLIBC_TUNABLES_BEFORE`, not by the tunable (glibc erases
//!   `GLIBC_TUNABLES` in secure-execution mode), and hands the helpers it
//!   runs the environment as it was.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

const TUNABLES: &str = "GLIBC_TUNABLES";
const NO_TCACHE: &str = "glibc.malloc.tcache_count=0";

/// The `GLIBC_TUNABLES` cnetd should run with, if it differs from `current`.
pub fn wanted_tunables(current: Option<&str>) -> Option<String> {
    match current {
        Some(t) if t.split(':').any(|kv| kv.starts_with("glibc.malloc.tcache_count=")) => None,
        Some(t) if !t.is_empty() => Some(format!("{t}:{NO_TCACHE}")),
        _ => Some(NO_TCACHE.to_string()),
    }
}

/// Set in the restarted cnetd: what `GLIBC_TUNABLES` was before (`-` for
/// unset), given back to the environment so that the helpers cnetd runs
/// (`ip`, `nft`) start with the operator's settings, not cnetd's.
const BEFORE: &str = "CNET_GLIBC_TUNABLES_BEFORE";

/// Sets up the allocator. Call first thing in `main`, while the process has
/// one thread: it may replace the process with itself (same PID).
pub fn tune() {
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    if let Some(before) = std::env::var_os(BEFORE) {
        // `exec /proc/self/exe` named the process "exe": give it its name
        // back, for `ps`, `pgrep cnetd` and `top`.
        name_process();
        // The environment is changed while the process still has one thread.
        std::env::remove_var(BEFORE);
        match before.to_str() {
            Some("-") => std::env::remove_var(TUNABLES),
            _ => std::env::set_var(TUNABLES, before),
        }
        return;
    }
    let current = std::env::var(TUNABLES).ok();
    let Some(wanted) = wanted_tunables(current.as_deref()) else { return };
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| OsString::from("cnetd"));
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(program)
        .args(args)
        .env(TUNABLES, wanted)
        .env(BEFORE, current.as_deref().unwrap_or("-"))
        .exec();
    // Logging is not set up yet.
    eprintln!("cnetd: could not restart itself without glibc's thread cache ({err}); going on with it");
}

/// Sets the process's name (its `comm`) to the file name of `argv[0]`.
fn name_process() {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&arg0).file_name().unwrap_or(arg0.as_os_str()).as_encoded_bytes();
    // The kernel keeps 15 bytes and a NUL.
    let Ok(name) = std::ffi::CString::new(&name[..name.len().min(15)]) else { return };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_cache_is_turned_off_unless_the_operator_chose() {
        assert_eq!(wanted_tunables(None).as_deref(), Some(NO_TCACHE));
        assert_eq!(wanted_tunables(Some("")).as_deref(), Some(NO_TCACHE));
        assert_eq!(
            wanted_tunables(Some("glibc.malloc.mmap_threshold=65536")).as_deref(),
            Some("glibc.malloc.mmap_threshold=65536:glibc.malloc.tcache_count=0")
        );
        assert_eq!(wanted_tunables(Some("glibc.malloc.tcache_count=7")), None);
        assert_eq!(wanted_tunables(Some("glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0")), None);
    }
}
