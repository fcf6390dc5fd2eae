//! `GET /cluster`: this host's membership of a multi-host cluster (Linux
//! extension; HCN has no such call).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A host of the cluster, as registered in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterHost {
    #[serde(rename = "ID")]
    pub id: Uuid,
    pub hostname: String,
    /// Its underlay address: the far end of tunnels to it.
    pub provider_address: String,
    pub vtep_mac: String,
}

/// A block of an overlay network's subnet and the host that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterBlock {
    pub network: Uuid,
    pub block: String,
    pub host: Uuid,
}

/// This host's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterStatus {
    /// Whether cnetd runs with `--etcd` (false: a single host).
    pub enabled: bool,
    /// `Joining`, `Healthy` or `Degraded`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
    /// Why the cluster is degraded, and what to do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// This host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ClusterHost>,
    /// The etcd lease this host's registration lives under, and its TTL in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<i64>,
    /// Every live host (this one included).
    #[serde(default)]
    pub hosts: Vec<ClusterHost>,
    #[serde(default)]
    pub blocks: Vec<ClusterBlock>,
    /// The etcd revision the view is at.
    #[serde(default)]
    pub revision: i64,
}
