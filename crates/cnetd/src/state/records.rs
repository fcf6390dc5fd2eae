//! What the store holds: records with typed references, apart from the
//! API's HCN wire structs (which [`crate::api`] converts to and from at the
//! edge, with the conversions here).
//!
//! Invariants:
//! - References are UUIDs of existing objects (an endpoint's network, its
//!   namespace), never names or strings compared after formatting.
//! - A record holds only what cnetd decided or was told, already validated:
//!   an endpoint always has its MAC, addresses and interface names; a
//!   namespace always has its path.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cnet_model::acl::AclPolicy;
use cnet_model::namespace::ResourceData;
use cnet_model::network::NetAdapterName;
use cnet_model::sets::SetPolicy;
use cnet_model::{
    Dns, Endpoint, EndpointPolicy, EndpointState, IfName, IpConfig, Ipam, MacAddr, Namespace, NamespaceResource,
    Network, NetworkPolicy, NetworkType, ObjectName, PortMapping, Route, Subnet,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Result, ServiceError};

/// A stored object and the kernel change in flight for it, if any.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored<T> {
    pub record: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

impl<T> Stored<T> {
    pub fn done(record: T) -> Self {
        Stored { record, intent: None }
    }
    pub fn with(record: T, intent: Intent) -> Self {
        Stored { record, intent: Some(intent) }
    }
}

/// A kernel change that was started and not yet finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intent {
    Create,
    /// Attaching to the namespace with this ID.
    Attach(Uuid),
    Detach,
    Delete,
    Modify,
    /// Handing its adapter off to a runtime (`Service::hand_off_endpoint`).
    HandOff,
}

/// How a network's addresses are managed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpamType {
    /// cnetd allocates addresses from the subnets.
    #[default]
    Static,
    /// cnetd leases each endpoint's address from the LAN's DHCP server.
    Dhcp,
}

impl IpamType {
    pub fn parse(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("Static") {
            Ok(IpamType::Static)
        } else if s.eq_ignore_ascii_case("Dhcp") {
            Ok(IpamType::Dhcp)
        } else {
            Err(ServiceError::invalid(format!(
                "IPAM type {s:?} is unknown: use Static (cnetd allocates addresses) or Dhcp"
            )))
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            IpamType::Static => "Static",
            IpamType::Dhcp => "Dhcp",
        }
    }
}

/// The HCN namespace types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceType {
    #[default]
    HostDefault,
    Host,
    Guest,
    GuestDefault,
}

impl NamespaceType {
    pub const ALL: [NamespaceType; 4] =
        [NamespaceType::HostDefault, NamespaceType::Host, NamespaceType::Guest, NamespaceType::GuestDefault];
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceType::HostDefault => "HostDefault",
            NamespaceType::Host => "Host",
            NamespaceType::Guest => "Guest",
            NamespaceType::GuestDefault => "GuestDefault",
        }
    }
    /// A VM's compartment: its endpoints are VM NICs (TAPs) that a VMM
    /// opens; there is no network namespace on the host.
    pub fn is_guest(self) -> bool {
        matches!(self, NamespaceType::Guest | NamespaceType::GuestDefault)
    }
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            ServiceError::invalid(format!(
                "namespace Type {s:?} is unknown: use HostDefault, Host, Guest or GuestDefault"
            ))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: Uuid,
    pub name: ObjectName,
    pub kind: NetworkType,
    pub ipam: IpamType,
    pub subnets: Vec<Subnet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_pool: Option<cnet_model::network::MacPool>,
    pub flags: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The network's switch (derived from the ID, checked unique at create).
    pub bridge: String,
    /// The host interface a physical network is on (`NetAdapterName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<IfName>,
    /// The address handed out last in each address family: the next
    /// allocation goes on after it (and wraps around), so a freed address
    /// is not handed out again at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_allocated: Vec<IpAddr>,
    /// An Overlay network's VXLAN port (`VxlanPort`; 4789 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    /// An Overlay network's gateway MAC on every host (`DrMacAddress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dr_mac: Option<MacAddr>,
    /// Name resolution, when the `AutomaticDNS` policy says (`dns::names::enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_dns: Option<bool>,
    /// Host-local, for an Overlay network: this host's tunnel end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_host: Option<OverlayHost>,
    /// Deleted with its last endpoint (`AutoDelete`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_delete: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Its IP sets (`SetPolicy`), checked ([`cnet_model::sets::check_sets`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<SetPolicy>,
    /// ACLs of every endpoint of the network (`NetworkACL`), checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<AclPolicy>,
}

/// This host as an Overlay network's tunnel end (from its cluster membership).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayHost {
    pub provider: IpAddr,
    pub vtep_mac: MacAddr,
}

impl NetworkRecord {
    /// A record of a validated network request.
    pub fn from_wire(net: &Network, bridge: String) -> Result<Self> {
        let ipam = match net.ipams.first() {
            Some(i) => IpamType::parse(&i.r#type)?,
            None => IpamType::Static,
        };
        Ok(NetworkRecord {
            id: net.id,
            name: net.name.clone(),
            kind: net.r#type,
            ipam,
            subnets: net.subnets().cloned().collect(),
            dns: net.dns.clone(),
            mac_pool: net.mac_pool.clone(),
            flags: net.flags,
            mtu: net.mtu,
            bridge,
            uplink: net
                .adapter_name()
                .map(IfName::new)
                .transpose()
                .map_err(|e| ServiceError::invalid(format!("NetAdapterName: {e}")))?,
            last_allocated: vec![],
            vxlan_port: net.vxlan_port(),
            dr_mac: net.dr_mac(),
            automatic_dns: net.automatic_dns(),
            overlay_host: None,
            auto_delete: net.auto_delete,
            annotations: net.annotations.clone(),
            sets: net.sets().cloned().collect(),
            acls: net.network_acls().cloned().collect(),
        })
    }

    pub fn to_wire(&self) -> Network {
        Network {
            id: self.id,
            name: self.name.clone(),
            r#type: self.kind,
            ipams: vec![Ipam { r#type: self.ipam.as_str().into(), subnets: self.subnets.clone() }],
            dns: self.dns.clone(),
            mac_pool: self.mac_pool.clone(),
            flags: self.flags,
            policies: self
                .uplink
                .iter()
                .map(|u| NetworkPolicy::NetAdapterName(NetAdapterName { network_adapter_name: u.as_str().to_string() }))
                .chain(self.vxlan_port.map(|port| NetworkPolicy::VxlanPort(cnet_model::network::VxlanPort { port })))
                .chain(
                    self.dr_mac
                        .map(|address| NetworkPolicy::DrMacAddress(cnet_model::network::DrMacAddress { address })),
                )
                .chain(
                    self.automatic_dns
                        .map(|enable| NetworkPolicy::AutomaticDns(cnet_model::network::AutomaticDns { enable })),
                )
                .chain(self.sets.iter().cloned().map(NetworkPolicy::SetPolicy))
                .chain(self.acls.iter().cloned().map(NetworkPolicy::NetworkAcl))
                .collect(),
            schema_version: Default::default(),
            mtu: self.mtu,
            bridge_name: Some(self.bridge.clone()),
            auto_delete: self.auto_delete,
            annotations: self.annotations.clone(),
        }
    }

    pub fn mtu(&self) -> u32 {
        // An Overlay network's frames carry 50 bytes of VXLAN over IPv4.
        let default = if self.kind == NetworkType::Overlay { 1450 } else { 1500 };
        self.mtu.unwrap_or(default)
    }

    /// An Overlay network's VNI (its subnets' VSID).
    pub fn vni(&self) -> Option<u32> {
        self.subnets.iter().find_map(|s| s.vsid())
    }

    /// The bridge's MAC, fixed so that endpoints never see the gateway move.
    pub fn bridge_mac(&self) -> MacAddr {
        cnet_model::network::bridge_mac_of(&self.id)
    }

    /// The uplink's name; a physical network always has one.
    pub fn uplink(&self) -> &str {
        self.uplink.as_ref().map(|u| u.as_str()).unwrap_or("")
    }

    /// The VLAN of an endpoint: its own `VLAN` policy, else that of the
    /// subnet its address is in (an endpoint without one yet, waiting for
    /// a DHCP lease: the first subnet's). Validated IDs only.
    pub fn vlan_of(&self, ep: &EndpointRecord) -> Option<u16> {
        let subnet = || {
            let own = self.subnets.iter().find(|s| ep.ips().any(|ip| s.ip_address_prefix.contains(&ip)));
            match own {
                Some(s) => s.vlan(),
                None if ep.ip_configurations.is_empty() || ep.lease.is_some() => {
                    self.subnets.first().and_then(|s| s.vlan())
                }
                None => None,
            }
        };
        cnet_model::endpoint::vlan_in(&ep.policies).or_else(subnet).and_then(|v| v.vlan_id().ok())
    }

    /// Each subnet with its gateway, if the network type has one.
    pub fn gateways(&self) -> impl Iterator<Item = (&Subnet, IpAddr)> {
        let has = self.kind.has_gateway();
        self.subnets.iter().filter(move |_| has).map(|s| (s, s.gateway()))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ObjectName>,
    pub network: Uuid,
    /// The namespace it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Uuid>,
    pub ip_configurations: Vec<IpConfig>,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    pub routes: Vec<Route>,
    pub flags: u32,
    pub policies: Vec<EndpointPolicy>,
    /// Inside the namespace.
    pub interface_name: IfName,
    /// The host side of its adapter.
    pub host_interface_name: String,
    pub state: EndpointState,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The DHCP lease behind its address (endpoints of `Dhcp` networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::dhcp::Lease>,
    /// A VM endpoint's device a VMM opens by path (a macvtap's `/dev/tapN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_device: Option<String>,
    /// More names it answers to in DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Handed off (Docker's remote driver, `Service::hand_off_endpoint`):
    /// the name its veth's container end had when cnetd left it,
    /// unconfigured, in cnetd's own namespace for a runtime to move and
    /// configure itself. Such an endpoint has no namespace: only its host
    /// end and its firewall elements are cnet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off: Option<String>,
    /// The routes of the `HostComputeRoute` objects that list it, resolved
    /// against its network (kept here so that every path that programs or
    /// checks its routes sees them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_routes: Vec<cnet_model::network::Route>,
}

impl EndpointRecord {
    /// A record of an endpoint request that `validate::prepare_endpoint` filled in.
    pub fn from_prepared(ep: Endpoint, network: Uuid, host_interface_name: String) -> Result<Self> {
        let mac = ep.mac_address.ok_or_else(|| ServiceError::internal("a prepared endpoint has a MAC"))?;
        Ok(EndpointRecord {
            interface_name: ep.interface_name(),
            id: ep.id,
            name: ep.name,
            network,
            namespace: None,
            ip_configurations: ep.ip_configurations,
            mac,
            dns: ep.dns,
            routes: ep.routes,
            flags: ep.flags,
            policies: ep.policies,
            host_interface_name,
            state: EndpointState::Created,
            annotations: ep.annotations,
            lease: None,
            vm_device: None,
            aliases: ep.aliases,
            handed_off: None,
            shared_routes: Vec::new(),
        })
    }

    pub fn to_wire(&self) -> Endpoint {
        Endpoint {
            id: self.id,
            name: self.name.clone(),
            host_compute_network: self.network.to_string(),
            host_compute_namespace: self.namespace.map(|n| n.to_string()),
            ip_configurations: self.ip_configurations.clone(),
            mac_address: Some(self.mac),
            dns: self.dns.clone(),
            routes: self.routes.clone(),
            flags: self.flags,
            policies: self.policies.clone(),
            schema_version: Default::default(),
            interface_name: Some(self.interface_name.clone()),
            host_interface_name: Some(self.host_interface_name.clone()).filter(|h| !h.is_empty()),
            state: self.state,
            annotations: self.annotations.clone(),
            vm_device: self.vm_device.clone(),
            aliases: self.aliases.clone(),
        }
    }

    pub fn port_mappings(&self) -> impl Iterator<Item = &PortMapping> {
        cnet_model::endpoint::port_mappings_in(&self.policies)
    }
    pub fn mtu(&self) -> Option<u32> {
        cnet_model::endpoint::mtu_in(&self.policies)
    }
    /// The routes inside its namespace on `net`: its own, its `SDNRoute`s and
    /// those of the route objects that list it
    /// (those were checked when they came; one that no longer resolves is left out).
    pub fn all_routes(&self, net: &NetworkRecord) -> Vec<cnet_model::network::Route> {
        let gateways: Vec<IpAddr> = net.gateways().map(|(_, g)| g).collect();
        let mut out = self.routes.clone();
        out.extend(cnet_model::endpoint::sdn_routes(&self.policies, &gateways).unwrap_or_default());
        out.extend(self.shared_routes.iter().filter(|r| !out.contains(r)).cloned().collect::<Vec<_>>());
        out
    }
    /// Its adapter's MTU on `net`: its own or the network's, less its `EncapOverhead`.
    pub fn effective_mtu(&self, net: &NetworkRecord) -> u32 {
        cnet_model::endpoint::effective_mtu(&self.policies, net.mtu())
    }
    pub fn display_name(&self) -> String {
        cnet_model::names::display_name(self.name.as_ref(), &self.id)
    }
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ip_configurations.iter().map(|c| c.ip_address)
    }
    /// Whether it has kernel state (an adapter, firewall elements): attached
    /// to a namespace, or handed off.
    pub fn in_kernel(&self) -> bool {
        self.namespace.is_some() || self.handed_off.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub id: Uuid,
    /// The netns name when cnetd created it (`/run/netns/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ObjectName>,
    pub kind: NamespaceType,
    pub netns_path: String,
    /// Whether cnetd created the netns (and deletes it with the object).
    pub managed: bool,
    /// A Guest namespace's VM NIC options (owner, group, multi-queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_nic: Option<cnet_model::VmNicOptions>,
}

impl NamespaceRecord {
    pub fn to_wire(&self, endpoints: impl Iterator<Item = Uuid>) -> Namespace {
        Namespace {
            id: self.id,
            name: self.name.clone(),
            r#type: self.kind.as_str().into(),
            netns_path: Some(self.netns_path.clone()),
            resources: endpoints
                .map(|id| NamespaceResource { r#type: "Endpoint".into(), data: ResourceData { id } })
                .collect(),
            managed: self.managed,
            vm_nic: self.vm_nic.clone(),
            schema_version: Default::default(),
        }
    }
    pub fn display_name(&self) -> String {
        cnet_model::names::display_name(self.name.as_ref(), &self.id)
    }
}

/// A `HostComputeRoute` object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub id: Uuid,
    pub network: Uuid,
    pub endpoints: Vec<Uuid>,
    pub routes: Vec<cnet_model::endpoint::SdnRoute>,
}

impl RouteRecord {
    pub fn to_wire(&self) -> cnet_model::route::HostComputeRoute {
        cnet_model::route::HostComputeRoute {
            id: self.id,
            host_compute_network: self.network.to_string(),
            host_compute_endpoints: self.endpoints.iter().map(|e| e.to_string()).collect(),
            routes: self.routes.clone(),
            schema_version: Default::default(),
        }
    }
}
