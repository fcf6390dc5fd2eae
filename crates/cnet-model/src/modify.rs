//! Modify requests: `{ResourceType, RequestType, Settings}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum RequestType {
    Add,
    Remove,
    Update,
    Refresh,
    Reset,
}

/// A change to an existing object.
///
/// - namespace: `ResourceType: Endpoint`, `Add`/`Remove`, `Settings: {EndpointId}`
/// - endpoint: `ResourceType: Policy`, `Add`/`Remove`/`Update`, `Settings: {Policies: [...]}`
/// - network: `ResourceType: Subnet`, `Add`/`Remove`, `Settings: {IpAddressPrefix, Routes}`;
///   `ResourceType: Dns`, `Update`, `Settings: Dns`; `ResourceType: Policy`,
///   `Add`/`Remove`/`Update`, `Settings: {Policies: [...]}` (`SetPolicy` and
///   `NetworkACL`; Remove and Update name them by `Id`)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ModifyRequest {
    pub resource_type: String,
    pub request_type: RequestType,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
}
