//! The overlay's kernel objects ("L3 VXLAN"): a VXLAN device per overlay
//! network, and per **remote host** — never per remote endpoint — one
//! permanent neighbour (the link-local address derived from its VTEP MAC →
//! that MAC), one FDB entry (its VTEP MAC → its provider address) and one
//! route per address block it holds, via that link-local next hop (IPv6
//! blocks by gateway, IPv4 blocks by `RTA_VIA`, an IPv6 next hop for an
//! IPv4 route). One neighbour thus serves both families and no address of
//! the overlay subnet is spent on next hops.
//!
//! Invariants (as for every [`Rtnl`] request): adds replace an equal entry
//! and succeed when it is there; deletes succeed when it is gone. A VXLAN
//! device never learns (`nolearning`) and floods nothing: without an
//! all-zeros FDB entry, a frame to an unknown MAC is dropped. The UDP port
//! is always set (the kernel's default, 8472, is not the IANA 4789).
//! Add in the order neighbour, FDB, routes; remove in reverse.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo as NlLinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{by_name, failed, family, is_not_found, Rtnl};
use crate::{Addr, Mac, Result};

/// The routing protocol number on overlay routes, so that they are told
/// from every other route on a dump (`ip route show proto 73`).
pub const OVERLAY_PROTOCOL: u8 = 73;

/// An overlay network's VXLAN device on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    /// The VNI (HCN `VSID`), 24 bits.
    pub vni: u32,
    /// The UDP port (4789 unless the network says otherwise).
    pub port: u16,
    /// This host's provider address, the tunnel's source.
    pub local: IpAddr,
    /// The underlay link the tunnel leaves by (else the route to each peer decides).
    pub uplink: Option<String>,
    /// This host's VTEP MAC (stable across restarts).
    pub mac: Mac,
    pub mtu: u32,
}

/// The IPv6 link-local address a VTEP MAC stands for (modified EUI-64, as
/// SLAAC derives it): every host computes a peer's next hop from its MAC.
pub fn vtep_link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// An FDB entry of a VXLAN device: `mac` is behind provider address `dst`.
fn fdb_message(index: u32, mac: Mac, dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m.attributes.push(NeighbourAttribute::Destination(neighbour_address(dst)));
    m
}

/// A permanent neighbour: `ip` is at `mac` on the link.
fn neighbour_message(index: u32, ip: IpAddr, mac: Option<Mac>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(&ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(NeighbourAttribute::Destination(neighbour_address(ip)));
    if let Some(mac) = mac {
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

/// A route to `dst` on link `index` via the link-local `via`.
fn route_message(index: u32, dst: Addr, via: Ipv6Addr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst.ip);
    m.header.destination_prefix_length = dst.prefix_len;
    m.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Other(OVERLAY_PROTOCOL);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst.ip)));
    m.attributes.push(match dst.ip {
        IpAddr::V6(_) => RouteAttribute::Gateway(RouteAddress::Inet6(via)),
        IpAddr::V4(_) => RouteAttribute::Via(RouteVia::Inet6(via)),
    });
    m.attributes.push(RouteAttribute::Oif(index));
    m
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok().map(Mac)
}

impl Rtnl {
    /// Creates the VXLAN device of `s` (down): no learning, no miss
    /// notifications, its port set, its source the provider address.
    pub fn add_vxlan(&mut self, s: &VxlanSpec) -> Result<()> {
        let mut data = vec![
            InfoVxlan::Id(s.vni),
            InfoVxlan::Port(s.port),
            InfoVxlan::Learning(false),
            InfoVxlan::L2Miss(false),
            InfoVxlan::L3Miss(false),
        ];
        if let Some(uplink) = &s.uplink {
            data.push(InfoVxlan::Link(self.require_index(uplink)?));
        }
        data.push(match s.local {
            IpAddr::V4(v4) => InfoVxlan::Local(v4),
            IpAddr::V6(v6) => InfoVxlan::Local6(v6),
        });
        let mut m = by_name(&s.name);
        m.attributes.push(LinkAttribute::Address(s.mac.0.to_vec()));
        m.attributes.push(LinkAttribute::Mtu(s.mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Vxlan),
            NlLinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        self.request(
            || format!("creating VXLAN device {} (VNI {}, port {}, from {})", s.name, s.vni, s.port, s.local),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Points VTEP MAC `mac` at provider address `dst` on VXLAN device `dev`.
    pub fn replace_fdb(&mut self, dev: &str, mac: Mac, dst: IpAddr) -> Result<()> {
        let index = self.require_index(dev)?;
        self.request(
            || format!("adding FDB entry {mac} → {dst} on {dev}"),
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, dst)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes an FDB entry; succeeds when it is gone.
    pub fn delete_fdb(&mut self, dev: &str, mac: Mac, dst: IpAddr) -> Result<()> {
        let Some(index) = self.index(dev)? else { return Ok(()) };
        match self.exchange(RouteNetlinkMessage::DelNeighbour(fdb_message(index, mac, dst)), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(failed(format!("deleting FDB entry {mac} → {dst} on {dev}"), e)),
        }
    }

    /// The FDB entries of `dev` that point somewhere (MAC → provider address).
    pub fn fdb(&mut self, dev: &str) -> Result<Vec<(Mac, IpAddr)>> {
        let Some(index) = self.index(dev)? else { return Ok(vec![]) };
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Bridge;
        let answers = self
            .exchange(RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)
            .map_err(|e| failed("listing FDB entries", e))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    let mac = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(b) => mac_of(b),
                        _ => None,
                    })?;
                    // In the bridge family the kernel's NDA_DST comes up as raw bytes.
                    let dst = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
                            4 => <[u8; 4]>::try_from(&b[..]).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(&b[..]).ok().map(IpAddr::from),
                            _ => None,
                        },
                        _ => None,
                    })?;
                    Some((mac, dst))
                }
                _ => None,
            })
            .collect())
    }

    /// Makes `ip` a permanent neighbour at `mac` on `dev`.
    pub fn replace_neighbour(&mut self, dev: &str, ip: IpAddr, mac: Mac) -> Result<()> {
        let index = self.require_index(dev)?;
        self.request(
            || format!("adding neighbour {ip} at {mac} on {dev}"),
            RouteNetlinkMessage::NewNeighbour(neighbour_message(index, ip, Some(mac))),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes a neighbour entry; succeeds when it is gone.
    pub fn delete_neighbour(&mut self, dev: &str, ip: IpAddr) -> Result<()> {
        let Some(index) = self.index(dev)? else { return Ok(()) };
        match self.exchange(RouteNetlinkMessage::DelNeighbour(neighbour_message(index, ip, None)), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(failed(format!("deleting neighbour {ip} on {dev}"), e)),
        }
    }

    /// The permanent neighbours of `dev` (not proxy entries).
    pub fn permanent_neighbours(&mut self, dev: &str) -> Result<Vec<(IpAddr, Mac)>> {
        let Some(index) = self.index(dev)? else { return Ok(vec![]) };
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = NeighbourMessage::default();
            q.header.family = fam;
            let answers = self
                .exchange(RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)
                .map_err(|e| failed("listing neighbours", e))?;
            out.extend(answers.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n)
                    if n.header.ifindex == index
                        && n.header.state == NeighbourState::Permanent
                        && !n.header.flags.contains(NeighbourFlags::Proxy) =>
                {
                    let ip = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                        _ => None,
                    })?;
                    let mac = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(b) => mac_of(b),
                        _ => None,
                    })?;
                    Some((ip, mac))
                }
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Routes block `dst` through VXLAN device `dev` via the link-local
    /// next hop `via` (a remote host's VTEP).
    pub fn replace_overlay_route(&mut self, dev: &str, dst: Addr, via: Ipv6Addr) -> Result<()> {
        let index = self.require_index(dev)?;
        self.request(
            || format!("adding overlay route {}/{} via {via} on {dev}", dst.ip, dst.prefix_len),
            RouteNetlinkMessage::NewRoute(route_message(index, dst, via)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes an overlay route; succeeds when it is gone.
    pub fn delete_overlay_route(&mut self, dev: &str, dst: Addr, via: Ipv6Addr) -> Result<()> {
        let Some(index) = self.index(dev)? else { return Ok(()) };
        match self.exchange(RouteNetlinkMessage::DelRoute(route_message(index, dst, via)), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                Err(failed(format!("deleting overlay route {}/{} via {via} on {dev}", dst.ip, dst.prefix_len), e))
            }
        }
    }

    /// The overlay routes on `dev` (by [`OVERLAY_PROTOCOL`]): block → next hop.
    pub fn overlay_routes(&mut self, dev: &str) -> Result<Vec<(Addr, Ipv6Addr)>> {
        let Some(index) = self.index(dev)? else { return Ok(vec![]) };
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = fam;
            let answers =
                self.exchange(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP).map_err(|e| failed("listing routes", e))?;
            out.extend(answers.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.protocol == RouteProtocol::Other(OVERLAY_PROTOCOL) => {
                    let oif = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    });
                    if oif != Some(index) {
                        return None;
                    }
                    let dst = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                        _ => None,
                    })?;
                    let via = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(*v6),
                        RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(*v6),
                        _ => None,
                    })?;
                    Some((Addr { ip: dst, prefix_len: r.header.destination_prefix_length }, via))
                }
                _ => None,
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{in_private_netns, NamedNetns};
    use std::fs::File;
    use std::net::Ipv4Addr;
    use std::process::Command;

    fn addr(s: &str) -> Addr {
        let (ip, len) = s.split_once('/').unwrap();
        Addr { ip: ip.parse().unwrap(), prefix_len: len.parse().unwrap() }
    }

    /// One overlay host: underlay address `provider` on `ul0`, VXLAN `vx0`
    /// with `mac`, its own endpoint addresses on a gateway bridge.
    fn host(nl: &mut Rtnl, provider: Ipv4Addr, mac: Mac, own: &[&str]) {
        nl.add_address("ul0", &addr(&format!("{provider}/24")), false).unwrap();
        nl.set_up("ul0", true).unwrap();
        let spec = VxlanSpec {
            name: "vx0".into(),
            vni: 42,
            port: 4789,
            local: IpAddr::V4(provider),
            uplink: Some("ul0".into()),
            mac,
            mtu: 1450,
        };
        nl.add_vxlan(&spec).unwrap();
        nl.set_up("vx0", true).unwrap();
        nl.add_bridge("gw0", Mac([0x0a, 0x58, 0xdd, 0, 0, 1]), 1450).unwrap();
        nl.set_up("gw0", true).unwrap();
        for a in own {
            nl.add_address("gw0", &addr(a), false).unwrap();
        }
    }

    /// The objects for remote host (`mac`, `provider`) holding `blocks`.
    fn remote(nl: &mut Rtnl, mac: Mac, provider: Ipv4Addr, blocks: &[&str]) {
        let ll = vtep_link_local(mac);
        nl.replace_neighbour("vx0", IpAddr::V6(ll), mac).unwrap();
        nl.replace_fdb("vx0", mac, IpAddr::V4(provider)).unwrap();
        for b in blocks {
            nl.replace_overlay_route("vx0", addr(b), ll).unwrap();
        }
    }

    fn ping(from: &str, to: &str) -> bool {
        Command::new("ping")
            .args(["-c", "1", "-W", "1", "-I", from, to])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    #[test]
    fn two_hosts_reach_each_others_blocks_both_families_through_one_neighbour_and_one_fdb_entry() {
        in_private_netns(|| {
            let b = NamedNetns::new();
            let (mac_a, mac_b) = (Mac([0x02, 0, 0, 0, 0, 0x0a]), Mac([0x02, 0, 0, 0, 0, 0x0b]));
            let (pa, pb) = (Ipv4Addr::new(192, 168, 77, 1), Ipv4Addr::new(192, 168, 77, 2));
            let mut nl = Rtnl::open().unwrap();
            nl.add_veth("ul0", None, 1500, "ul0", &File::open(&b.path).unwrap()).unwrap();
            host(&mut nl, pa, mac_a, &["10.99.1.1/32", "fd99:0:0:1::1/128"]);
            let mut nlb = Rtnl::open_in(&b.path).unwrap();
            nlb.set_up("lo", true).unwrap();
            host(&mut nlb, pb, mac_b, &["10.99.2.1/32", "fd99:0:0:2::1/128"]);
            remote(&mut nl, mac_b, pb, &["10.99.2.0/26", "fd99:0:0:2::/64"]);
            remote(&mut nlb, mac_a, pa, &["10.99.1.0/26", "fd99:0:0:1::/64"]);

            // Give the underlay's IPv6 link-local addresses (DAD) a moment.
            let reached = |from: &str, to: &str| {
                (0..30).any(|_| {
                    ping(from, to) || {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        false
                    }
                })
            };
            assert!(reached("10.99.1.1", "10.99.2.1"), "IPv4 across the overlay");
            assert!(reached("fd99:0:0:1::1", "fd99:0:0:2::1"), "IPv6 across the overlay");

            // Read back: exactly one neighbour and one FDB entry for B, a route per block.
            let ll_b = vtep_link_local(mac_b);
            assert_eq!(nl.permanent_neighbours("vx0").unwrap(), vec![(IpAddr::V6(ll_b), mac_b)]);
            assert!(nl.fdb("vx0").unwrap().contains(&(mac_b, IpAddr::V4(pb))), "{:?}", nl.fdb("vx0").unwrap());
            let mut routes = nl.overlay_routes("vx0").unwrap();
            routes.sort();
            assert_eq!(routes, vec![(addr("10.99.2.0/26"), ll_b), (addr("fd99:0:0:2::/64"), ll_b)]);

            // Host B goes: its objects are removed in reverse, and deleting again is fine.
            for _ in 0..2 {
                nl.delete_overlay_route("vx0", addr("10.99.2.0/26"), ll_b).unwrap();
                nl.delete_overlay_route("vx0", addr("fd99:0:0:2::/64"), ll_b).unwrap();
                nl.delete_fdb("vx0", mac_b, IpAddr::V4(pb)).unwrap();
                nl.delete_neighbour("vx0", IpAddr::V6(ll_b)).unwrap();
            }
            assert!(nl.overlay_routes("vx0").unwrap().is_empty());
            assert!(nl.permanent_neighbours("vx0").unwrap().is_empty());
            assert!(!nl.fdb("vx0").unwrap().iter().any(|(m, _)| *m == mac_b));
            assert!(!ping("10.99.1.1", "10.99.2.1"), "nothing reaches a host that is gone");
        });
    }

    #[test]
    fn a_vtep_mac_stands_for_its_eui64_link_local_address() {
        let mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(vtep_link_local(mac), "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap());
        let mac = Mac([0x0a, 0x58, 0x0a, 0x4f, 0x00, 0x05]);
        assert_eq!(vtep_link_local(mac), "fe80::858:aff:fe4f:5".parse::<Ipv6Addr>().unwrap());
    }
}
