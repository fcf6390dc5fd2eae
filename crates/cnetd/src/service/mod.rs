//! The service: every operation on networks, endpoints and namespaces, one
//! file per object kind. Each operation is a lifecycle:
//!
//! 1. under the state lock: look up, validate, decide (addresses, names),
//!    and commit the object with its intent ([`Intent`]);
//! 2. without the lock: the kernel work, through the network's driver, the
//!    firewall and the [`Dataplane`];
//! 3. under the lock again: commit the outcome without the intent — or, on
//!    failure, roll back the kernel steps made so far and commit the object
//!    as it was.
//!
//! A crash between 1 and 3 leaves the intent for [`crate::reconcile`] to
//! roll back (create, attach) or finish (detach, delete). An object with an
//! intent is busy: other changes to it are refused with
//! `OperationInProgress` rather than interleaved.

mod dns;
mod endpoints;
mod handoff;
mod leases;
mod namespaces;
mod network_policies;
mod networks;
mod overlay;
mod routes;
mod stats;

use std::sync::Arc;

use cnet_model::validate::{Publisher, Usage};
use cnet_model::{EndpointPolicy, NetworkType, Protocol};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dataplane::{flows_to, Dataplane, FlowMatch};
use crate::driver::{NetworkDriver, Registry};
use crate::error::{Result, ServiceError};
use crate::firewall::{self, Firewall};
use crate::state::{EndpointRecord, Intent, NamespaceRecord, NetworkRecord, Objects, State};

pub(crate) use endpoints::detached;
pub use endpoints::PolicyChange;
pub(crate) use handoff::{adapter_namespace, own_namespace};
pub use namespaces::NamespaceChange;
pub use namespaces::NamespaceView;
pub use network_policies::NetworkPolicyChange;
pub use networks::NetworkChange;

/// What this host's kernel can do, probed at start.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub sctp: bool,
    /// macvlan links (Transparent networks).
    pub macvlan: bool,
    /// 802.1Q links (VLAN policies).
    pub vlan: bool,
    /// Isolated bridge ports (L2Tunnel).
    pub bridge_port_isolation: bool,
    /// The kernel's 802.1Q links and bridge VLAN filtering: not needed
    /// (VLANs are tagged by eBPF), reported for operators.
    pub vlan_8021q: bool,
    pub bridge_vlan_filtering: bool,
}

impl Capabilities {
    pub fn probe() -> Self {
        let p = cnet_dataplane::probe::links();
        Capabilities {
            sctp: cnet_dataplane::probe::sctp(),
            macvlan: p.macvlan,
            vlan: p.vlan,
            bridge_port_isolation: p.bridge_port_isolation,
            vlan_8021q: p.vlan_8021q,
            bridge_vlan_filtering: p.bridge_vlan_filtering,
        }
    }

    /// Everything on, for unit tests with the fake.
    pub fn all() -> Self {
        Capabilities {
            sctp: true,
            macvlan: true,
            vlan: true,
            bridge_port_isolation: true,
            vlan_8021q: true,
            bridge_vlan_filtering: true,
        }
    }

    /// Why this host cannot build a network of `net`'s type (and VLANs), if it cannot.
    pub fn missing_for(&self, net: &cnet_model::Network) -> Option<String> {
        use cnet_model::NetworkType as T;
        let vlans = net.subnets().any(|s| s.vlan().is_some());
        match net.r#type {
            T::Transparent if !self.macvlan => {
                Some("Transparent networks need the kernel's macvlan support (modprobe macvlan)".into())
            }
            T::Transparent if vlans && !self.vlan => {
                Some("VLAN policies need the kernel's 802.1Q support (modprobe 8021q)".into())
            }
            T::L2Tunnel if !self.bridge_port_isolation => {
                Some("L2Tunnel networks need isolated bridge ports (Linux 4.18 or later)".into())
            }
            _ => None,
        }
    }
}

/// Filters for listing endpoints.
#[derive(Default, Debug, Deserialize)]
pub struct EndpointFilter {
    pub name: Option<String>,
    pub network: Option<String>,
    pub namespace: Option<String>,
}

/// Filters for listing networks.
#[derive(Default, Debug, Deserialize)]
pub struct NetworkFilter {
    pub name: Option<String>,
    pub r#type: Option<String>,
}

pub struct Service {
    pub state: State,
    pub dp: Arc<dyn Dataplane>,
    pub firewall: Firewall,
    /// Endpoint policies (ACLs) in the kernel.
    pub policies: crate::policy::Policies,
    /// Anti-spoofing of every endpoint on a host switch.
    pub guards: crate::policy::spoof::Guards,
    pub drivers: Registry,
    pub caps: Capabilities,
    /// The DHCP renewal schedule (the leases themselves are in the records).
    pub renewals: crate::dhcp::Renewals,
    /// The DHCP server's sockets (networks with `EnableDhcpServer`).
    pub dhcp_sockets: crate::dhcp::server::Sockets,
    /// This host's cluster membership, with `--etcd`.
    pub cluster: std::sync::OnceLock<Arc<dyn crate::cluster::Member>>,
    /// Held while Overlay addresses are chosen or blocks given back (`overlay`).
    blocks: std::sync::Mutex<()>,
    /// The DNS servers of networks with name resolution.
    pub dns: crate::dns::Servers,
}

impl Service {
    pub fn new(state: State, dp: Arc<dyn Dataplane>, drivers: Registry, caps: Capabilities) -> Self {
        Service {
            state,
            firewall: Firewall::new(dp.clone()),
            policies: crate::policy::Policies::new(dp.clone()),
            guards: crate::policy::spoof::Guards::new(dp.clone()),
            dp,
            drivers,
            caps,
            renewals: Default::default(),
            dhcp_sockets: Default::default(),
            cluster: Default::default(),
            blocks: Default::default(),
            dns: Default::default(),
        }
    }

    /// The path of namespace `id`, if it is known.
    pub(crate) fn netns_path(&self, id: Option<Uuid>) -> Option<String> {
        let o = self.state.read();
        // A Guest namespace (a VM's) has no path.
        id.and_then(|id| o.namespaces.get(&id)).map(|n| n.record.netns_path.clone()).filter(|p| !p.is_empty())
    }

    pub fn driver(&self, net: &NetworkRecord) -> Result<&dyn NetworkDriver> {
        self.drivers.get(net.kind)
    }

    /// Gives an endpoint its adapter (and, on a `Dhcp` network, its leased
    /// address) and its firewall elements; undoes the adapter again when a
    /// later step fails. Answers the endpoint as attached.
    fn attach_kernel(&self, ep: &EndpointRecord, net: &NetworkRecord, ns: &NamespaceRecord) -> Result<EndpointRecord> {
        let path = &ns.netns_path;
        let driver = self.driver(net)?;
        let dp = self.dp.as_ref();
        if ns.kind.is_guest() {
            refuse_vm_acls(ep, net)?;
            if !driver.vm_nics() {
                return Err(ServiceError::unsupported(format!(
                    "network {} ({}) has no VM NICs in this build: attach VM endpoints to a NAT, Internal, Private, L2Bridge, L2Tunnel or Transparent network",
                    net.name, net.kind
                )));
            }
            // On a Dhcp network the guest leases its address from the LAN's
            // server itself, with its own MAC: cnetd holds no lease for it.
            let device = driver
                .attach_vm(dp, net, ep, &ns.vm_nic.clone().unwrap_or_default())
                .map_err(|e| ServiceError::kernel(&format!("attaching VM endpoint {}", ep.display_name()), e))?;
            if let Err(e) = self.program_endpoint(ep, net, Some(&ns.netns_path)) {
                let _ = driver.detach(dp, net, ep, None);
                return Err(e);
            }
            return Ok(EndpointRecord { vm_device: device, ..ep.clone() });
        }
        if !self.dp.netns_exists(path) {
            return Err(ServiceError::new(
                cnet_model::ErrorCode::NamespaceNotFound,
                format!("the network namespace of {} ({path}) is gone: create the namespace again", ns.display_name()),
            ));
        }
        driver
            .attach(dp, net, ep, path)
            .map_err(|e| ServiceError::kernel(&format!("attaching endpoint {}", ep.display_name()), e))?;
        let mut ep = ep.clone();
        if net.ipam == crate::state::records::IpamType::Dhcp && ep.lease.is_none() {
            match self.lease(&ep, net, path) {
                Ok(leased) => ep = leased,
                Err(e) => {
                    let _ = driver.detach(dp, net, &ep, Some(path));
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.program_endpoint(&ep, net, Some(path)) {
            self.release_lease(&ep, Some(path));
            let _ = driver.detach(dp, net, &ep, Some(path));
            return Err(e);
        }
        Ok(ep)
    }

    /// Programs what an attached (or handed-off) endpoint has beyond its
    /// adapter: its guard, its ACLs, its firewall elements (published ports,
    /// outbound NAT, L4 proxy), its QoS caps; all or nothing.
    /// `netns`: the path of its namespace (`None`: handed off, not known).
    pub(crate) fn program_endpoint(&self, ep: &EndpointRecord, net: &NetworkRecord, netns: Option<&str>) -> Result<()> {
        self.guards.set(ep, net, netns).map_err(|e| ServiceError::kernel("guarding against spoofing", e))?;
        if let Err(e) = self.policies.set(ep, net, netns) {
            let _ = self.guards.remove(ep, Some(net), netns);
            return Err(ServiceError::kernel("programming ACLs", e));
        }
        if let Err(e) = self.firewall.set(ep.id, firewall::endpoint_elems(ep, net)) {
            let _ = self.policies.remove(ep.id);
            let _ = self.guards.remove(ep, Some(net), netns);
            return Err(ServiceError::kernel("publishing ports", e));
        }
        if let Err(e) = self.set_qos(ep, net.kind, netns) {
            let _ = self.firewall.remove(ep.id);
            let _ = self.policies.remove(ep.id);
            let _ = self.guards.remove(ep, Some(net), netns);
            return Err(e);
        }
        // As CNI portmap does: a UDP flow to a host port that was someone
        // else's would otherwise stay DNAT'd to the old owner.
        self.forget(&udp_to_host_ports(ep.port_mappings()));
        Ok(())
    }

    /// Removes an endpoint's kernel state: firewall elements first (no new
    /// flow is DNAT'd to it), then its adapter, then the conntrack entries of
    /// flows that lead to it. Goes on after an error and reports them all.
    pub(crate) fn detach_kernel(
        &self,
        ep: &EndpointRecord,
        net: Option<&NetworkRecord>,
        netns: Option<&str>,
    ) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.firewall.remove(ep.id) {
            errors.push(e.to_string());
        }
        if let Err(e) = self.policies.remove(ep.id) {
            errors.push(e.to_string());
        }
        if let Err(e) = self.guards.remove(ep, net, netns) {
            errors.push(e.to_string());
        }
        let adapter = net.and_then(|n| crate::policy::qos::adapter(ep, n.kind, netns));
        if let Some(at) = adapter.filter(|_| crate::policy::qos::shaped(ep)) {
            if let Err(e) = crate::policy::qos::clear(self.dp.as_ref(), ep, &at) {
                errors.push(e.to_string());
            }
        }
        self.release_lease(ep, netns);
        match net.map(|n| (n, self.driver(n))) {
            Some((net, Ok(driver))) => {
                if let Err(e) = driver.detach(self.dp.as_ref(), net, ep, netns) {
                    errors.push(e.to_string());
                }
            }
            Some((_, Err(e))) => errors.push(e.message),
            None => errors.push(format!("its network {} is gone", ep.network)),
        }
        // Flows that outlive an endpoint come in through its published
        // ports; forgetting them walks the whole conntrack table, so only
        // addresses that such a flow was DNAT'd to pay for it.
        if ep.port_mappings().next().is_some() {
            let seen: Vec<FlowMatch> = ep
                .ips()
                .filter(|ip| {
                    self.firewall.take_dnat_seen(*ip).unwrap_or_else(|e| {
                        tracing::warn!("cannot tell whether flows were DNAT'd to {ip}: {e}");
                        true
                    })
                })
                .map(flows_to)
                .collect();
            self.forget(&seen);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::new(
                cnet_model::ErrorCode::DegradedOperation,
                format!(
                    "detaching endpoint {} failed (a retry or restart finishes it): {}",
                    ep.display_name(),
                    errors.join("; ")
                ),
            ))
        }
    }

    /// Gives an endpoint with `QOS` or `Bandwidth` policies, on a network
    /// of type `kind` and attached to the namespace at `netns`, its caps
    /// (nothing for one without).
    pub(crate) fn set_qos(&self, ep: &EndpointRecord, kind: NetworkType, netns: Option<&str>) -> Result<()> {
        let Some(at) = crate::policy::qos::adapter(ep, kind, netns).filter(|_| crate::policy::qos::shaped(ep)) else {
            return Ok(());
        };
        crate::policy::qos::set(self.dp.as_ref(), ep, &at)
            .map_err(|e| ServiceError::kernel("capping bandwidth (QoS)", e))
    }

    /// Deletes conntrack entries; a failure is logged, never fatal (the
    /// entries would time out on their own).
    fn forget(&self, flows: &[FlowMatch]) {
        if flows.is_empty() {
            return;
        }
        if let Err(e) = self.dp.forget_flows(flows) {
            tracing::warn!("could not delete conntrack entries {flows:?}: {e}");
        }
    }
}

/// Host ports of UDP mappings: their old flows are dropped when the mapping appears.
fn udp_to_host_ports<'a>(mappings: impl Iterator<Item = &'a cnet_model::PortMapping>) -> Vec<FlowMatch> {
    mappings
        .filter(|m| m.protocol == Protocol::Udp)
        .flat_map(|m| m.ports().map(|(ext, _)| ext))
        .map(|port| FlowMatch {
            protocol: Some(Protocol::Udp.number()),
            orig_dst_port: Some(port),
            ..FlowMatch::default()
        })
        .collect()
}

/// Flows DNAT'd through mappings that an endpoint no longer has, for each
/// of its addresses that such a flow reached (`seen`).
fn flows_of_removed(
    ep: &EndpointRecord,
    removed: &[&cnet_model::PortMapping],
    seen: impl Fn(std::net::IpAddr) -> bool,
) -> Vec<FlowMatch> {
    let mut out = Vec::new();
    for m in removed {
        for ip in ep.ips().filter(|ip| seen(*ip)) {
            for (_, int) in m.ports() {
                out.push(FlowMatch {
                    protocol: Some(m.protocol.number()),
                    reply_src: Some(ip),
                    reply_src_port: Some(int),
                    ..FlowMatch::default()
                });
            }
        }
    }
    out
}

/// What is in use where a new endpoint of `net` goes: its network's
/// addresses and MACs, and every port mapping on the host.
fn usage<'a>(o: &'a Objects, net: &NetworkRecord, except: Option<Uuid>) -> Usage<'a> {
    let mut usage = Usage { last_allocated: net.last_allocated.clone(), ..Usage::default() };
    // The host's own links of the network (bridge, shim) have this MAC.
    usage.macs.insert(net.bridge_mac());
    for e in o.endpoints.values().map(|s| &s.record).filter(|e| Some(e.id) != except) {
        for m in e.port_mappings() {
            usage.port_mappings.push((m, Publisher { id: e.id, name: e.name.as_ref(), namespace: e.namespace }));
        }
        if e.network == net.id {
            usage.ips.extend(e.ips());
            usage.macs.insert(e.mac);
        }
    }
    usage
}

/// Refused while a change is in flight for the object.
fn not_busy(intent: Option<Intent>, what: impl FnOnce() -> String) -> Result<()> {
    match intent {
        None => Ok(()),
        Some(_) => Err(ServiceError::in_progress(format!("{} is being changed: retry", what()))),
    }
}

/// Whether two policies are the same for removal: port mappings by their host side.
fn same_policy(a: &EndpointPolicy, b: &EndpointPolicy) -> bool {
    match (a, b) {
        (EndpointPolicy::PortMapping(x), EndpointPolicy::PortMapping(y)) => {
            x.protocol == y.protocol && x.external_port == y.external_port && x.vip == y.vip
        }
        // An endpoint has one of each: named by type alone.
        (EndpointPolicy::Qos(_), EndpointPolicy::Qos(_))
        | (EndpointPolicy::Bandwidth(_), EndpointPolicy::Bandwidth(_)) => true,
        // An ACL with an Id is named by it.
        (EndpointPolicy::Acl(x), EndpointPolicy::Acl(y)) if x.id.is_some() && y.id.is_some() => x.id == y.id,
        // An endpoint has one OutBoundNAT and one L4Proxy: any names it.
        (EndpointPolicy::OutboundNat(_), EndpointPolicy::OutboundNat(_)) => true,
        (EndpointPolicy::L4Proxy(_), EndpointPolicy::L4Proxy(_)) => true,
        // A named tier by its name and direction.
        (EndpointPolicy::TierAcl(x), EndpointPolicy::TierAcl(y)) if !x.name.is_empty() && !y.name.is_empty() => {
            x.name == y.name && x.direction == y.direction
        }
        _ => a == b,
    }
}

/// Refuses ACLs for a VM endpoint (`ep`, or one about to be) on a
/// Transparent network `net`: its macvtap's frames pass no hook with
/// connection tracking, on the host or in a namespace of cnet's.
pub(crate) fn refuse_vm_acls(ep: &EndpointRecord, net: &NetworkRecord) -> Result<()> {
    if net.kind == NetworkType::Transparent && crate::policy::has_acls(ep, net) {
        return Err(ServiceError::unsupported(format!(
            "endpoint {}: a VM endpoint on a Transparent network takes no ACL, TierAcl or NetworkACL policies (its macvtap's frames never pass a stateful firewall hook): filter in the guest, or attach the VM to an L2Bridge or NAT network",
            ep.display_name()
        )));
    }
    if net.kind == NetworkType::Transparent && crate::policy::isolated(ep) {
        return Err(ServiceError::unsupported(format!(
            "endpoint {}: a VM endpoint on a Transparent network cannot have the flag DisableInterComputeCommunication (its macvtap's frames pass no hook of the host's): attach the VM to an L2Bridge or NAT network",
            ep.display_name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
