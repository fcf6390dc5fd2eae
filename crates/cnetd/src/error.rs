//! The service's error: a stable code (the HCN error names) and a message
//! that says what to fix. Only [`crate::api`] turns it into the HCN error
//! body; kernel errors are classified here, by kind, in one place.

use cnet_dataplane::{DataplaneError, ErrorKind};
use cnet_model::{ApiError, ErrorCode};

/// What went wrong in a service call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MappingNotSupported, message)
    }
    pub fn in_progress(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::OperationInProgress, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }
    pub fn not_found(code: ErrorCode, what: &str, key: &str) -> Self {
        Self::new(code, format!("{what} {key:?} does not exist: list them with `cnet {} list`", what.to_lowercase()))
    }

    /// A kernel failure while doing `what`, classified by its kind.
    pub fn kernel(what: &str, e: DataplaneError) -> Self {
        match e.kind() {
            ErrorKind::BridgeFull => Self::new(
                ErrorCode::AddressPoolExhausted,
                format!("{what}: the network's Linux bridge is full (a bridge takes at most 1024 ports): put more endpoints on another network"),
            ),
            ErrorKind::Exists => Self::new(
                ErrorCode::EndpointAlreadyAttached,
                format!("{what}: the interface already exists in the namespace ({e}): pick another InterfaceName"),
            ),
            _ => Self::new(ErrorCode::DegradedOperation, format!("{what}: the kernel refused it: {e}")),
        }
    }

    /// The store refused a commit: nothing was applied.
    pub fn store(e: cnet_store::StoreError) -> Self {
        if e.is_full() {
            return Self::new(ErrorCode::InsufficientStorage, e.to_string());
        }
        Self::internal(format!("the store refused the change, nothing was applied: {e}"))
    }
}

/// The model's validation errors keep their code.
impl From<ApiError> for ServiceError {
    fn from(e: ApiError) -> Self {
        ServiceError { code: e.error_code, message: e.error }
    }
}
