//! Names that the kernel or the filesystem will see, checked once at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A Linux interface name: 1–15 bytes, no `/`, no whitespace, not `.`/`..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "eth0", pattern = "^(?!\\.{1,2}$)[A-Za-z0-9_.@+=-]{1,15}$")]
pub struct IfName(String);

impl IfName {
    pub fn new(name: &str) -> Result<Self, ApiError> {
        let bad = name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(ApiError::invalid_param(format!(
                "interface name {name:?} is invalid: use 1 to 15 bytes without '/', ':' or spaces"
            )));
        }
        Ok(IfName(name.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = ApiError;
    fn try_from(s: String) -> Result<Self, ApiError> {
        IfName::new(&s)
    }
}
impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}
impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an object (network, endpoint, namespace): 1–64 characters of
/// `A-Z a-z 0-9 _ . -`, not starting with `.` or `-` — safe as a file name
/// under `/run/netns`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "nat1", pattern = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
pub struct ObjectName(String);

impl ObjectName {
    pub fn new(name: &str) -> Result<Self, ApiError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with(['.', '-'])
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(ApiError::invalid_param(format!(
                "name {name:?} is invalid: use 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-', not starting with '.' or '-'"
            )));
        }
        Ok(ObjectName(name.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ObjectName {
    type Error = ApiError;
    fn try_from(s: String) -> Result<Self, ApiError> {
        ObjectName::new(&s)
    }
}
impl From<ObjectName> for String {
    fn from(n: ObjectName) -> String {
        n.0
    }
}
impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stable 64-bit FNV-1a hash, used to derive kernel names from object IDs.
pub fn stable_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// An object's name in messages: its name, or its ID when it has none.
pub fn display_name(name: Option<&ObjectName>, id: &uuid::Uuid) -> String {
    name.map(|n| n.to_string()).unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_longer_than_15_bytes_are_refused() {
        assert!(IfName::new("eth0").is_ok());
        assert!(IfName::new("abcdefghijklmno").is_ok());
        assert!(IfName::new("abcdefghijklmnop").is_err());
        assert!(IfName::new("a/b").is_err());
        assert!(IfName::new("").is_err());
    }

    #[test]
    fn object_names_are_safe_file_names() {
        assert!(ObjectName::new("c1").is_ok());
        assert!(ObjectName::new("../etc").is_err());
        assert!(ObjectName::new("-x").is_err());
        assert!(ObjectName::new(&"a".repeat(65)).is_err());
    }
}
