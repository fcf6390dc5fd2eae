//! Stable error codes (the HCN names) and the error answer of the API.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// A stable error code. Clients match on these; the message is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ErrorCode {
    NetworkNotFound,
    EndpointNotFound,
    NamespaceNotFound,
    /// No `HostComputeRoute` of that ID.
    RouteNotFound,
    NetworkAlreadyExists,
    EndpointAlreadyExists,
    NamespaceAlreadyExists,
    EndpointAlreadyAttached,
    EndpointNotAttached,
    PortAlreadyExists,
    MappingNotSupported,
    InvalidJson,
    InvalidParameter,
    InvalidIp,
    InvalidSubnet,
    AddrInvalidOrReserved,
    AddressPoolExhausted,
    EntityHasReferences,
    InvalidInternalPort,
    OperationInProgress,
    RequestTooLarge,
    DegradedOperation,
    ManagerStopped,
    /// The LAN's DHCP server did not grant an address.
    DhcpFailed,
    /// The disk that holds cnetd's store is full: nothing was applied.
    InsufficientStorage,
    InternalError,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            NetworkNotFound | EndpointNotFound | NamespaceNotFound | RouteNotFound => 404,
            NetworkAlreadyExists
            | EndpointAlreadyExists
            | NamespaceAlreadyExists
            | EndpointAlreadyAttached
            | EndpointNotAttached
            | PortAlreadyExists
            | AddressPoolExhausted
            | EntityHasReferences
            | OperationInProgress => 409,
            AddrInvalidOrReserved
            | InvalidJson
            | InvalidParameter
            | InvalidIp
            | InvalidSubnet
            | InvalidInternalPort => 400,
            // The request is well-formed, and names what this build does not do.
            MappingNotSupported => 422,
            RequestTooLarge => 413,
            ManagerStopped => 503,
            DhcpFailed => 502,
            InsufficientStorage => 507,
            DegradedOperation | InternalError => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The body of every error answer: `{"Success": false, "ErrorCode": ..., "Error": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[serde(rename_all = "PascalCase")]
#[error("{error_code}: {error}")]
pub struct ApiError {
    pub success: bool,
    pub error_code: ErrorCode,
    /// What went wrong and what to do about it.
    pub error: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { success: false, error_code: code, error: message.into() }
    }
}

/// Shorthand constructors, one per code used often.
macro_rules! ctor {
    ($($fn:ident => $code:ident),* $(,)?) => {
        impl ApiError {
            $(pub fn $fn(message: impl Into<String>) -> Self { ApiError::new(ErrorCode::$code, message) })*
        }
    };
}
ctor! {
    invalid_param => InvalidParameter,
    invalid_json => InvalidJson,
    invalid_subnet => InvalidSubnet,
    invalid_ip => InvalidIp,
    unsupported => MappingNotSupported,
    internal => InternalError,
    in_progress => OperationInProgress,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
