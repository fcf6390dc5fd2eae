//! sysctls of the calling thread's network namespace (`/proc/sys/net`
//! follows the opening thread's namespace).
//!
//! A write that fails because the key is missing (a link that is gone) is an
//! error of kind [`crate::ErrorKind::NotFound`].

use std::path::Path;

use crate::{DataplaneError, Result};

/// Writes `value` to `/proc/sys/<key>` (key with slashes, e.g. `net/ipv4/ip_forward`).
pub fn set(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value).map_err(|source| DataplaneError::Sysctl { path: path.display().to_string(), source })
}

/// Reads `/proc/sys/<key>`, trimmed; `None` when it cannot be read.
pub fn get(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key)).ok().map(|s| s.trim().to_string())
}
