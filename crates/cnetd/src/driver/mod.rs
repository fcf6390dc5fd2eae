//! Network drivers: how each network type is built from kernel objects.
//!
//! A driver implements [`NetworkDriver`] for the network types it serves and
//! is listed once in [`Registry::builtin`]; that is the only place a type
//! becomes supported. Everything a driver does to the kernel goes through
//! the [`Dataplane`] it is handed, so its lifecycles run against the fake in
//! unit tests.
//!
//! Invariants every driver keeps:
//! - `setup` is idempotent and never re-creates an object that exists (that
//!   would cut working endpoints off); `teardown` and `detach` succeed when
//!   things are already gone.
//! - `attach` either completes or leaves nothing behind.
//! - Firewall elements are declared (`firewall`), never programmed by the
//!   driver: [`crate::firewall`] owns the table.

pub mod bridge;
pub mod l2bridge;
pub mod overlay;
pub mod transparent;

use cnet_model::VmNicOptions;
use std::collections::HashMap;
use std::net::IpAddr;

use cnet_model::{Network, NetworkType};

use crate::dataplane::{Dataplane, DpResult, FwElem, LinkInfo};
use crate::error::{Result, ServiceError};
use crate::state::{EndpointRecord, NamespaceRecord, NetworkRecord};
use cnet_dataplane::Mac;
use cnet_model::findings::{Finding, FindingKind, Subject, SubjectKind};

/// cnetd's host links by name, listed once per diagnosis or start.
pub type Links = HashMap<String, LinkInfo>;

/// What start-up repair did to one endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Repair {
    /// Its kernel objects are as they should be.
    Intact,
    /// Something was missing and was made again (what, in words).
    Repaired(String),
    /// It cannot work now (why, in words).
    Degraded(String),
}

pub trait NetworkDriver: Send + Sync {
    /// The network types this driver builds.
    fn types(&self) -> &'static [NetworkType];

    /// Whether it gives VM endpoints (of `Guest` namespaces) a VM NIC.
    fn vm_nics(&self) -> bool {
        false
    }

    /// Gives a VM endpoint its VM NIC: a TAP on the network's switch for a
    /// VMM to open by `ep.host_interface_name`, or a device the VMM opens
    /// by path (a macvtap's `/dev/tapN`, answered). Completes or leaves nothing.
    fn attach_vm(
        &self,
        _dp: &dyn Dataplane,
        _net: &NetworkRecord,
        _ep: &EndpointRecord,
        _vm: &VmNicOptions,
    ) -> DpResult<Option<String>> {
        unreachable!("attach_vm is called only on drivers with vm_nics()")
    }

    /// Whether its endpoints have a host-side link (a veth's host end);
    /// a macvlan endpoint lives in its namespace only.
    fn has_host_link(&self) -> bool {
        true
    }

    /// Checks of a network request that only this type has.
    fn validate(&self, _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Creates (or completes) the network's kernel objects.
    fn setup(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()>;

    /// Brings a live network from `old` to `new` (a subnet added or removed).
    fn update(&self, dp: &dyn Dataplane, old: &NetworkRecord, new: &NetworkRecord) -> DpResult<()>;

    /// Removes the network's kernel objects (its endpoints are gone).
    fn teardown(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()>;

    /// What the network contributes to cnet's nftables table.
    fn firewall(&self, net: &NetworkRecord) -> Vec<FwElem>;

    /// Gives the endpoint its adapter inside the namespace at `netns_path`.
    fn attach(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, netns_path: &str) -> DpResult<()>;

    /// The endpoint's addresses changed after `attach` (a DHCP lease came,
    /// or a new one replaced it): from `old`'s to `new`'s, programs what
    /// depends on them.
    fn addresses_changed(
        &self,
        _dp: &dyn Dataplane,
        _net: &NetworkRecord,
        _old: &EndpointRecord,
        _new: &EndpointRecord,
    ) -> DpResult<()> {
        Ok(())
    }

    /// Addresses of the network's subnets that are not its to hand out:
    /// the host's own on a LAN.
    fn reserved(&self, _dp: &dyn Dataplane, _net: &NetworkRecord) -> DpResult<Vec<IpAddr>> {
        Ok(vec![])
    }

    /// Hands the endpoint's adapter off to a runtime that configures it
    /// itself (Docker's remote driver, `Join`): a veth pair whose host end
    /// is on the switch and whose container end, named `peer`, is left in
    /// cnetd's own namespace with the endpoint's MAC and MTU, down, without
    /// addresses or routes. Completes or leaves nothing; [`NetworkDriver::detach`]
    /// removes it (both ends, wherever the runtime moved the container end).
    fn hand_off(&self, _dp: &dyn Dataplane, net: &NetworkRecord, _ep: &EndpointRecord, _peer: &str) -> DpResult<()> {
        Err(cnet_dataplane::DataplaneError::Invalid {
            what: format!("network {} ({})", net.name, net.kind),
            reason: "its endpoints cannot be handed off to a runtime: use a NAT, Internal or Private network".into(),
        })
    }

    /// Cuts the endpoint off at once and removes its adapter (`netns`: the
    /// path of its namespace, when that is still known).
    fn detach(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, netns: Option<&str>)
        -> DpResult<()>;

    /// The host links the network owns (its switch).
    fn network_links(&self, net: &NetworkRecord) -> Vec<String>;

    /// The host links an attached endpoint owns.
    fn endpoint_links(&self, ep: &EndpointRecord) -> Vec<String>;

    /// Differences between the network and the kernel.
    fn check_network(&self, dp: &dyn Dataplane, net: &NetworkRecord, links: &Links) -> DpResult<Vec<Finding>>;

    /// Differences between an attached endpoint and the kernel.
    fn check_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Vec<Finding>>;

    /// Start-up, after repair: removes the per-endpoint state of `net` in
    /// the host's tables (routes, proxy entries) that none of its attached
    /// endpoints `eps` owns any more — a detach interrupted before it
    /// finished. Answers what it removed, in words.
    fn sweep(&self, _dp: &dyn Dataplane, _net: &NetworkRecord, _eps: &[&EndpointRecord]) -> DpResult<Vec<String>> {
        Ok(vec![])
    }

    /// Start-up: makes an attached endpoint's objects whole again without
    /// touching what works.
    fn repair_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Repair>;
}

/// The drivers of this build, by network type.
pub struct Registry {
    drivers: Vec<Box<dyn NetworkDriver>>,
}

impl Registry {
    /// Every driver this build has: one line per driver.
    pub fn builtin() -> Self {
        Registry::of(vec![
            Box::new(bridge::Bridge),           // NAT, Internal, Private
            Box::new(transparent::Transparent), // Transparent (macvlan, DHCP, VLAN)
            Box::new(l2bridge::L2Bridge),       // L2Bridge, L2Tunnel
            Box::new(overlay::Overlay),         // Overlay (VXLAN across hosts; endpoints not yet)
        ])
    }

    pub fn of(drivers: Vec<Box<dyn NetworkDriver>>) -> Self {
        Registry { drivers }
    }

    /// The driver of a network type; a type this build lacks is refused here.
    pub fn get(&self, t: NetworkType) -> Result<&dyn NetworkDriver> {
        self.drivers.iter().find(|d| d.types().contains(&t)).map(|d| d.as_ref()).ok_or_else(|| {
            let have: Vec<&str> = self.supported().iter().map(|t| t.as_str()).collect();
            ServiceError::unsupported(format!(
                "network type {t} is not supported by this build yet: use {}",
                have.join(", ")
            ))
        })
    }

    /// The network types this build can program, in the order of [`NetworkType::ALL`].
    pub fn supported(&self) -> Vec<NetworkType> {
        NetworkType::ALL.into_iter().filter(|t| self.drivers.iter().any(|d| d.types().contains(t))).collect()
    }
}

pub(crate) fn network_subject(net: &NetworkRecord) -> Subject {
    Subject::new(SubjectKind::Network, Some(net.id), net.name.to_string())
}

pub(crate) fn endpoint_subject(ep: &EndpointRecord) -> Subject {
    Subject::new(SubjectKind::Endpoint, Some(ep.id), ep.display_name())
}

/// Differences between an endpoint's adapter inside its namespace and its
/// record: the link, its MAC, addresses and routes.
pub(crate) fn check_adapter(
    dp: &dyn Dataplane,
    net: &NetworkRecord,
    ep: &EndpointRecord,
    ns: &NamespaceRecord,
) -> DpResult<Vec<Finding>> {
    let mut out = Vec::new();
    let who = endpoint_subject(ep);
    let name = ep.display_name();
    let addr = bridge::addr;
    let path = &ns.netns_path;
    if !dp.netns_exists(path) {
        return Ok(out);
    }
    let ifname = ep.interface_name.as_str();
    let Some(inside) = dp.inside(path, ifname)? else {
        out.push(Finding::new(
            who,
            FindingKind::Missing,
            format!("endpoint {name}: interface {ifname} is missing in {path}"),
        ));
        return Ok(out);
    };
    if inside.link.mac != Some(Mac(ep.mac.0)) {
        let has = inside.link.mac.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
        out.push(Finding::new(
            who.clone(),
            FindingKind::Mismatch,
            format!("endpoint {name}: {ifname} has MAC {has}, expected {}", ep.mac),
        ));
    }
    for c in &ep.ip_configurations {
        if !inside.addrs.contains(&addr(c.ip_address, c.prefix_length)) {
            out.push(Finding::new(
                who.clone(),
                FindingKind::Missing,
                format!("endpoint {name}: address {}/{} is missing on {ifname}", c.ip_address, c.prefix_length),
            ));
        }
    }
    for want in &ep.all_routes(net) {
        let dst = addr(want.destination_prefix.addr(), want.destination_prefix.prefix_len());
        if !inside.routes.iter().any(|r| r.destination == dst && r.via == want.next_hop) {
            out.push(Finding::new(
                who.clone(),
                FindingKind::Missing,
                format!("endpoint {name}: route {} via {:?} is missing", want.destination_prefix, want.next_hop),
            ));
        }
    }
    Ok(out)
}

/// Runs every step, even after one fails; answers the first error (a
/// detach goes on after an error, and a retry finishes it).
pub(crate) fn all_steps(steps: impl IntoIterator<Item = DpResult<()>>) -> DpResult<()> {
    let mut first = Ok(());
    for r in steps {
        if let Err(e) = r {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// A finding that the uplink of a physical network is missing or down, if it is.
pub(crate) fn check_uplink(net: &NetworkRecord, links: &Links) -> Option<Finding> {
    check_link(net, links, "uplink", net.uplink())
}

/// A finding that the network's host link `name` (`what`: "bridge", "shim",
/// …) is missing or down, if it is.
pub(crate) fn check_link(net: &NetworkRecord, links: &Links, what: &str, name: &str) -> Option<Finding> {
    let (kind, state) = match links.get(name) {
        None => (FindingKind::Missing, "missing"),
        Some(l) if !l.up => (FindingKind::Down, "down"),
        Some(_) => return None,
    };
    Some(Finding::new(network_subject(net), kind, format!("network {}: {what} {name} is {state}", net.name)))
}

/// The uplink's addresses: the host's own on the LAN, never an endpoint's.
pub(crate) fn uplink_addresses(dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<Vec<IpAddr>> {
    Ok(dp.addresses(net.uplink())?.into_iter().map(|a| a.ip).collect())
}

/// The host's IPv4 address for traffic to endpoints of `net`: the uplink's
/// address inside one of the network's subnets, else its first one.
pub(crate) fn host_ipv4(dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<Option<IpAddr>> {
    let addrs = dp.addresses(net.uplink())?;
    let v4: Vec<IpAddr> = addrs.iter().map(|a| a.ip).filter(|ip| ip.is_ipv4()).collect();
    Ok(v4
        .iter()
        .copied()
        .find(|ip| net.subnets.iter().any(|s| s.ip_address_prefix.contains(ip)))
        .or_else(|| v4.first().copied()))
}

/// The fixed MAC of a host-side link cnet makes for network `net`.
pub(crate) fn host_mac(net: &NetworkRecord) -> Mac {
    Mac(net.bridge_mac().0)
}
