//! CNI errors: well-known codes and the error object.

use serde_json::json;

/// Well-known error codes of the CNI spec, and this plugin's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing attachments may be degraded.
    pub const DEGRADED: u32 = 51;
    /// cnetd refused the request; the message carries its error code.
    pub const DAEMON_REFUSED: u32 = 100;
    /// CHECK found the attachment differs from what cnetd holds.
    pub const CHECK_FAILED: u32 = 101;
    /// ADD for an attachment that already exists.
    pub const ALREADY_EXISTS: u32 = 102;
}

#[derive(Debug, Clone, PartialEq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    /// The error object of the spec.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)
    }
}

impl From<cnet_client::ClientError> for CniError {
    fn from(e: cnet_client::ClientError) -> Self {
        match &e {
            cnet_client::ClientError::Connect { .. } => CniError::new(code::TRY_AGAIN_LATER, e.to_string()),
            cnet_client::ClientError::Api(api) if api.error_code == cnet_model::ErrorCode::OperationInProgress => {
                CniError::new(code::TRY_AGAIN_LATER, format!("cnetd: {api}"))
            }
            cnet_client::ClientError::Api(api) => CniError::new(code::DAEMON_REFUSED, format!("cnetd: {api}")),
            _ => CniError::new(code::IO_FAILURE, e.to_string()),
        }
    }
}
