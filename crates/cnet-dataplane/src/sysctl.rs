//! sysctls of the calling process's network namespace (`/proc/sys/net`
//! follows the opener's namespace).

use std::path::Path;

use crate::{DataplaneError, Result};

/// Writes `value` to `/proc/sys/<key>` (key with slashes, e.g. `net/ipv4/ip_forward`).
pub fn set(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value).map_err(|e| DataplaneError::Failed {
        program: "sysctl".into(),
        stderr: format!("cannot write {}: {e}", path.display()),
    })
}

pub fn get(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key)).ok().map(|s| s.trim().to_string())
}
