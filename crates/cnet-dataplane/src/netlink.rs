//! Route netlink, in process: the hot path's links, addresses and routes
//! without starting an `ip` process per change (a process cost 1.3–1.8 ms
//! here; a netlink request costs microseconds).
//!
//! Invariants:
//! - A netlink socket belongs to the network namespace it was created in for
//!   its whole life. [`Rtnl::open_in`] creates one inside another namespace
//!   on a short-lived thread ([`crate::netns::run_in`]), so no caller thread
//!   ever changes namespace.
//! - Every request asks for an acknowledgement and waits for it: when a
//!   method returns `Ok`, the kernel has applied the change.
//! - Errors carry the errno (so their [`crate::ErrorKind`]) and say which
//!   operation on which object failed.
//! - Readers return the crate's own types ([`crate::types`]); MACs go down
//!   and come up as bytes.
//! - This module builds on [`crate::types`] and [`crate::netns`] only; the
//!   policy of what to build lives in [`crate::link`].

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoMacVlan,
    InfoMacVtap, InfoPortData, InfoPortKind, InfoVeth, InfoVlan, LinkAttribute, LinkExtentMask, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::{Addr, DataplaneError, ErrorKind, LinkInfo, Mac, PortFlags, Result, Route};

mod address;
pub mod overlay;
pub mod qos;
mod routing;
pub mod vlan;

/// A route netlink socket bound to one network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

fn failed(what: impl Into<String>, source: io::Error) -> DataplaneError {
    DataplaneError::Netlink { what: what.into(), source }
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// A link message naming its link by name (the kernel looks it up).
fn by_name(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

/// A request for one link's state, by name; statistics left out.
fn query_name(name: &str) -> LinkMessage {
    let mut m = by_name(name);
    m.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    m
}

/// A request for one link's state, by index; statistics left out.
fn query_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    m
}

/// What a link message says, and the index of the link's master.
fn link_info(m: &LinkMessage) -> (LinkInfo, Option<u32>) {
    let mut info = LinkInfo {
        name: String::new(),
        index: m.header.index,
        kind: None,
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mac: None,
        mtu: 0,
    };
    let mut master = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::Address(b) => info.mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
            LinkAttribute::Controller(i) if *i != 0 => master = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    (info, master)
}

fn is_not_found(e: &io::Error) -> bool {
    e.raw_os_error().map(ErrorKind::of_errno) == Some(ErrorKind::NotFound)
}

fn set_up(m: &mut LinkMessage, up: bool) {
    m.header.change_mask |= LinkFlags::Up;
    if up {
        m.header.flags |= LinkFlags::Up;
    }
}

impl Rtnl {
    /// A socket in the calling thread's namespace.
    pub fn open() -> Result<Self> {
        let open = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        };
        Ok(Rtnl { socket: open().map_err(|e| failed("opening a netlink socket", e))?, seq: 0 })
    }

    /// A socket inside the namespace at `path`.
    pub fn open_in(path: &str) -> Result<Self> {
        crate::netns::run_in(path, Rtnl::open)?
    }

    /// Sends one request and returns the kernel's answers: the messages it
    /// sent back, after the acknowledgement (or the error) ended them.
    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answers = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut at = 0;
            while at < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[at..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
            }
        }
    }

    fn request(&mut self, what: impl FnOnce() -> String, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.exchange(msg, flags).map(|_| ()).map_err(|e| failed(what(), e))
    }

    /// The kernel's message about one link, or `None` when there is no such link.
    fn get_link(&mut self, query: LinkMessage, what: impl FnOnce() -> String) -> Result<Option<LinkMessage>> {
        match self.exchange(RouteNetlinkMessage::GetLink(query), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failed(what(), e)),
        }
    }

    /// The index of link `name`, or `None` when there is no such link.
    pub fn index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.get_link(query_name(name), || format!("looking up link {name}"))?.map(|m| m.header.index))
    }

    fn require_index(&mut self, name: &str) -> Result<u32> {
        self.index(name)?
            .ok_or_else(|| failed(format!("looking up link {name}"), io::Error::from_raw_os_error(libc::ENODEV)))
    }

    /// Creates a bridge with a fixed MAC and MTU, down.
    pub fn add_bridge(&mut self, name: &str, mac: Mac, mtu: u32) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Bridge)]));
        self.request(|| format!("creating bridge {name}"), RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a bridge-mode macvtap `name` with `mac` on host link `parent`
    /// (down): a VM NIC on the LAN, opened by the VMM as `/dev/tap<index>`.
    pub fn add_macvtap(&mut self, name: &str, parent: &str, mac: Mac, mtu: u32) -> Result<()> {
        let link = self.require_index(parent)?;
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Link(link));
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::MacVtap),
            NlLinkInfo::Data(InfoData::MacVtap(vec![InfoMacVtap::Mode(MacVlanMode::Bridge)])),
        ]));
        self.request(
            || format!("creating macvtap {name} on {parent}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a link only to see whether the kernel can: an 802.1Q link of
    /// `parent` (`vlan`), or a bridge with VLAN filtering. For [`crate::probe`].
    pub(crate) fn add_probe_link(&mut self, name: &str, parent: Option<&str>) -> Result<()> {
        let mut m = by_name(name);
        match parent {
            Some(p) => {
                let link = self.require_index(p)?;
                m.attributes.push(LinkAttribute::Link(link));
                m.attributes.push(LinkAttribute::LinkInfo(vec![
                    NlLinkInfo::Kind(InfoKind::Vlan),
                    NlLinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(10)])),
                ]));
            }
            None => m.attributes.push(LinkAttribute::LinkInfo(vec![
                NlLinkInfo::Kind(InfoKind::Bridge),
                NlLinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])),
            ])),
        }
        self.request(|| format!("probing link {name}"), RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a veth pair: `name` here (down, with `mac` and `mtu`) and
    /// `peer` in the namespace `peer_netns` (down, same MTU).
    pub fn add_veth(&mut self, name: &str, mac: Option<Mac>, mtu: u32, peer: &str, peer_netns: &File) -> Result<()> {
        let mut p = by_name(peer);
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut m = by_name(name);
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(
            || format!("creating veth pair {name}/{peer}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Sets a link up or down.
    pub fn set_up(&mut self, name: &str, up: bool) -> Result<()> {
        let mut m = by_name(name);
        set_up(&mut m, up);
        self.request(|| format!("setting link {name} up={up}"), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Sets a link's MTU (a running link keeps its connections: TCP learns
    /// the new size from the next segments).
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(|| format!("setting the MTU of link {name} to {mtu}"), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Keeps the (down) link `name` from making an IPv6 link-local address
    /// when it comes up: no duplicate address detection, router
    /// solicitations or multicast reports from it.
    pub fn no_link_local(&mut self, name: &str) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
            In6AddrGenMode::None,
        )])]));
        self.request(|| format!("turning off IPv6 link-local on {name}"), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Puts `name` on `bridge` and sets it up, with the port flags `port`.
    pub fn enslave(&mut self, name: &str, bridge: &str, port: PortFlags) -> Result<()> {
        let master = self.require_index(bridge)?;
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Controller(master));
        // Up only once the port flags are set: an isolated port never
        // forwards a frame to another port, not even its first ones.
        let flags_follow = port.hairpin || port.isolated;
        set_up(&mut m, !flags_follow);
        self.request(|| format!("putting {name} on bridge {bridge}"), RouteNetlinkMessage::SetLink(m), 0)?;
        let mut opts = Vec::new();
        if port.hairpin {
            opts.push(InfoBridgePort::HairpinMode(true));
        }
        if port.isolated {
            opts.push(InfoBridgePort::Isolated(true));
        }
        if !opts.is_empty() {
            // Port options go through RTM_NEWLINK on the existing link, as
            // `ip link set dev X type bridge_slave hairpin on` does.
            let mut m = by_name(name);
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                NlLinkInfo::PortKind(InfoPortKind::Bridge),
                NlLinkInfo::PortData(InfoPortData::BridgePort(opts)),
            ]));
            self.request(|| format!("setting bridge port flags of {name}"), RouteNetlinkMessage::NewLink(m), 0)?;
            self.set_up(name, true)?;
        }
        Ok(())
    }

    /// Creates a bridge-mode macvlan `name` on host link `parent` (down):
    /// in the namespace `netns` when given (the name need only be free
    /// there), else here.
    pub fn add_macvlan(&mut self, name: &str, parent: &str, mac: Mac, mtu: u32, netns: Option<&File>) -> Result<()> {
        let link = self.require_index(parent)?;
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Link(link));
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(ns) = netns {
            m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::MacVlan),
            NlLinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(MacVlanMode::Bridge)])),
        ]));
        self.request(
            || format!("creating macvlan {name} on {parent}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Takes `name` down, off its bridge, and into link group `group`.
    pub fn park(&mut self, name: &str, group: u32) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Controller(0));
        m.attributes.push(LinkAttribute::Group(group));
        set_up(&mut m, false);
        self.request(|| format!("parking link {name}"), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Sends a prepared RTM_SETLINK.
    pub fn set_link(&mut self, m: LinkMessage, what: &str) -> Result<()> {
        self.request(|| what.to_string(), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Renames the (down) link `name` to `new`.
    pub fn rename(&mut self, name: &str, new: &str) -> Result<()> {
        let index = self.require_index(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(new.to_string()));
        self.request(|| format!("renaming link {name} to {new}"), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Deletes link `name`; `Ok(false)` when there was no such link.
    pub fn delete(&mut self, name: &str) -> Result<bool> {
        match self.exchange(RouteNetlinkMessage::DelLink(by_name(name)), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(failed(format!("deleting link {name}"), e)),
        }
    }

    /// Deletes every link in `group` in one kernel operation; succeeds when
    /// the group is empty.
    pub fn delete_group(&mut self, group: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::Group(group));
        match self.exchange(RouteNetlinkMessage::DelLink(m), 0) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(failed(format!("deleting link group {group}"), e)),
        }
    }

    /// Appends a route through link `dev` (a second default route next to an
    /// existing one is kept, as `ip route append` does).
    pub fn append_route(&mut self, dev: &str, r: &Route) -> Result<()> {
        let index = self.require_index(dev)?;
        let Addr { ip: dst, prefix_len: len } = r.destination;
        let mut m = RouteMessage::default();
        m.header.address_family = family(&dst);
        m.header.destination_prefix_length = len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if r.via.is_some() { RouteScope::Universe } else { RouteScope::Link };
        m.header.kind = RouteType::Unicast;
        if len > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        if let Some(via) = r.via {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(via)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        if r.metric > 0 {
            m.attributes.push(RouteAttribute::Priority(r.metric));
        }
        self.request(
            || match r.via {
                Some(via) => format!("adding route {dst}/{len} via {via} dev {dev}"),
                None => format!("adding route {dst}/{len} dev {dev}"),
            },
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_APPEND,
        )
    }
}

impl Rtnl {
    /// One link, its master resolved to a name; `None` when there is no such link.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        let Some(m) = self.get_link(query_name(name), || format!("looking up link {name}"))? else {
            return Ok(None);
        };
        let (mut info, master) = link_info(&m);
        if let Some(i) = master {
            let m = self.get_link(query_index(i), || format!("looking up the master (index {i}) of link {name}"))?;
            info.master = m.map(|m| link_info(&m).0.name);
        }
        Ok(Some(info))
    }

    /// A link's traffic counters, or `None` when there is no such link.
    pub fn link_stats(&mut self, name: &str) -> Result<Option<crate::types::LinkStats>> {
        let Some(m) = self.get_link(by_name(name), || format!("reading the counters of link {name}"))? else {
            return Ok(None);
        };
        Ok(m.attributes.iter().find_map(|a| match a {
            LinkAttribute::Stats64(s) => Some(crate::types::LinkStats {
                rx_bytes: s.rx_bytes,
                rx_packets: s.rx_packets,
                tx_bytes: s.tx_bytes,
                tx_packets: s.tx_packets,
                rx_dropped: s.rx_dropped,
                tx_dropped: s.tx_dropped,
            }),
            _ => None,
        }))
    }

    /// Every link of the namespace, from one dump; masters resolved to names
    /// from the same dump.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>> {
        let mut query = LinkMessage::default();
        query.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let answers =
            self.exchange(RouteNetlinkMessage::GetLink(query), NLM_F_DUMP).map_err(|e| failed("listing links", e))?;
        let found: Vec<(LinkInfo, Option<u32>)> = answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_info(l)),
                _ => None,
            })
            .collect();
        let names: HashMap<u32, String> = found.iter().map(|(l, _)| (l.index, l.name.clone())).collect();
        Ok(found
            .into_iter()
            .map(|(mut l, master)| {
                l.master = master.and_then(|i| names.get(&i).cloned());
                l
            })
            .collect())
    }

    /// Main-table routes through the link with `index`.
    pub fn routes(&mut self, index: u32) -> Result<Vec<Route>> {
        let answers = self
            .exchange(RouteNetlinkMessage::GetRoute(RouteMessage::default()), NLM_F_DUMP)
            .map_err(|e| failed("listing routes", e))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            let (mut dst, mut via, mut oif, mut metric) = (None, None, None, 0);
            let mut table = u32::from(r.header.table);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Priority(p) => metric = *p,
                    _ => {}
                }
            }
            if oif != Some(index) || table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let unspecified = match r.header.address_family {
                AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            let destination = Addr { ip: dst.unwrap_or(unspecified), prefix_len: r.header.destination_prefix_length };
            out.push(Route { destination, via, metric });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_messages_read_as_link_info() {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up;
        m.attributes = vec![
            LinkAttribute::IfName("veth0".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Address(vec![2, 0, 10, 255, 0, 1]),
            LinkAttribute::Controller(3),
            LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Veth)]),
        ];
        let (info, master) = link_info(&m);
        assert_eq!(master, Some(3));
        assert_eq!(
            info,
            LinkInfo {
                name: "veth0".into(),
                index: 7,
                kind: Some("veth".into()),
                master: None,
                up: true,
                mac: Some(Mac([2, 0, 10, 255, 0, 1])),
                mtu: 1450,
            }
        );
    }

    #[test]
    fn addresses_that_are_not_six_bytes_are_no_mac() {
        let mut m = LinkMessage::default();
        m.attributes = vec![LinkAttribute::Address(vec![10, 0, 0, 1]), LinkAttribute::Controller(0)];
        let (info, master) = link_info(&m);
        assert_eq!((info.mac, master, info.up), (None, None, false));
    }
}
