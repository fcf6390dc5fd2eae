//! An endpoint's traffic statistics (`GET /endpoints/{id}/stats`).
//!
//! The names of the first fields are those of HNS's endpoint statistics;
//! "received" and "sent" are the endpoint's own view (what reached it, what
//! it sent), whichever side of its adapter they were counted on.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Packets cnet dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DropCounts {
    /// By the endpoint's `ACL` policies (Block rules).
    pub acl: u64,
    /// Sent from a MAC or an address that is not the endpoint's (anti-spoofing).
    pub spoofing: u64,
    /// By its `QOS` and bandwidth caps (queues full).
    pub qos: u64,
}

/// An endpoint's counters since its adapter was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointStats {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: uuid::Uuid,
    pub bytes_received: u64,
    pub packets_received: u64,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    /// Dropped on their way to the endpoint by its adapter.
    pub dropped_packets_incoming: u64,
    /// Dropped on their way from the endpoint by its adapter.
    pub dropped_packets_outgoing: u64,
    /// Dropped by cnet's policies, by reason.
    pub policy_drops: DropCounts,
}
