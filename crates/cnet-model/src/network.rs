//! `HostComputeNetwork` and its parts.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::names::{stable_hash, ObjectName};
use crate::net::MacAddr;
use crate::SchemaVersion;

/// The kind of network, which decides where its endpoints go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NetworkType {
    /// A private bridge behind NAT: egress masqueraded, ports published.
    #[default]
    Nat,
    /// A bridge the host is on; no NAT, no egress.
    Internal,
    /// A bridge without a host address: endpoints reach only each other.
    Private,
    Transparent,
    L2Bridge,
    L2Tunnel,
    Overlay,
    Ics,
}

/// The network types as the API's schema names them: those this build
/// creates (HCN's ICS is answered `MappingNotSupported`), from
/// [`NetworkType::ALL`] (the field itself is read by its parser).
pub struct NetworkTypeName;

impl utoipa::PartialSchema for NetworkTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let names = NetworkType::ALL.iter().filter(|t| **t != NetworkType::Ics).map(|t| t.as_str());
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some("The network types this build creates (HCN's ICS is answered `MappingNotSupported`)."))
            .into()
    }
}
impl utoipa::ToSchema for NetworkTypeName {}

/// The IPAM types, as the API's schema names them.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum IpamType {
    Static,
    Dhcp,
}

impl NetworkType {
    pub const ALL: [NetworkType; 8] = [
        NetworkType::Nat,
        NetworkType::Internal,
        NetworkType::Private,
        NetworkType::Transparent,
        NetworkType::L2Bridge,
        NetworkType::L2Tunnel,
        NetworkType::Overlay,
        NetworkType::Ics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Nat => "NAT",
            NetworkType::Internal => "Internal",
            NetworkType::Private => "Private",
            NetworkType::Transparent => "Transparent",
            NetworkType::L2Bridge => "L2Bridge",
            NetworkType::L2Tunnel => "L2Tunnel",
            NetworkType::Overlay => "Overlay",
            NetworkType::Ics => "ICS",
        }
    }
    /// Whether the network's subnets have a gateway: an address endpoints
    /// route through, reserved from allocation. On NAT and Internal networks
    /// it is the host's address on the bridge; on the physical types it is
    /// the LAN's router; on Overlay networks, every host's gateway bridge
    /// (the same address and DR MAC on each).
    pub fn has_gateway(self) -> bool {
        matches!(
            self,
            NetworkType::Nat
                | NetworkType::Internal
                | NetworkType::Transparent
                | NetworkType::L2Bridge
                | NetworkType::L2Tunnel
                | NetworkType::Overlay
        )
    }
    /// Whether the network is on the physical network through an uplink
    /// (`NetAdapterName`).
    pub fn needs_uplink(self) -> bool {
        matches!(self, NetworkType::Transparent | NetworkType::L2Bridge | NetworkType::L2Tunnel)
    }
    /// Whether endpoints of this type may publish ports on the host's
    /// addresses: the host routes to them (NAT, L2Bridge, L2Tunnel). A
    /// Transparent endpoint is reached at its own LAN address instead.
    pub fn publishes_ports(self) -> bool {
        matches!(self, NetworkType::Nat | NetworkType::L2Bridge | NetworkType::L2Tunnel)
    }
}

impl FromStr for NetworkType {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        NetworkType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                ApiError::invalid_param(format!(
                    "network type {s:?} is unknown: use one of NAT, Internal, Private, Transparent, L2Bridge, L2Tunnel, Overlay, ICS"
                ))
            })
    }
}
impl fmt::Display for NetworkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl Serialize for NetworkType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for NetworkType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: ApiError| serde::de::Error::custom(e))
    }
}

/// A route: `DestinationPrefix` via `NextHop` (on-link when absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::net::IpAddress>, example = "10.79.0.1")]
    pub next_hop: Option<IpAddr>,
    #[schema(value_type = crate::net::IpPrefix, example = "0.0.0.0/0")]
    pub destination_prefix: IpNet,
    #[serde(default)]
    pub metric: u32,
}

/// A subnet prefix; a malformed one answers `InvalidSubnet` (the code
/// leads the message, which the API keeps as the error code).
fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "InvalidSubnet: subnet {s:?} is not an address prefix: write it as 10.79.0.0/24 or fd00:79::/64"
        ))
    })
}

/// One subnet of a network's IPAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Subnet {
    #[schema(value_type = crate::net::IpPrefix, example = "10.79.0.0/24")]
    #[serde(deserialize_with = "prefix")]
    pub ip_address_prefix: IpNet,
    /// A route to `0.0.0.0/0` (or `::/0`) names the gateway in `NextHop`.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Subnet policies: `VLAN` (the subnet's endpoints are access ports of
    /// that VLAN on the uplink).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<SubnetPolicy>,
    /// Sub-blocks of the subnet that endpoint addresses come from (all of
    /// it when empty): on a LAN's subnet, the part the LAN leaves to
    /// containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_subnets: Vec<IpSubnet>,
}

/// `{"IpAddressPrefix": "192.168.1.64/26"}`: a block of a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpSubnet {
    #[schema(value_type = crate::net::IpPrefix, example = "192.168.1.64/26")]
    #[serde(deserialize_with = "prefix")]
    pub ip_address_prefix: IpNet,
    #[serde(default)]
    pub flags: u32,
}

/// `{"IsolationId": N}`: a VLAN ID (1 to 4094).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Isolation {
    pub isolation_id: u32,
}

impl Isolation {
    /// The VLAN ID, or what to fix.
    pub fn vlan_id(&self) -> Result<u16, ApiError> {
        match self.isolation_id {
            id @ 1..=4094 => Ok(id as u16),
            id => Err(ApiError::invalid_param(format!("VLAN IsolationId {id} is out of range: use 1 to 4094"))),
        }
    }
}

/// A subnet policy `{"Type": ..., "Settings": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "Type", content = "Settings")]
pub enum SubnetPolicy {
    #[serde(rename = "VLAN")]
    Vlan(Isolation),
    /// An Overlay subnet's virtual subnet ID: its VXLAN VNI (1 to 16777215).
    #[serde(rename = "VSID")]
    Vsid(Isolation),
}

/// `NetAdapterName` settings: the host interface a physical network uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetAdapterName {
    #[serde(rename = "NetworkAdapterName")]
    pub network_adapter_name: String,
}

/// `VxlanPort` settings: an Overlay network's VXLAN UDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct VxlanPort {
    pub port: u16,
}

/// `DrMacAddress` settings: the gateway MAC every host of an Overlay network uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DrMacAddress {
    #[schema(value_type = crate::net::MacAddress, example = "0a:58:0a:ff:00:01")]
    pub address: MacAddr,
}

/// `RemoteSubnetRoute` settings: a block of an Overlay network that another
/// host holds, as `GET /networks/{id}` shows it (cnet programs these from
/// the cluster; a request never gives them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RemoteSubnetRoute {
    #[schema(value_type = crate::net::IpPrefix, example = "10.240.1.64/26")]
    pub destination_prefix: IpNet,
    /// The network's VNI.
    pub isolation_id: u32,
    /// The holding host's underlay address (the tunnel's far end).
    #[schema(value_type = crate::net::IpAddress, example = "192.168.1.12")]
    pub provider_address: IpAddr,
    /// The holding host's VTEP MAC.
    #[schema(value_type = crate::net::MacAddress, example = "02:9e:7c:1b:5d:4a")]
    pub distributed_router_mac_address: MacAddr,
}

/// A network policy `{"Type": ..., "Settings": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "Type", content = "Settings")]
pub enum NetworkPolicy {
    NetAdapterName(NetAdapterName),
    VxlanPort(VxlanPort),
    DrMacAddress(DrMacAddress),
    RemoteSubnetRoute(RemoteSubnetRoute),
    /// Name resolution by cnetd's DNS server on the network (default: on
    /// for NAT and Internal networks).
    #[serde(rename = "AutomaticDNS")]
    AutomaticDns(AutomaticDns),
    /// A named IP set that ACLs of the network's endpoints reference.
    SetPolicy(crate::sets::SetPolicy),
    /// An ACL for every endpoint of the network, merged with each
    /// endpoint's own by priority.
    #[serde(rename = "NetworkACL")]
    NetworkAcl(crate::acl::AclPolicy),
}

/// `AutomaticDNS` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AutomaticDns {
    pub enable: bool,
}

impl NetworkPolicy {
    /// Policy types this build understands.
    pub const SUPPORTED: [&'static str; 7] =
        ["NetAdapterName", "VxlanPort", "DrMacAddress", "RemoteSubnetRoute", "AutomaticDNS", "SetPolicy", "NetworkACL"];
    /// Types a network may hold any number of, changed at run time by modify requests.
    pub const REPEATED: [&'static str; 2] = ["SetPolicy", "NetworkACL"];
}

impl Subnet {
    /// The VLAN of the subnet's endpoints, from its `VLAN` policy.
    pub fn vlan(&self) -> Option<Isolation> {
        self.policies.iter().find_map(|p| match p {
            SubnetPolicy::Vlan(v) => Some(*v),
            _ => None,
        })
    }
    /// The Overlay VNI of the subnet, from its `VSID` policy.
    pub fn vsid(&self) -> Option<u32> {
        self.policies.iter().find_map(|p| match p {
            SubnetPolicy::Vsid(v) => Some(v.isolation_id),
            _ => None,
        })
    }
    /// The gateway: `NextHop` of the default route, else the first address.
    pub fn gateway(&self) -> IpAddr {
        self.routes
            .iter()
            .find(|r| r.destination_prefix.prefix_len() == 0)
            .and_then(|r| r.next_hop)
            .unwrap_or_else(|| crate::alloc::nth_host(&self.ip_address_prefix, 1))
    }
}

/// `{Type: Static, Subnets: [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Ipam {
    /// `Static` (cnetd allocates from the subnets) or `Dhcp` (cnetd leases
    /// each endpoint's address from the LAN's DHCP server; Transparent only).
    #[serde(default = "static_ipam")]
    #[schema(value_type = IpamType)]
    pub r#type: String,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
}

fn static_ipam() -> String {
    "Static".into()
}

/// DNS settings handed to endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::net::IpAddress>)]
    pub server_list: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A name a network's DNS server answers, with its addresses (`GET /networks/{id}/names`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DnsName {
    pub name: String,
    #[schema(value_type = Vec<crate::net::IpAddress>)]
    pub addresses: Vec<IpAddr>,
}

/// A range of MAC addresses endpoints take theirs from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MacRange {
    pub start_mac_address: MacAddr,
    pub end_mac_address: MacAddr,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MacPool {
    #[serde(default)]
    pub ranges: Vec<MacRange>,
}

/// `HostComputeNetwork`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Network {
    /// Assigned by cnetd when absent.
    #[serde(rename = "ID", default)]
    pub id: Uuid,
    pub name: ObjectName,
    #[serde(default)]
    #[schema(value_type = NetworkTypeName, example = "NAT")]
    pub r#type: NetworkType,
    #[serde(default)]
    pub ipams: Vec<Ipam>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_pool: Option<MacPool>,
    #[serde(default)]
    pub flags: u32,
    /// Network policies: `NetAdapterName` (the uplink of a physical network).
    #[serde(default)]
    pub policies: Vec<NetworkPolicy>,
    #[serde(default)]
    pub schema_version: SchemaVersion,
    /// Linux extension: MTU of the bridge and of new endpoints (default 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 576, maximum = 65535)]
    pub mtu: Option<u32>,
    /// Linux extension, read-only: the bridge that is this network's switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_name: Option<String>,
    /// Linux extension: delete the network when its last endpoint is
    /// deleted. The CNI plugin and `cnet-netavark` set it on the networks
    /// they create from a runtime's configuration, which the runtime may
    /// remove without telling cnet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_delete: bool,
    /// Linux extension: labels for the client's own use (at most 64; keys of
    /// 1 to 253 bytes, values up to 4096), e.g. the runtime's network ID.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Network {
    /// All subnets of all IPAMs.
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.ipams.iter().flat_map(|i| i.subnets.iter())
    }
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(1500)
    }
    /// The uplink named by the `NetAdapterName` policy.
    pub fn adapter_name(&self) -> Option<&str> {
        self.policies.iter().find_map(|p| match p {
            NetworkPolicy::NetAdapterName(n) => Some(n.network_adapter_name.as_str()),
            _ => None,
        })
    }
    /// The `VxlanPort` policy's port (an Overlay network's; 4789 by default).
    pub fn vxlan_port(&self) -> Option<u16> {
        self.policies.iter().find_map(|p| match p {
            NetworkPolicy::VxlanPort(v) => Some(v.port),
            _ => None,
        })
    }
    /// The `AutomaticDNS` policy's choice.
    pub fn automatic_dns(&self) -> Option<bool> {
        self.policies.iter().find_map(|p| match p {
            NetworkPolicy::AutomaticDns(d) => Some(d.enable),
            _ => None,
        })
    }
    /// The `DrMacAddress` policy's MAC.
    pub fn dr_mac(&self) -> Option<MacAddr> {
        self.policies.iter().find_map(|p| match p {
            NetworkPolicy::DrMacAddress(d) => Some(d.address),
            _ => None,
        })
    }
    /// The `SetPolicy` policies.
    pub fn sets(&self) -> impl Iterator<Item = &crate::sets::SetPolicy> {
        self.policies.iter().filter_map(|p| match p {
            NetworkPolicy::SetPolicy(s) => Some(s),
            _ => None,
        })
    }
    /// The `NetworkACL` policies.
    pub fn network_acls(&self) -> impl Iterator<Item = &crate::acl::AclPolicy> {
        self.policies.iter().filter_map(|p| match p {
            NetworkPolicy::NetworkAcl(a) => Some(a),
            _ => None,
        })
    }
    /// The Overlay network's VNI: its subnets' `VSID`.
    pub fn vni(&self) -> Option<u32> {
        self.subnets().find_map(|s| s.vsid())
    }
    /// Whether the (first) IPAM is `Dhcp`.
    pub fn is_dhcp(&self) -> bool {
        self.ipams.first().is_some_and(|i| i.r#type.eq_ignore_ascii_case("Dhcp"))
    }
    /// The bridge's name, derived from the ID: `cnb` + 10 hex digits.
    pub fn derived_bridge_name(&self) -> String {
        format!("cnb{:010x}", stable_hash(self.id.as_bytes()) & 0xff_ffff_ffff)
    }
    /// The bridge's MAC, fixed so that endpoints never see the gateway move.
    pub fn bridge_mac(&self) -> MacAddr {
        bridge_mac_of(&self.id)
    }
}

/// The MAC of the bridge of network `id`: fixed, so that endpoints never
/// see the gateway move.
pub fn bridge_mac_of(id: &Uuid) -> MacAddr {
    let h = stable_hash(id.as_bytes()).to_be_bytes();
    MacAddr([0x0a, 0x58, 0xfe, h[0], h[1], h[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schemas_type_names_are_the_types_this_build_creates() {
        let schema = serde_json::to_value(<NetworkTypeName as utoipa::PartialSchema>::schema()).unwrap();
        let named: Vec<&str> = schema["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let built: Vec<&str> =
            NetworkType::ALL.iter().filter(|t| **t != NetworkType::Ics).map(|t| t.as_str()).collect();
        assert_eq!(named, built);
        for name in named {
            assert_eq!(name.parse::<NetworkType>().unwrap().as_str(), name);
        }
    }
}
