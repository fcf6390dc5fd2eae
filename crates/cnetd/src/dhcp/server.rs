//! cnetd's DHCP server for VM endpoints: on each network with the
//! `EnableDhcpServer` flag, it answers DISCOVER and REQUEST from the MACs
//! of the network's VM endpoints (attached to `Guest` namespaces) with the
//! addresses cnet reserved for them, so an unmodified guest configures
//! itself. Anyone else — another MAC, a spoofed one — gets no answer.
//!
//! Invariants:
//! - One thread serves every network: a UDP socket per flagged network on
//!   port 67, bound to its bridge ([`Sockets`]). A network's socket is open
//!   before its create call returns (so a guest started at once loses no
//!   DISCOVER: it waits in the socket); the thread also follows the store
//!   each poll round (200 ms), which drops the sockets of deleted networks.
//!   Answers go out by broadcast on the bridge (the guest has no address yet).
//! - What is answered comes from the records alone: the reply is a pure
//!   function of the request and the endpoint ([`answer`]), unit-tested.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use socket2::{Domain, Protocol, Socket, Type};
use uuid::Uuid;

use crate::state::{EndpointRecord, NetworkRecord, Objects};

/// `Flags` bit of a network: cnetd answers DHCP for its VM endpoints (HCN `EnableDhcpServer`).
pub const ENABLE_DHCP_SERVER: u32 = 2;
/// Leases last a day; the address is the endpoint's for as long as it exists.
const LEASE_SECS: u32 = 86_400;

/// The reply to `req` for the VM endpoint `ep` (its MAC asked), or `None`
/// when there is nothing to say (not a DISCOVER or REQUEST, no IPv4 address).
pub fn answer(req: &Message, ep: &EndpointRecord, server: Ipv4Addr) -> Option<Message> {
    let kind = req.opts().msg_type()?;
    let config = ep.ip_configurations.iter().find(|c| c.ip_address.is_ipv4())?;
    let IpAddr::V4(ip) = config.ip_address else { return None };
    let reply_kind = match kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            let asked = match req.opts().get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(a)) => *a,
                _ => req.ciaddr(),
            };
            let for_us = match req.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s == server,
                _ => true,
            };
            if !for_us {
                return None;
            }
            if asked == ip {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        _ => return None,
    };
    let z = Ipv4Addr::UNSPECIFIED;
    let yiaddr = if reply_kind == MessageType::Nak { z } else { ip };
    let mut m = Message::new_with_id(req.xid(), z, yiaddr, server, req.giaddr(), req.chaddr());
    m.set_opcode(Opcode::BootReply);
    m.set_flags(req.flags());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(reply_kind));
    o.insert(DhcpOption::ServerIdentifier(server));
    if reply_kind == MessageType::Nak {
        return Some(m);
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(config.prefix_length)).unwrap_or(0);
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::from(mask)));
    o.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
    o.insert(DhcpOption::Renewal(LEASE_SECS / 2));
    o.insert(DhcpOption::Rebinding(LEASE_SECS / 8 * 7));
    let router = ep.routes.iter().filter(|r| r.destination_prefix.prefix_len() == 0).find_map(|r| match r.next_hop {
        Some(IpAddr::V4(g)) => Some(g),
        _ => None,
    });
    if let Some(g) = router {
        o.insert(DhcpOption::Router(vec![g]));
    }
    if let Some(dns) = &ep.dns {
        let v4: Vec<Ipv4Addr> = dns
            .server_list
            .iter()
            .filter_map(|d| match d {
                IpAddr::V4(a) => Some(*a),
                _ => None,
            })
            .collect();
        if !v4.is_empty() {
            o.insert(DhcpOption::DomainNameServer(v4));
        }
        if !dns.domain.is_empty() {
            o.insert(DhcpOption::DomainName(dns.domain.clone()));
        }
    }
    Some(m)
}

/// The network's server address: its IPv4 gateway on the bridge.
fn server_address(net: &NetworkRecord) -> Option<Ipv4Addr> {
    net.gateways().find_map(|(_, gw)| match gw {
        IpAddr::V4(g) => Some(g),
        _ => None,
    })
}

/// Networks to serve now: flagged, with a host address on their bridge.
fn served(o: &Objects) -> Vec<(Uuid, String, Ipv4Addr)> {
    o.networks
        .values()
        .filter(|s| s.intent.is_none() && s.record.flags & ENABLE_DHCP_SERVER != 0)
        .filter_map(|s| server_address(&s.record).map(|a| (s.record.id, s.record.bridge.clone(), a)))
        .collect()
}

/// The VM endpoint of network `net` with MAC `mac`.
fn vm_endpoint(o: &Objects, net: Uuid, mac: &[u8]) -> Option<EndpointRecord> {
    o.endpoints
        .values()
        .map(|s| &s.record)
        .find(|e| {
            e.network == net
                && mac.get(..6) == Some(&e.mac.0[..])
                && e.namespace.and_then(|n| o.namespaces.get(&n)).is_some_and(|n| n.record.kind.is_guest())
        })
        .cloned()
}

fn open(bridge: &str) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(bridge.as_bytes()))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// A served network's socket, its bridge and the address answers come from.
struct Served {
    sock: UdpSocket,
    bridge: String,
    server: Ipv4Addr,
}

/// The server's sockets, one per served network.
#[derive(Default)]
pub struct Sockets(Mutex<HashMap<Uuid, Arc<Served>>>);

impl Sockets {
    /// Opens the sockets of networks now served and closes those of
    /// networks no longer served.
    pub fn sync(&self, o: &Objects) {
        let want = served(o);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, s| want.iter().any(|(w, b, _)| w == id && *b == s.bridge));
        for (id, bridge, server) in want {
            if map.contains_key(&id) {
                continue;
            }
            match open(&bridge) {
                Ok(sock) => drop(map.insert(id, Arc::new(Served { sock, bridge, server }))),
                Err(e) => tracing::warn!("DHCP server on {bridge}: {e}"),
            }
        }
    }

    fn all(&self) -> Vec<(Uuid, Arc<Served>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(id, s)| (*id, s.clone())).collect()
    }
}

/// The server thread's loop: runs until the service is gone.
pub fn serve(svc: Weak<crate::service::Service>) {
    let mut buf = [0u8; 1500];
    while let Some(s) = svc.upgrade() {
        s.dhcp_sockets.sync(&s.state.read());
        let sockets = s.dhcp_sockets.all();
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|(_, served)| libc::pollfd { fd: served.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        drop(s);
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        // SAFETY: poll(2) on pollfds of sockets we hold open for the call.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
        let Some(s) = svc.upgrade() else { return };
        for (net, served) in &sockets {
            let Served { sock, bridge, server } = served.as_ref();
            while let Ok(n) = sock.recv(&mut buf) {
                let Ok(req) = Message::decode(&mut Decoder::new(&buf[..n])) else { continue };
                if req.opcode() != Opcode::BootRequest {
                    continue;
                }
                let Some(ep) = vm_endpoint(&s.state.read(), *net, req.chaddr()) else { continue };
                let Some(reply) = answer(&req, &ep, *server) else { continue };
                // The bridge got its carrier when the guest's TAP did, just
                // now perhaps: until the kernel applies that (up to a second
                // later) the bridge drops what it sends, this answer too.
                let _ = cnet_dataplane::link::sync_carrier(bridge);
                match reply.to_vec() {
                    Ok(bytes) => {
                        if let Err(e) = sock.send_to(&bytes, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)) {
                            tracing::warn!("DHCP server on {bridge}: answering {}: {e}", ep.display_name());
                        }
                    }
                    Err(e) => tracing::warn!("DHCP server: encoding: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoint() -> EndpointRecord {
        let ep: cnet_model::Endpoint = serde_json::from_value(json!({
            "ID": "6d0b3c1e-0000-4000-8000-0000000000e1", "HostComputeNetwork": "x",
            "IpConfigurations": [{"IpAddress": "10.79.0.5", "PrefixLength": 24}],
            "MacAddress": "0a:58:0a:4f:00:05",
            "Routes": [{"NextHop": "10.79.0.1", "DestinationPrefix": "0.0.0.0/0"}],
            "Dns": {"ServerList": ["10.79.0.1"], "Domain": "vms.test"}
        }))
        .unwrap();
        EndpointRecord::from_prepared(ep, Uuid::nil(), "cnv0".into()).unwrap()
    }

    fn request(kind: MessageType, asked: Option<Ipv4Addr>) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(9, z, z, z, z, &[0x0a, 0x58, 0x0a, 0x4f, 0, 5]);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        if let Some(a) = asked {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
        }
        m
    }

    #[test]
    fn a_discover_is_offered_the_reserved_address_with_router_mask_and_dns() {
        let server: Ipv4Addr = "10.79.0.1".parse().unwrap();
        let offer = answer(&request(MessageType::Discover, None), &endpoint(), server).unwrap();
        assert!(offer.opts().has_msg_type(MessageType::Offer));
        assert_eq!(offer.yiaddr(), "10.79.0.5".parse::<Ipv4Addr>().unwrap());
        assert_eq!(offer.xid(), 9);
        assert_eq!(
            offer.opts().get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask("255.255.255.0".parse().unwrap()))
        );
        assert_eq!(offer.opts().get(OptionCode::Router), Some(&DhcpOption::Router(vec![server])));
        assert_eq!(offer.opts().get(OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(vec![server])));
    }

    #[test]
    fn a_request_for_the_reserved_address_is_acked_any_other_nakked() {
        let server: Ipv4Addr = "10.79.0.1".parse().unwrap();
        let ack = answer(&request(MessageType::Request, Some("10.79.0.5".parse().unwrap())), &endpoint(), server);
        assert!(ack.unwrap().opts().has_msg_type(MessageType::Ack));
        let nak = answer(&request(MessageType::Request, Some("10.79.0.9".parse().unwrap())), &endpoint(), server);
        let nak = nak.unwrap();
        assert!(nak.opts().has_msg_type(MessageType::Nak));
        assert!(nak.yiaddr().is_unspecified());
        assert!(answer(&request(MessageType::Release, None), &endpoint(), server).is_none());
    }
}
