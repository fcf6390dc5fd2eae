//! `HostComputeEndpoint` and its policies.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::names::{stable_hash, IfName, ObjectName};
use crate::net::{MacAddr, Protocol};
use crate::network::{Dns, Route};
use crate::SchemaVersion;

/// One address of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpConfig {
    #[schema(value_type = crate::net::IpAddress, example = "10.79.0.2")]
    pub ip_address: IpAddr,
    /// The subnet's prefix length when absent.
    #[serde(default)]
    pub prefix_length: u8,
}

/// Lifecycle of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EndpointState {
    #[default]
    Created,
    Attached,
    Degraded,
}

/// `PortMapping` policy: inbound DNAT host:`ExternalPort` → endpoint:`InternalPort`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PortMapping {
    /// 6 (TCP), 17 (UDP), 132 (SCTP); names accepted.
    #[schema(schema_with = crate::net::protocol_schema)]
    pub protocol: Protocol,
    pub internal_port: u16,
    pub external_port: u16,
    /// Only packets to this host address are mapped; any host address when absent.
    #[serde(rename = "VIP", default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_as_none")]
    #[schema(value_type = Option<crate::net::IpAddress>)]
    pub vip: Option<IpAddr>,
    /// HCN NatFlags (LocalRoutedVip = 1, IPv6 = 2). cnet maps for the host
    /// itself and for both families whatever the flags say.
    #[serde(default)]
    pub flags: u32,
    /// Linux extension: map `PortCount` consecutive ports (a range); default 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub port_count: u16,
}

fn one() -> u16 {
    1
}
fn is_one(v: &u16) -> bool {
    *v == 1
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("VIP {v:?} is not an IP address"))),
    }
}

/// Largest range one port mapping may cover.
pub const MAX_PORT_COUNT: u16 = 4096;

impl PortMapping {
    /// `(external, internal)` pairs this mapping covers.
    pub fn ports(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (0..self.port_count).map(|i| (self.external_port + i, self.internal_port + i))
    }

    pub fn check(&self) -> Result<(), ApiError> {
        if self.internal_port == 0 {
            return Err(ApiError::new(
                crate::ErrorCode::InvalidInternalPort,
                "PortMapping InternalPort must be between 1 and 65535",
            ));
        }
        if self.external_port == 0 {
            return Err(ApiError::invalid_param("PortMapping ExternalPort must be between 1 and 65535"));
        }
        if self.port_count == 0 || self.port_count > MAX_PORT_COUNT {
            return Err(ApiError::invalid_param(format!(
                "PortMapping PortCount must be between 1 and {MAX_PORT_COUNT}"
            )));
        }
        let last_ext = self.external_port as u32 + self.port_count as u32 - 1;
        let last_int = self.internal_port as u32 + self.port_count as u32 - 1;
        if last_ext > 65535 || last_int > 65535 {
            return Err(ApiError::invalid_param(format!(
                "PortMapping range {}+{} runs past port 65535: lower the ports or PortCount",
                self.external_port, self.port_count
            )));
        }
        Ok(())
    }

    /// Whether two mappings claim the same host port: same protocol, ports
    /// overlapping, and the VIPs equal or either one "any".
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        let vip_overlap = match (self.vip, other.vip) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let (a0, a1) = (self.external_port as u32, self.external_port as u32 + self.port_count as u32);
        let (b0, b1) = (other.external_port as u32, other.external_port as u32 + other.port_count as u32);
        self.protocol == other.protocol && vip_overlap && a0 < b1 && b0 < a1
    }
}

/// `InterfaceParameters` policy: the endpoint's MTU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InterfaceParameters {
    pub mtu: u32,
}

/// An endpoint policy `{"Type": ..., "Settings": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "Type", content = "Settings")]
pub enum EndpointPolicy {
    PortMapping(PortMapping),
    InterfaceParameters(InterfaceParameters),
    /// The endpoint is an access port of that VLAN on the uplink.
    #[serde(rename = "VLAN")]
    Vlan(crate::network::Isolation),
    /// A remote endpoint's host: the tunnel end it lives behind.
    ProviderAddress(ProviderAddress),
    /// A firewall rule for the endpoint's traffic.
    #[serde(rename = "ACL")]
    Acl(crate::acl::AclPolicy),
    /// Source translation of the endpoint's outbound traffic.
    #[serde(rename = "OutBoundNAT")]
    OutboundNat(crate::nat::OutboundNatPolicy),
    /// Bytes an encapsulation outside the endpoint adds: its MTU is that
    /// much smaller.
    EncapOverhead(EncapOverhead),
    /// One more route of the endpoint's.
    #[serde(rename = "SDNRoute")]
    SdnRoute(SdnRoute),
    /// The endpoint's outbound TCP flows go to a proxy on the host.
    L4Proxy(crate::proxy::L4ProxyPolicy),
    /// The endpoint's egress cap (HCN).
    #[serde(rename = "QOS")]
    Qos(crate::qos::QosPolicy),
    /// Linux extension: caps both ways, as the CNI `bandwidth` capability.
    Bandwidth(crate::qos::BandwidthPolicy),
    /// One tier of ordered firewall rules (`Pass` goes on to the next tier).
    TierAcl(crate::tier::TierAclPolicy),
}

/// `SDNRoute` settings: a route of the endpoint's. `NeedEncap` sends the
/// prefix through the host (the network's gateway) instead of straight
/// over the local switch; without it, `NextHop` (on the endpoint's subnet)
/// or the link itself when empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SdnRoute {
    #[schema(example = "10.240.0.0/16")]
    pub destination_prefix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
    #[serde(default)]
    pub need_encap: bool,
    /// In HCN's schema; accepted and not used.
    #[serde(default)]
    pub automatic_endpoint_monitor: bool,
}

impl SdnRoute {
    /// The route it makes, given the gateways of the endpoint's network, or what to fix.
    pub fn route(&self, gateways: &[IpAddr]) -> Result<crate::network::Route, String> {
        let dst = crate::net::parse_prefix(self.destination_prefix.trim()).ok_or_else(|| {
            format!(
                "SDNRoute DestinationPrefix {:?} is not a prefix: write one such as 10.240.0.0/16",
                self.destination_prefix
            )
        })?;
        let v4 = dst.addr().is_ipv4();
        let next_hop = if self.need_encap {
            Some(gateways.iter().copied().find(|g| g.is_ipv4() == v4).ok_or_else(|| {
                format!("SDNRoute {dst} with NeedEncap goes through the network's gateway, and the network has none of that family")
            })?)
        } else {
            match self.next_hop.trim() {
                "" => None,
                s => {
                    let hop: IpAddr = s.parse().map_err(|_| format!("SDNRoute NextHop {s:?} is not an address"))?;
                    if hop.is_ipv4() != v4 {
                        return Err(format!("SDNRoute NextHop {hop} is not of the family of {dst}"));
                    }
                    Some(hop)
                }
            }
        };
        Ok(crate::network::Route { next_hop, destination_prefix: dst, metric: 0 })
    }
}

/// `EncapOverhead` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct EncapOverhead {
    pub overhead: u16,
}

impl EndpointPolicy {
    /// Policy types this build understands.
    pub const SUPPORTED: [&'static str; 12] = [
        "PortMapping",
        "InterfaceParameters",
        "VLAN",
        "ProviderAddress",
        "ACL",
        "OutBoundNAT",
        "EncapOverhead",
        "SDNRoute",
        "L4Proxy",
        "QOS",
        "Bandwidth",
        "TierAcl",
    ];
}

/// `ProviderAddress` settings: the underlay address of the host (or
/// hardware VTEP) a remote endpoint lives behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProviderAddress {
    #[schema(value_type = crate::net::IpAddress, example = "192.168.1.20")]
    pub provider_address: IpAddr,
}

/// Endpoint flag `RemoteEndpoint`: not a device here, but "these addresses,
/// with this MAC, live behind `ProviderAddress`" on an Overlay network.
pub const REMOTE_ENDPOINT: u32 = 1;

/// Endpoint flag `DisableInterComputeCommunication` (DisableICC): no
/// traffic with the other endpoints of its network.
pub const DISABLE_ICC: u32 = 2;

/// Endpoint flag `AllowSpoofing`, a Linux extension: the endpoint may send
/// from any MAC and address (a router or VPN container). Without it, cnet
/// drops what an endpoint sends from another MAC or address.
pub const ALLOW_SPOOFING: u32 = 1 << 16;

/// The `ProviderAddress` policy among `policies`.
pub fn provider_in(policies: &[EndpointPolicy]) -> Option<IpAddr> {
    policies.iter().find_map(|p| match p {
        EndpointPolicy::ProviderAddress(a) => Some(a.provider_address),
        _ => None,
    })
}

/// `HostComputeEndpoint`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Endpoint {
    #[serde(rename = "ID", default)]
    pub id: Uuid,
    /// Defaults to the ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ObjectName>,
    /// The network: its ID, or its name in a request.
    pub host_compute_network: String,
    /// The namespace the endpoint is attached to. In a create request: attach
    /// at once (one call instead of two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_compute_namespace: Option<String>,
    /// Allocated when absent; one entry per address family of the network.
    #[serde(default)]
    pub ip_configurations: Vec<IpConfig>,
    /// Derived from the IPv4 address when absent (`0a:58:` + address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// The endpoint's routes; a default route via the network's gateway when absent.
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub flags: u32,
    #[serde(default)]
    pub policies: Vec<EndpointPolicy>,
    #[serde(default)]
    pub schema_version: SchemaVersion,
    /// Linux extension: the interface name inside the namespace (default `eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<IfName>,
    /// Linux extension, read-only: the host side of the veth pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_interface_name: Option<String>,
    /// Read-only.
    #[serde(default)]
    pub state: EndpointState,
    /// Linux extension, read-only: the device a VMM opens for a VM endpoint
    /// on a Transparent network (its macvtap, `/dev/tapN`); a TAP endpoint is
    /// opened by `HostInterfaceName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_device: Option<String>,
    /// Linux extension: more names the endpoint answers to in its network's
    /// DNS (the CNI `aliases` capability, Podman's `--network-alias`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Linux extension: free-form key/value pairs a client stores with the
    /// endpoint (the CNI plugin keeps the container ID and interface here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Endpoint {
    pub fn interface_name(&self) -> IfName {
        self.interface_name.clone().unwrap_or_else(|| IfName::new("eth0").expect("eth0 is a valid name"))
    }
    /// `cnv` + 11 hex digits of a hash of the ID: at most 15 bytes.
    pub fn derived_host_name(&self) -> String {
        format!("cnv{:011x}", stable_hash(self.id.as_bytes()) & 0xfff_ffff_ffff)
    }
    pub fn port_mappings(&self) -> impl Iterator<Item = &PortMapping> {
        port_mappings_in(&self.policies)
    }
    pub fn mtu(&self) -> Option<u32> {
        mtu_in(&self.policies)
    }
    pub fn display_name(&self) -> String {
        crate::names::display_name(self.name.as_ref(), &self.id)
    }
}

/// The `PortMapping` policies among `policies`.
pub fn port_mappings_in(policies: &[EndpointPolicy]) -> impl Iterator<Item = &PortMapping> {
    policies.iter().filter_map(|p| match p {
        EndpointPolicy::PortMapping(m) => Some(m),
        _ => None,
    })
}

/// The VLAN a `VLAN` policy among `policies` puts the endpoint on.
pub fn vlan_in(policies: &[EndpointPolicy]) -> Option<crate::network::Isolation> {
    policies.iter().find_map(|p| match p {
        EndpointPolicy::Vlan(v) => Some(*v),
        _ => None,
    })
}

/// The `ACL` policies among `policies`.
/// The `L4Proxy` policies among `policies`.
pub fn l4proxies_in(policies: &[EndpointPolicy]) -> impl Iterator<Item = &crate::proxy::L4ProxyPolicy> {
    policies.iter().filter_map(|p| match p {
        EndpointPolicy::L4Proxy(n) => Some(n),
        _ => None,
    })
}

/// The `OutBoundNAT` policies among `policies`.
pub fn outbound_nats_in(policies: &[EndpointPolicy]) -> impl Iterator<Item = &crate::nat::OutboundNatPolicy> {
    policies.iter().filter_map(|p| match p {
        EndpointPolicy::OutboundNat(n) => Some(n),
        _ => None,
    })
}

pub fn acls_in(policies: &[EndpointPolicy]) -> impl Iterator<Item = &crate::acl::AclPolicy> {
    policies.iter().filter_map(|p| match p {
        EndpointPolicy::Acl(a) => Some(a),
        _ => None,
    })
}

/// The `TierAcl` policies among `policies`.
pub fn tiers_in(policies: &[EndpointPolicy]) -> impl Iterator<Item = &crate::tier::TierAclPolicy> {
    policies.iter().filter_map(|p| match p {
        EndpointPolicy::TierAcl(t) => Some(t),
        _ => None,
    })
}

/// The MTU an `InterfaceParameters` policy among `policies` sets.
pub fn mtu_in(policies: &[EndpointPolicy]) -> Option<u32> {
    policies.iter().find_map(|p| match p {
        EndpointPolicy::InterfaceParameters(i) => Some(i.mtu),
        _ => None,
    })
}

/// The routes of the `SDNRoute` policies among `policies`, given the
/// gateways of the endpoint's network.
pub fn sdn_routes(policies: &[EndpointPolicy], gateways: &[IpAddr]) -> Result<Vec<crate::network::Route>, String> {
    policies
        .iter()
        .filter_map(|p| match p {
            EndpointPolicy::SdnRoute(r) => Some(r.route(gateways)),
            _ => None,
        })
        .collect()
}

/// The MTU of an endpoint with `policies` on a network of MTU `network_mtu`:
/// its `InterfaceParameters` MTU or the network's, less its `EncapOverhead`.
pub fn effective_mtu(policies: &[EndpointPolicy], network_mtu: u32) -> u32 {
    let overhead: u32 = policies
        .iter()
        .map(|p| match p {
            EndpointPolicy::EncapOverhead(e) => u32::from(e.overhead),
            _ => 0,
        })
        .sum();
    mtu_in(policies).unwrap_or(network_mtu).saturating_sub(overhead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(proto: Protocol, ext: u16, count: u16, vip: Option<&str>) -> PortMapping {
        PortMapping {
            protocol: proto,
            internal_port: 80,
            external_port: ext,
            vip: vip.map(|v| v.parse().unwrap()),
            flags: 0,
            port_count: count,
        }
    }

    #[test]
    fn port_mappings_conflict_on_same_protocol_port_and_overlapping_vip() {
        let any = pm(Protocol::Tcp, 8080, 1, None);
        assert!(any.conflicts_with(&pm(Protocol::Tcp, 8080, 1, Some("198.18.0.2"))));
        assert!(!any.conflicts_with(&pm(Protocol::Udp, 8080, 1, None)));
        assert!(!pm(Protocol::Tcp, 8080, 1, Some("198.18.0.2")).conflicts_with(&pm(
            Protocol::Tcp,
            8080,
            1,
            Some("198.18.0.3")
        )));
        assert!(pm(Protocol::Tcp, 8000, 100, None).conflicts_with(&any));
        assert!(!pm(Protocol::Tcp, 8000, 80, None).conflicts_with(&any));
    }

    #[test]
    fn port_mapping_json_is_hcn_shaped() {
        let p: EndpointPolicy = serde_json::from_str(
            r#"{"Type":"PortMapping","Settings":{"Protocol":6,"InternalPort":80,"ExternalPort":8080,"VIP":""}}"#,
        )
        .unwrap();
        let EndpointPolicy::PortMapping(m) = &p else { panic!("not a port mapping") };
        assert_eq!(m.vip, None);
        assert_eq!(m.port_count, 1);
        assert!(pm(Protocol::Tcp, 65535, 2, None).check().is_err());
    }
}
