//! Bridge-backed networks (NAT, Internal, Private) and their veth endpoints.
//!
//! Invariants:
//! - The bridge has a fixed MAC derived from the network ID, so the gateway's
//!   MAC never changes when ports come and go.
//! - Setting up is idempotent and never re-creates an existing bridge.
//! - An endpoint's kernel state is exactly: a veth pair (inside: the
//!   endpoint's name, MAC, MTU, addresses, routes; outside: `cnv…` on the
//!   bridge) plus its firewall elements, owned by [`crate::firewall`].
//! - A handed-off endpoint (Docker's `Join`) has the same pair, made with
//!   its container end in cnetd's own namespace ([`OWN_NETNS`]) and
//!   configured by the runtime: cnet checks and repairs only the host end.

use cnet_dataplane::{Addr, IfName, Mac, Route};
use cnet_model::NetworkType;
use cnet_model::VmNicOptions;

use super::{endpoint_subject, network_subject};
use super::{Links, NetworkDriver, Repair};
use crate::dataplane::{BridgeSpec, Dataplane, DpResult, FwElem, PortFlags, TapSpec, VethSpec};
use crate::firewall;
use crate::state::{EndpointRecord, NamespaceRecord, NetworkRecord};
use cnet_model::findings::{Finding, FindingKind};

pub struct Bridge;

/// cnetd's own network namespace, where a handed-off endpoint's container
/// end is left (and where the runtime that takes it runs).
pub const OWN_NETNS: &str = "/proc/self/ns/net";

pub(super) fn name(s: &str) -> DpResult<IfName> {
    IfName::new(s)
}

pub(super) fn addr(ip: std::net::IpAddr, prefix_len: u8) -> Addr {
    Addr { ip, prefix_len }
}

pub(crate) fn route(r: &cnet_model::Route) -> Route {
    Route {
        destination: addr(r.destination_prefix.addr(), r.destination_prefix.prefix_len()),
        via: r.next_hop,
        metric: r.metric,
    }
}

pub(super) fn bridge_spec(net: &NetworkRecord) -> DpResult<BridgeSpec> {
    Ok(BridgeSpec {
        name: name(&net.bridge)?,
        mac: Mac(net.bridge_mac().0),
        mtu: net.mtu(),
        addrs: net.gateways().map(|(s, gw)| addr(gw, s.ip_address_prefix.prefix_len())).collect(),
    })
}

pub(super) fn veth_spec(ep: &EndpointRecord, net: &NetworkRecord, netns_path: &str) -> DpResult<VethSpec> {
    Ok(VethSpec {
        netns_path: netns_path.to_string(),
        ifname: name(ep.interface_name.as_str())?,
        host_name: name(&ep.host_interface_name)?,
        bridge: name(&net.bridge)?,
        mac: Some(Mac(ep.mac.0)),
        mtu: ep.effective_mtu(net),
        addrs: ep.ip_configurations.iter().map(|c| addr(c.ip_address, c.prefix_length)).collect(),
        routes: ep.all_routes(net).iter().map(route).collect(),
        port: port_flags(net),
    })
}

/// NAT bridge ports may send frames back out the port they came in on: a
/// container reaching its own published port (NAT loopback) with
/// br_netfilter bridging the DNAT'd frame. L2Tunnel ports are isolated from
/// each other: every frame goes through the host (and on to the LAN).
pub(super) fn port_flags(net: &NetworkRecord) -> PortFlags {
    PortFlags { hairpin: net.kind == NetworkType::Nat, isolated: net.kind == NetworkType::L2Tunnel }
}

impl NetworkDriver for Bridge {
    fn types(&self) -> &'static [NetworkType] {
        &[NetworkType::Nat, NetworkType::Internal, NetworkType::Private]
    }

    fn setup(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        if dp.releasing() && dp.link(&net.bridge)?.is_some() {
            // The bridge of this network's previous life, still being
            // deleted: wait, rather than adopt what the reaper will delete.
            dp.settle();
        }
        dp.ensure_bridge(&bridge_spec(net)?)?;
        let has_v6 = net.subnets.iter().any(|s| s.ip_address_prefix.addr().is_ipv6());
        match net.kind {
            NetworkType::Nat => {
                dp.sysctl_set("net/ipv4/ip_forward", "1")?;
                if has_v6 {
                    dp.sysctl_set("net/ipv6/conf/all/forwarding", "1")?;
                }
                // Lets the host publish to 127.0.0.1 through this bridge only;
                // the firewall's `martians` chain drops 127/8 arriving from outside.
                dp.sysctl_set(&format!("net/ipv4/conf/{}/route_localnet", net.bridge), "1")?;
            }
            NetworkType::Private => {
                // No host address at all, not even link-local.
                dp.sysctl_set(&format!("net/ipv6/conf/{}/disable_ipv6", net.bridge), "1")?;
            }
            _ => {}
        }
        Ok(())
    }

    fn update(&self, dp: &dyn Dataplane, old: &NetworkRecord, new: &NetworkRecord) -> DpResult<()> {
        self.setup(dp, new)?;
        let kept = |p: &ipnet::IpNet| new.subnets.iter().any(|s| s.ip_address_prefix == *p);
        for (s, gw) in old.gateways().filter(|(s, _)| !kept(&s.ip_address_prefix)) {
            dp.delete_address(&new.bridge, addr(gw, s.ip_address_prefix.prefix_len()))?;
        }
        Ok(())
    }

    /// The bridge is cut off at once (down: its subnet routes go) and
    /// deleted in the background, as endpoints' veths are: deleting a
    /// bridge waits ~40 ms for the kernel's RCU grace periods, and a
    /// runtime's network that goes with its last container pays it on
    /// every container stop.
    fn teardown(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        dp.release_link(&net.bridge)
    }

    fn firewall(&self, net: &NetworkRecord) -> Vec<FwElem> {
        let subnets: Vec<ipnet::IpNet> = net.subnets.iter().map(|s| s.ip_address_prefix).collect();
        firewall::switch_elems(&net.bridge, (net.kind == NetworkType::Nat).then_some(&subnets[..]))
    }

    /// When the host name is taken by a pair the reaper has not deleted yet
    /// (an endpoint re-attached right after a detach), waits for the reaper
    /// and tries once more.
    fn attach(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, netns_path: &str) -> DpResult<()> {
        let spec = veth_spec(ep, net, netns_path)?;
        match dp.create_veth(&spec) {
            Err(e) if e.kind() == cnet_dataplane::ErrorKind::Exists && dp.releasing() => {
                dp.settle();
                dp.create_veth(&spec)
            }
            result => result,
        }
    }

    /// The pair is made "inside" cnetd's own namespace: both ends appear
    /// there, the container end configured with nothing (the runtime moves,
    /// renames, addresses and routes it).
    fn hand_off(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, peer: &str) -> DpResult<()> {
        let spec = VethSpec { ifname: name(peer)?, addrs: vec![], routes: vec![], ..veth_spec(ep, net, OWN_NETNS)? };
        match dp.create_veth(&spec) {
            Err(e) if e.kind() == cnet_dataplane::ErrorKind::Exists && dp.releasing() => {
                dp.settle();
                dp.create_veth(&spec)
            }
            result => result,
        }
    }

    fn vm_nics(&self) -> bool {
        true
    }

    /// A persistent TAP named like a veth's host side, with vnet headers,
    /// on the bridge with the same port flags.
    fn attach_vm(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        vm: &VmNicOptions,
    ) -> DpResult<Option<String>> {
        let spec = TapSpec {
            name: name(&ep.host_interface_name)?,
            vnet_hdr: true,
            multi_queue: vm.multi_queue,
            owner: vm.owner,
            group: vm.group,
        };
        let mtu = ep.effective_mtu(net);
        match dp.create_tap(&spec, mtu, &net.bridge, port_flags(net)) {
            Err(e) if e.kind() == cnet_dataplane::ErrorKind::Exists && dp.releasing() => {
                dp.settle();
                dp.create_tap(&spec, mtu, &net.bridge, port_flags(net))
            }
            result => result,
        }
        .map(|_| None)
    }

    /// Deleting the host side removes both ends (and a TAP, with its VMM's hold on it).
    fn detach(
        &self,
        dp: &dyn Dataplane,
        _net: &NetworkRecord,
        ep: &EndpointRecord,
        _netns: Option<&str>,
    ) -> DpResult<()> {
        dp.release_link(&ep.host_interface_name)
    }

    fn network_links(&self, net: &NetworkRecord) -> Vec<String> {
        vec![net.bridge.clone()]
    }

    fn endpoint_links(&self, ep: &EndpointRecord) -> Vec<String> {
        vec![ep.host_interface_name.clone()]
    }

    fn check_network(&self, dp: &dyn Dataplane, net: &NetworkRecord, links: &Links) -> DpResult<Vec<Finding>> {
        let mut out = Vec::new();
        let who = network_subject(net);
        let bridge = &net.bridge;
        let Some(l) = links.get(bridge) else {
            out.push(Finding::new(
                who,
                FindingKind::Missing,
                format!("network {}: bridge {bridge} is missing", net.name),
            ));
            return Ok(out);
        };
        if l.kind.as_deref() != Some("bridge") {
            out.push(Finding::new(
                who.clone(),
                FindingKind::Mismatch,
                format!("network {}: {bridge} is not a bridge", net.name),
            ));
        }
        if !l.up {
            out.push(Finding::new(
                who.clone(),
                FindingKind::Down,
                format!("network {}: bridge {bridge} is down", net.name),
            ));
        }
        let addrs = dp.addresses(bridge)?;
        for (s, gw) in net.gateways() {
            let len = s.ip_address_prefix.prefix_len();
            if !addrs.contains(&addr(gw, len)) {
                out.push(Finding::new(
                    who.clone(),
                    FindingKind::Missing,
                    format!("network {}: gateway {gw}/{len} is missing on {bridge}", net.name),
                ));
            }
        }
        if net.kind == NetworkType::Nat && dp.sysctl_get("net/ipv4/ip_forward").as_deref() != Some("1") {
            out.push(Finding::new(
                who,
                FindingKind::Mismatch,
                format!("network {}: net.ipv4.ip_forward is off", net.name),
            ));
        }
        Ok(out)
    }

    fn check_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Vec<Finding>> {
        let mut out = Vec::new();
        let who = endpoint_subject(ep);
        let name = ep.display_name();
        let host = &ep.host_interface_name;
        match links.get(host) {
            None => out.push(Finding::new(
                who.clone(),
                FindingKind::Missing,
                format!("endpoint {name}: host interface {host} is missing"),
            )),
            Some(l) if l.master.as_deref() != Some(net.bridge.as_str()) => out.push(Finding::new(
                who.clone(),
                FindingKind::Mismatch,
                format!("endpoint {name}: {host} is not on bridge {}", net.bridge),
            )),
            Some(l) if !l.up => {
                out.push(Finding::new(who.clone(), FindingKind::Down, format!("endpoint {name}: {host} is down")))
            }
            Some(_) => {}
        }
        // A handed-off adapter is the runtime's inside: nothing to compare.
        if ep.handed_off.is_none() {
            out.extend(super::check_adapter(dp, net, ep, ns)?);
        }
        Ok(out)
    }

    fn repair_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Repair> {
        let host = &ep.host_interface_name;
        if let Some(l) = links.get(host) {
            // A bridge deleted by hand leaves its ports without a master.
            if l.master.as_deref() != Some(net.bridge.as_str()) || !l.up {
                dp.enslave(host, &net.bridge, port_flags(net))?;
                return Ok(Repair::Repaired(format!("bridge port {host} of endpoint {}", ep.display_name())));
            }
            return Ok(Repair::Intact);
        }
        if ep.handed_off.is_some() {
            // Its container end went with the runtime's sandbox: only the
            // runtime can make it again.
            return Ok(Repair::Degraded(format!(
                "the veth handed off to the runtime is gone ({host}): restart the container"
            )));
        }
        if ns.kind.is_guest() {
            return match self.attach_vm(dp, net, ep, &ns.vm_nic.clone().unwrap_or_default()) {
                Ok(_) => Ok(Repair::Repaired(format!("TAP of VM endpoint {}", ep.display_name()))),
                Err(e) => Ok(Repair::Degraded(e.to_string())),
            };
        }
        if !dp.netns_exists(&ns.netns_path) {
            return Ok(Repair::Degraded(format!("namespace {} is gone", ns.netns_path)));
        }
        // Half a pair cannot exist (veths die in pairs), but a same-named
        // link from someone else might: leave it and report it.
        match self.attach(dp, net, ep, &ns.netns_path) {
            Ok(()) => Ok(Repair::Repaired(format!("veth of endpoint {}", ep.display_name()))),
            Err(e) => Ok(Repair::Degraded(e.to_string())),
        }
    }
}
