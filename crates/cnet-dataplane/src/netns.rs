//! Network namespaces: create named ones, adopt paths, run code inside.
//!
//! Invariants:
//! - Named namespaces are files under [`NETNS_DIR`], made and removed by
//!   `ip netns add/delete` (the convention every other tool follows).
//! - The calling thread never enters another namespace: [`run_in`] does the
//!   work on a thread of its own.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::cmd::Cmd;
use crate::netlink::Rtnl;
use crate::{DataplaneError, Result};

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// The path of the named namespace `name`.
pub fn path_of(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

/// Whether `path` is a network namespace file.
pub fn exists(path: &str) -> bool {
    // A bind-mounted netns file is on nsfs; a leftover plain file is not.
    let Ok(f) = File::open(path) else { return false };
    // SAFETY: `statfs` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `f` is an open file for the whole call and `st` a valid,
    // exclusively borrowed out-struct of the type fstatfs(2) writes.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) };
    const NSFS_MAGIC: i64 = 0x6e736673;
    rc == 0 && st.f_type as i64 == NSFS_MAGIC
}

/// Creates the named namespace `/run/netns/<name>` with loopback up.
/// Succeeds if it already exists.
pub fn create(name: &str) -> Result<String> {
    let path = path_of(name);
    if !exists(&path) {
        if let Err(e) = Cmd::new("ip").args(["netns", "add", name]).run() {
            if !exists(&path) {
                return Err(e);
            }
        }
    }
    Rtnl::open_in(&path)?.set_up("lo", true)?;
    Ok(path)
}

/// Deletes the named namespace; succeeds when it is already gone.
pub fn delete(name: &str) -> Result<()> {
    let path = path_of(name);
    if !Path::new(&path).exists() {
        return Ok(());
    }
    match Cmd::new("ip").args(["netns", "delete", name]).run() {
        Ok(_) => Ok(()),
        Err(_) if !Path::new(&path).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `f` on a fresh thread that has entered the namespace at `path`.
/// The calling thread never changes namespace.
pub fn run_in<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = File::open(path).map_err(|source| DataplaneError::Netns { path: path.to_string(), source })?;
    let shown = path.to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid fd of a netns file.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(DataplaneError::Netns { path: shown, source: std::io::Error::last_os_error() });
        }
        Ok(f())
    })
    .join()
    .expect("netns worker thread panicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{in_private_netns, NamedNetns};
    use crate::ErrorKind;

    #[test]
    fn only_namespace_files_count_as_namespaces() {
        assert!(exists("/proc/thread-self/ns/net"));
        assert!(!exists("/proc/self/status"));
        assert!(!exists("/nonexistent/cnet"));
    }

    #[test]
    fn a_named_namespace_comes_with_loopback_up_and_goes_twice() {
        in_private_netns(|| {
            let ns = NamedNetns::new();
            assert!(exists(&ns.path));
            assert_eq!(create(&ns.name).unwrap(), ns.path);
            assert!(crate::link::link(Some(&ns.path), "lo").unwrap().unwrap().up);
            assert_eq!(run_in(&ns.path, || crate::link::links(None).unwrap().len()).unwrap(), 1);

            delete(&ns.name).unwrap();
            assert!(!exists(&ns.path));
            delete(&ns.name).unwrap();
            let e = Cmd::new("ip").args(["netns", "delete", &ns.name]).run().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert_eq!(run_in(&ns.path, || ()).unwrap_err().kind(), ErrorKind::NotFound);
        });
    }
}
