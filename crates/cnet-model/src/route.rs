//! `HostComputeRoute` (`/routes`): routes that several endpoints of one
//! network share, as HCN has them. Each listed endpoint gets every route,
//! as if it had them as `SDNRoute` policies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::endpoint::SdnRoute;

/// A route object: `Routes` for the `HostComputeEndpoints` of `HostComputeNetwork`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HostComputeRoute {
    /// Assigned by cnetd when absent.
    #[serde(rename = "ID", default)]
    pub id: Uuid,
    /// The network, by ID or name.
    pub host_compute_network: String,
    /// The endpoints, by ID or name; each must be on the network.
    #[serde(default)]
    pub host_compute_endpoints: Vec<String>,
    /// The routes, with `SDNRoute`'s settings.
    pub routes: Vec<SdnRoute>,
    #[serde(default)]
    pub schema_version: crate::SchemaVersion,
}
