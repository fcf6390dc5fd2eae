//! Helpers of the privileged tests: each test runs in network namespaces of
//! its own, so tests run in parallel and never touch the host's.

use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `f` on a new thread in a new network namespace with loopback up.
/// When not root, prints `skipped: needs root` and returns `None`.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root");
        return None;
    }
    let worker = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET moves only this new thread,
        // which ends with `f`, into a namespace of its own.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        crate::netlink::Rtnl::open().and_then(|mut nl| nl.set_up("lo", true)).expect("setting lo up");
        f()
    });
    match worker.join() {
        Ok(v) => Some(v),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A named namespace with a name of its own, deleted when dropped.
pub struct NamedNetns {
    pub name: String,
    pub path: String,
}

impl NamedNetns {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("cnet-dp-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = crate::netns::create(&name).expect("creating a named namespace");
        NamedNetns { name, path }
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = crate::netns::delete(&self.name);
    }
}
