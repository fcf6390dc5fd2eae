//! `HostComputeNamespace`: a compartment (a Linux network namespace).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::names::ObjectName;
use crate::SchemaVersion;

/// A resource in a namespace: `{Type: Endpoint, Data: {Id}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NamespaceResource {
    pub r#type: String,
    pub data: ResourceData,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceData {
    pub id: Uuid,
}

/// `HostComputeNamespace`. Created by cnetd (with `Name`: a named netns) or
/// adopted (with `NetnsPath`: a runtime's netns).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Namespace {
    #[serde(rename = "ID", default)]
    pub id: Uuid,
    /// The netns name when cnetd creates it (`/run/netns/<Name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ObjectName>,
    /// HCN type: `HostDefault` (default), `Host`, `Guest`, `GuestDefault`.
    #[serde(default = "host_default")]
    #[schema(value_type = NamespaceType)]
    pub r#type: String,
    /// The netns file. In a request: adopt this existing namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<String>,
    /// Linux extension, `Guest` namespaces only: how cnet makes the VM NICs
    /// of this VM for its VMM (who may open them, multi-queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_nic: Option<VmNicOptions>,
    /// Read-only: the endpoints attached.
    #[serde(default)]
    pub resources: Vec<NamespaceResource>,
    /// Read-only: whether cnetd created the netns (and deletes it with the object).
    #[serde(default)]
    pub managed: bool,
    #[serde(default)]
    pub schema_version: SchemaVersion,
}

/// How the TAPs (and macvtaps) of a `Guest` namespace's endpoints are made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct VmNicOptions {
    /// The uid that may open the device (the VMM's user); only root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
    /// The gid whose members may open the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// TAPs with `IFF_MULTI_QUEUE`, for a VMM that opens one queue per vCPU
    /// (QEMU `queues=N`); a VMM must open the device with the same choice.
    #[serde(default)]
    pub multi_queue: bool,
}

fn host_default() -> String {
    "HostDefault".into()
}

impl Namespace {
    pub fn display_name(&self) -> String {
        crate::names::display_name(self.name.as_ref(), &self.id)
    }
}

/// The namespace types of HCN (for the API's schema; the field is checked as text).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum NamespaceType {
    HostDefault,
    Host,
    Guest,
    GuestDefault,
}
