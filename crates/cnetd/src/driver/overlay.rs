//! The Overlay driver (in progress, issue 11). A network is, on each host,
//! a VXLAN device `cnx…` (no learning, the network's port, this host's
//! provider address as source and its VTEP MAC) and a gateway bridge `cnb…`
//! with the same MAC on every host (`DrMacAddress`, else derived from the
//! network ID, which every host shares) and the gateway addresses; local
//! endpoints are veths on that bridge (not yet: they need addresses from
//! this host's blocks). What the VXLAN device must hold for the **remote
//! hosts** of the cluster view is [`wanted`], and [`plan`] the changes that
//! take the kernel there.
//!
//! Invariants:
//! - Per remote host with blocks of the network: one permanent neighbour
//!   (its VTEP's link-local address → its VTEP MAC), one FDB entry (its VTEP
//!   MAC → its provider address), one route per block via that neighbour.
//!   Entries grow with hosts, never with remote endpoints.
//! - [`plan`] is a pure function of what is wanted and what the kernel has:
//!   adds go neighbour, FDB, routes (a route never points at a next hop the
//!   kernel cannot resolve); removals go routes, FDB, neighbours. An entry
//!   that is already right is not touched, so a change to one host never
//!   disturbs the traffic of another.
//! - A host whose VTEP MAC cannot be read is left out (and reported), never
//!   half programmed.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cnet_cluster::view::RemoteHost;
use cnet_dataplane::netlink::overlay::{vtep_link_local, VxlanSpec};
use cnet_dataplane::{Addr, Mac};
use cnet_model::{Finding, NetworkType};

use super::bridge::{bridge_spec, Bridge};
use super::{Links, NetworkDriver, Repair};
use crate::dataplane::{Dataplane, DpResult, FwElem};
use crate::state::{EndpointRecord, NamespaceRecord, NetworkRecord};

/// The default VXLAN port (IANA).
pub const VXLAN_PORT: u16 = 4789;

/// The network's VXLAN device: `cnx` + the bridge's 10 hex digits.
pub fn vxlan_name(net: &NetworkRecord) -> String {
    format!("cnx{}", &net.bridge[3..])
}

fn not_ready(what: String) -> cnet_dataplane::DataplaneError {
    cnet_dataplane::DataplaneError::Netlink { what, source: std::io::Error::from_raw_os_error(libc::ENOTCONN) }
}

fn vxlan_spec(net: &NetworkRecord) -> DpResult<VxlanSpec> {
    let host = net.overlay_host.as_ref().ok_or_else(|| {
        not_ready(format!("network {}: this host has no tunnel end (is cnetd in a cluster?)", net.name))
    })?;
    Ok(VxlanSpec {
        name: vxlan_name(net),
        vni: net.vni().ok_or_else(|| not_ready(format!("network {}: no VSID", net.name)))?,
        port: net.vxlan_port.unwrap_or(VXLAN_PORT),
        local: host.provider,
        uplink: net.uplink.as_ref().map(|u| u.to_string()),
        mac: Mac(host.vtep_mac.0),
        mtu: net.mtu(),
    })
}

/// A remote endpoint (`Flags: RemoteEndpoint`): addresses with a MAC behind
/// a provider address (another host, or a hardware VTEP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub ips: Vec<IpAddr>,
    pub mac: Mac,
    pub provider: IpAddr,
}

/// Brings network `net`'s VXLAN device to the entries of `remotes` (the
/// registered other hosts with blocks of it) and of its remote endpoints
/// `eps`; answers the changes made and the hosts left out.
pub fn sync_remotes(
    dp: &dyn Dataplane,
    net: &NetworkRecord,
    remotes: &[RemoteHost],
    eps: &[RemoteEndpoint],
) -> DpResult<(Vec<Op>, Vec<String>)> {
    let dev = vxlan_name(net);
    let (mut want, skipped) = wanted(remotes);
    add_remote_endpoints(&mut want, eps);
    let ops = plan(&want, &dp.overlay_entries(&dev)?);
    for op in &ops {
        dp.apply_overlay(&dev, op)?;
    }
    Ok((ops, skipped))
}

pub struct Overlay;

impl NetworkDriver for Overlay {
    fn types(&self) -> &'static [NetworkType] {
        &[NetworkType::Overlay]
    }

    fn setup(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        dp.ensure_vxlan(&vxlan_spec(net)?)?;
        let mut gateway = bridge_spec(net)?;
        if let Some(mac) = net.dr_mac {
            gateway.mac = Mac(mac.0);
        }
        dp.ensure_bridge(&gateway)?;
        dp.sysctl_set("net/ipv4/ip_forward", "1")?;
        // Endpoints reach each other through the gateway, in and out of the
        // same bridge: that is the design, not a route to correct.
        dp.sysctl_set(&format!("net/ipv4/conf/{}/send_redirects", net.bridge), "0")?;
        if net.subnets.iter().any(|s| s.ip_address_prefix.addr().is_ipv6()) {
            dp.sysctl_set("net/ipv6/conf/all/forwarding", "1")?;
        }
        Ok(())
    }

    fn update(&self, dp: &dyn Dataplane, _old: &NetworkRecord, new: &NetworkRecord) -> DpResult<()> {
        self.setup(dp, new)
    }

    fn teardown(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        super::all_steps([dp.delete_link(&vxlan_name(net)), dp.delete_link(&net.bridge)])
    }

    /// The gateway bridge and the VXLAN device are one switch: frames pass
    /// between them and no other network's; outbound traffic is NATed to the
    /// host's address except towards the overlay's own subnets (those leave
    /// through the tunnel, which is in `bridges`).
    fn firewall(&self, net: &NetworkRecord) -> Vec<FwElem> {
        let subnets: Vec<ipnet::IpNet> = net.subnets.iter().map(|s| s.ip_address_prefix).collect();
        let mut out = crate::firewall::switch_elems(&net.bridge, Some(&subnets));
        let (br, vx) = (&net.bridge, vxlan_name(net));
        out.push(FwElem { set: "bridges", key: format!("\"{vx}\""), value: None });
        for (from, to) in [(br, &vx), (&vx, br)] {
            out.push(FwElem { set: "intra", key: format!("\"{from}\" . \"{to}\""), value: None });
        }
        out
    }

    /// A veth on the gateway bridge, routed inside (`service::overlay`).
    fn attach(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, netns_path: &str) -> DpResult<()> {
        Bridge.attach(dp, net, ep, netns_path)
    }

    fn detach(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        netns: Option<&str>,
    ) -> DpResult<()> {
        Bridge.detach(dp, net, ep, netns)
    }

    fn network_links(&self, net: &NetworkRecord) -> Vec<String> {
        vec![net.bridge.clone(), vxlan_name(net)]
    }

    fn endpoint_links(&self, ep: &EndpointRecord) -> Vec<String> {
        Bridge.endpoint_links(ep)
    }

    fn check_network(&self, dp: &dyn Dataplane, net: &NetworkRecord, links: &Links) -> DpResult<Vec<Finding>> {
        let mut out = Bridge.check_network(dp, net, links)?;
        out.extend(super::check_link(net, links, "VXLAN device", &vxlan_name(net)));
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
        Bridge.check_endpoint(dp, net, ep, ns, links)
    }

    fn repair_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Repair> {
        Bridge.repair_endpoint(dp, net, ep, ns, links)
    }
}

pub use crate::dataplane::{OverlayEntries as Entries, OverlayOp as Op};

/// What the device must hold for `remotes`; answers the hosts left out
/// (their VTEP MAC does not parse).
pub fn wanted(remotes: &[RemoteHost]) -> (Entries, Vec<String>) {
    let mut e = Entries::default();
    let mut skipped = Vec::new();
    for r in remotes {
        let Ok(mac) = r.host.vtep_mac.parse::<cnet_model::MacAddr>() else {
            skipped
                .push(format!("host {} ({}): VTEP MAC {:?} is not a MAC", r.host.id, r.host.hostname, r.host.vtep_mac));
            continue;
        };
        let mac = Mac(mac.0);
        let ll = vtep_link_local(mac);
        e.neighbours.insert((IpAddr::V6(ll), mac));
        e.fdb.insert((mac, r.host.provider_address));
        for b in &r.blocks {
            e.routes.insert((Addr { ip: b.addr(), prefix_len: b.prefix_len() }, ll));
        }
    }
    (e, skipped)
}

/// A remote endpoint costs what a remote host does, once: a neighbour (the
/// link-local address of its MAC), an FDB entry to its provider address,
/// and a host route per address via that neighbour — so frames reach it
/// addressed to its own MAC, as a hardware VTEP expects.
pub fn add_remote_endpoints(want: &mut Entries, eps: &[RemoteEndpoint]) {
    for ep in eps {
        let ll = vtep_link_local(ep.mac);
        want.neighbours.insert((IpAddr::V6(ll), ep.mac));
        want.fdb.insert((ep.mac, ep.provider));
        for ip in &ep.ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            want.routes.insert((Addr { ip: *ip, prefix_len: len }, ll));
        }
    }
}

/// The changes that take `have` to `want`.
pub fn plan(want: &Entries, have: &Entries) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(want.neighbours.difference(&have.neighbours).map(|(ip, mac)| Op::AddNeighbour(*ip, *mac)));
    ops.extend(want.fdb.difference(&have.fdb).map(|(mac, dst)| Op::AddFdb(*mac, *dst)));
    ops.extend(want.routes.difference(&have.routes).map(|(dst, via)| Op::AddRoute(*dst, *via)));
    ops.extend(have.routes.difference(&want.routes).map(|(dst, via)| Op::DeleteRoute(*dst, *via)));
    ops.extend(have.fdb.difference(&want.fdb).map(|(mac, dst)| Op::DeleteFdb(*mac, *dst)));
    // A neighbour replaced in place (same address, new MAC) is not deleted.
    let kept: BTreeSet<IpAddr> = want.neighbours.iter().map(|(ip, _)| *ip).collect();
    ops.extend(
        have.neighbours
            .difference(&want.neighbours)
            .filter(|(ip, _)| !kept.contains(ip))
            .map(|(ip, _)| Op::DeleteNeighbour(*ip)),
    );
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnet_cluster::Host;
    use uuid::Uuid;

    fn remote(n: u8, provider: &str, blocks: &[&str]) -> RemoteHost {
        RemoteHost {
            host: Host {
                id: Uuid::from_u128(n as u128),
                hostname: format!("h{n}"),
                provider_address: provider.parse().unwrap(),
                vtep_mac: format!("02:00:00:00:00:{n:02x}"),
            },
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_new_host_gets_its_neighbour_then_its_fdb_entry_then_its_routes() {
        let (want, skipped) = wanted(&[remote(2, "192.168.77.2", &["10.99.1.0/26", "fd99::40/122"])]);
        assert!(skipped.is_empty());
        let ops = plan(&want, &Entries::default());
        let mac = Mac([2, 0, 0, 0, 0, 2]);
        let ll = vtep_link_local(mac);
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[0], Op::AddNeighbour(IpAddr::V6(ll), mac));
        assert_eq!(ops[1], Op::AddFdb(mac, "192.168.77.2".parse().unwrap()));
        assert!(matches!(ops[2], Op::AddRoute(_, via) if via == ll) && matches!(ops[3], Op::AddRoute(_, _)));
        assert!(plan(&want, &want).is_empty(), "nothing to do when the kernel has it all");
    }

    #[test]
    fn a_departed_host_goes_routes_first_and_the_others_are_untouched() {
        let both = [remote(2, "192.168.77.2", &["10.99.1.0/26"]), remote(3, "192.168.77.3", &["10.99.1.64/26"])];
        let (have, _) = wanted(&both);
        let (want, _) = wanted(&both[..1]);
        let ops = plan(&want, &have);
        let mac3 = Mac([2, 0, 0, 0, 0, 3]);
        assert_eq!(
            ops,
            vec![
                Op::DeleteRoute(Addr { ip: "10.99.1.64".parse().unwrap(), prefix_len: 26 }, vtep_link_local(mac3)),
                Op::DeleteFdb(mac3, "192.168.77.3".parse().unwrap()),
                Op::DeleteNeighbour(IpAddr::V6(vtep_link_local(mac3))),
            ]
        );
    }

    #[test]
    fn a_host_that_moved_gets_a_new_fdb_entry_and_a_new_block_a_route_only() {
        let (have, _) = wanted(&[remote(2, "192.168.77.2", &["10.99.1.0/26"])]);
        let (want, _) = wanted(&[remote(2, "192.168.77.22", &["10.99.1.0/26", "10.99.1.128/26"])]);
        let ops = plan(&want, &have);
        let mac = Mac([2, 0, 0, 0, 0, 2]);
        assert_eq!(
            ops,
            vec![
                Op::AddFdb(mac, "192.168.77.22".parse().unwrap()),
                Op::AddRoute(Addr { ip: "10.99.1.128".parse().unwrap(), prefix_len: 26 }, vtep_link_local(mac)),
                Op::DeleteFdb(mac, "192.168.77.2".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn a_remote_endpoint_is_one_neighbour_one_fdb_entry_and_a_host_route_per_address() {
        let mac = Mac([2, 0, 0, 0, 0xab, 1]);
        let ep = RemoteEndpoint {
            ips: vec!["10.99.200.5".parse().unwrap(), "fd99::c8:5".parse().unwrap()],
            mac,
            provider: "192.168.77.100".parse().unwrap(),
        };
        let mut want = Entries::default();
        add_remote_endpoints(&mut want, &[ep]);
        let ll = vtep_link_local(mac);
        assert_eq!(want.neighbours.into_iter().collect::<Vec<_>>(), vec![(IpAddr::V6(ll), mac)]);
        assert_eq!(want.fdb.into_iter().collect::<Vec<_>>(), vec![(mac, "192.168.77.100".parse().unwrap())]);
        let routes: Vec<String> = want.routes.iter().map(|(a, _)| format!("{}/{}", a.ip, a.prefix_len)).collect();
        assert_eq!(routes, vec!["10.99.200.5/32", "fd99::c8:5/128"]);
    }

    #[test]
    fn a_host_with_a_bad_vtep_mac_is_left_out_whole() {
        let mut bad = remote(4, "192.168.77.4", &["10.99.2.0/26"]);
        bad.host.vtep_mac = "not-a-mac".into();
        let (want, skipped) = wanted(&[bad]);
        assert_eq!(want, Entries::default());
        assert!(skipped[0].contains("not a MAC"), "{skipped:?}");
    }
}
