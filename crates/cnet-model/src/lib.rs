//! The HCN v2 object model as cnet speaks it: networks, endpoints, namespaces,
//! their policies, the stable error codes, and address allocation.
//!
//! Invariants of this crate:
//! - It does no I/O: everything here is a pure function of its inputs, so the
//!   daemon's rules (what is valid, which address comes next) are unit-tested
//!   without root.
//! - Field names on the wire are the HCN v2 names (`ID`, `Ipams`,
//!   `IpConfigurations`, ...). Linux extensions are marked as such in the docs
//!   of their fields.
//! - A value that passed [`validate`] can be programmed into the kernel: names
//!   fit, subnets are canonical, addresses lie inside their subnet.

pub mod acl;
pub mod alloc;
pub mod cluster;
pub mod endpoint;
pub mod error;
pub mod findings;
pub mod modify;
pub mod names;
pub mod namespace;
pub mod nat;
pub mod net;
pub mod network;
pub mod proxy;
pub mod qos;
pub mod route;
pub mod sets;
pub mod stats;
pub mod tier;
pub mod validate;

pub use endpoint::{Endpoint, EndpointPolicy, EndpointState, IpConfig, PortMapping};
pub use error::{ApiError, ErrorCode};
pub use findings::{Finding, FindingKind, Subject, SubjectKind};
pub use modify::{ModifyRequest, RequestType};
pub use names::{IfName, ObjectName};
pub use namespace::{Namespace, NamespaceResource, VmNicOptions};
pub use net::{MacAddr, Protocol};
pub use network::{
    Dns, DnsName, IpSubnet, Ipam, Isolation, Network, NetworkPolicy, NetworkType, RemoteSubnetRoute, Route, Subnet,
    SubnetPolicy,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `SchemaVersion` of every object: cnet speaks HCN v2.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SchemaVersion {
    pub major: u32,
    pub minor: u32,
}

impl Default for SchemaVersion {
    fn default() -> Self {
        SchemaVersion { major: 2, minor: 0 }
    }
}
