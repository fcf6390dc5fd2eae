//! Network namespaces: create named ones, adopt paths, run code inside.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::cmd::Cmd;
use crate::{DataplaneError, Result};

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

pub fn path_of(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

/// Whether `path` is a network namespace file.
pub fn exists(path: &str) -> bool {
    // A bind-mounted netns file is on nsfs; a leftover plain file is not.
    let Ok(f) = File::open(path) else { return false };
    // SAFETY: fstatfs on a valid open fd with a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
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
    Cmd::new("ip").args(["link", "set", "lo", "up"]).netns(Some(&path)).run()?;
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
