//! Findings: what diagnostics (`cnet diag`, CNI CHECK and STATUS) report.
//! Each is typed — the object it is about and what kind of problem it is —
//! so that callers decide from kinds, never from words in the message.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SubjectKind {
    Network,
    Endpoint,
    Namespace,
    /// A host link no object owns.
    Link,
    /// cnet's nftables table.
    Firewall,
    /// The host's own settings or other tables.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Subject {
    pub kind: SubjectKind,
    /// The object's ID, for networks, endpoints and namespaces.
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Its name (or ID), or the link's name.
    pub name: String,
}

impl Subject {
    pub fn new(kind: SubjectKind, id: Option<Uuid>, name: impl Into<String>) -> Self {
        Subject { kind, id, name: name.into() }
    }
    pub fn firewall() -> Self {
        Subject::new(SubjectKind::Firewall, None, "inet cnet")
    }
    pub fn host() -> Self {
        Subject::new(SubjectKind::Host, None, "host")
    }
}

/// The kind of problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum FindingKind {
    /// Something the store says exists is not in the kernel.
    Missing,
    /// It exists but differs (address, MAC, master, kind, rules).
    Mismatch,
    /// A link is down.
    Down,
    /// In the kernel, owned by no object.
    Orphan,
    /// A change is in flight.
    InProgress,
    /// A base chain of another table with `policy drop` also sees cnet's traffic.
    ForeignDrop,
    /// A bridge with more ports than the packet backlog: ARP answers get lost.
    Crowded,
    /// This host's cluster membership is degraded (etcd unreachable).
    ClusterDegraded,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Finding {
    pub subject: Subject,
    pub kind: FindingKind,
    /// In words, with what to do where there is something to do.
    pub message: String,
}

impl Finding {
    pub fn new(subject: Subject, kind: FindingKind, message: impl Into<String>) -> Self {
        Finding { subject, kind, message: message.into() }
    }
}
