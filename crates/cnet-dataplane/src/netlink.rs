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
//! - Errors carry the errno and say which operation on which object failed.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind,
    InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::link::{Addr, RouteSpec};
use crate::{DataplaneError, Result};

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

    /// The index of link `name`, or `None` when there is no such link.
    pub fn index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.link_state(name)?.map(|l| l.index))
    }

    fn require_index(&mut self, name: &str) -> Result<u32> {
        self.index(name)?
            .ok_or_else(|| failed(format!("looking up link {name}"), io::Error::from_raw_os_error(libc::ENODEV)))
    }

    /// Creates a bridge with a fixed MAC and MTU, down.
    pub fn add_bridge(&mut self, name: &str, mac: [u8; 6], mtu: u32) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(|| format!("creating bridge {name}"), RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a veth pair: `name` here (down, with `mac` and `mtu`) and
    /// `peer` in the namespace `peer_netns` (down, same MTU).
    pub fn add_veth(
        &mut self,
        name: &str,
        mac: Option<[u8; 6]>,
        mtu: u32,
        peer: &str,
        peer_netns: &File,
    ) -> Result<()> {
        let mut p = by_name(peer);
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut m = by_name(name);
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
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

    /// Puts `name` on `bridge` and sets it up; with `hairpin`, the bridge may
    /// send frames back out the port they came in on.
    pub fn enslave(&mut self, name: &str, bridge: &str, hairpin: bool) -> Result<()> {
        let master = self.require_index(bridge)?;
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Controller(master));
        set_up(&mut m, true);
        self.request(|| format!("putting {name} on bridge {bridge}"), RouteNetlinkMessage::SetLink(m), 0)?;
        if hairpin {
            // Port options go through RTM_NEWLINK on the existing link, as
            // `ip link set dev X type bridge_slave hairpin on` does.
            let mut m = by_name(name);
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
            ]));
            self.request(|| format!("setting hairpin mode on {name}"), RouteNetlinkMessage::NewLink(m), 0)?;
        }
        Ok(())
    }

    /// Takes `name` down, off its bridge, and into link group `group`.
    pub fn park(&mut self, name: &str, group: u32) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Controller(0));
        m.attributes.push(LinkAttribute::Group(group));
        set_up(&mut m, false);
        self.request(|| format!("parking link {name}"), RouteNetlinkMessage::SetLink(m), 0)
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

    fn address_message(index: u32, (ip, len): &Addr) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family(ip);
        m.header.prefix_len = *len;
        m.header.index = index;
        if ip.is_ipv6() {
            // Our addresses are unique by allocation: skip duplicate detection,
            // which would hold the address back for a second or more.
            m.header.flags = AddressHeaderFlags::Nodad;
        }
        m.attributes.push(AddressAttribute::Local(*ip));
        m.attributes.push(AddressAttribute::Address(*ip));
        m
    }

    /// Adds an address to link `dev` (`replace`: succeed when it is there).
    pub fn add_address(&mut self, dev: &str, addr: &Addr, replace: bool) -> Result<()> {
        let index = self.require_index(dev)?;
        let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        self.request(
            || format!("adding address {}/{} to {dev}", addr.0, addr.1),
            RouteNetlinkMessage::NewAddress(Self::address_message(index, addr)),
            flags,
        )
    }

    /// Appends a route through link `dev` (a second default route next to an
    /// existing one is kept, as `ip route append` does).
    pub fn append_route(&mut self, dev: &str, r: &RouteSpec) -> Result<()> {
        let index = self.require_index(dev)?;
        let (dst, len) = r.destination;
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
            || format!("adding route {dst}/{len} via {:?} dev {dev}", r.via),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_APPEND,
        )
    }
}

impl Rtnl {
    /// Index and MAC of link `name`, or `None` when there is no such link.
    pub fn link_state(&mut self, name: &str) -> Result<Option<LinkState>> {
        match self.exchange(RouteNetlinkMessage::GetLink(by_name(name)), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(LinkState {
                    index: l.header.index,
                    mac: l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Address(b) => Some(format_mac(b)),
                        _ => None,
                    }),
                }),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failed(format!("looking up link {name}"), e)),
        }
    }

    /// Global-scope addresses of the link with `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Addr>> {
        let answers = self
            .exchange(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)
            .map_err(|e| failed("listing addresses", e))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == index && a.header.scope == AddressScope::Universe =>
                {
                    let ip = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })?;
                    Some((ip, a.header.prefix_len))
                }
                _ => None,
            })
            .collect())
    }

    /// Main-table routes through the link with `index`: destination and gateway.
    pub fn routes(&mut self, index: u32) -> Result<Vec<(Addr, Option<IpAddr>)>> {
        let answers = self
            .exchange(RouteNetlinkMessage::GetRoute(RouteMessage::default()), NLM_F_DUMP)
            .map_err(|e| failed("listing routes", e))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            let (mut dst, mut via, mut oif, mut table) = (None, None, None, r.header.table as u32);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if oif != Some(index) || table != RouteHeader::RT_TABLE_MAIN as u32 {
                continue;
            }
            let unspecified = match r.header.address_family {
                AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            };
            out.push(((dst.unwrap_or(unspecified), r.header.destination_prefix_length), via));
        }
        Ok(out)
    }
}

/// What diagnostics read about one link.
#[derive(Clone, Debug)]
pub struct LinkState {
    pub index: u32,
    /// `aa:bb:cc:dd:ee:ff`, lower case, as `ip` prints it.
    pub mac: Option<String>,
}

fn format_mac(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bad = || DataplaneError::Parse { program: "cnet".into(), detail: format!("{text:?} is not a MAC address") };
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01").unwrap(), [2, 0, 10, 255, 0, 1]);
        for bad in ["", "02:00", "02:00:0a:ff:00:01:02", "zz:00:0a:ff:00:01"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
