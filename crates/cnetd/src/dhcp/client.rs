//! The DHCPv4 client exchanges (RFC 2131) for one endpoint: DISCOVER →
//! OFFER → REQUEST → ACK to acquire, REQUEST to renew (unicast to the
//! server) or rebind (broadcast), RELEASE. The wire format is `dhcproto`'s;
//! the state machine is ours.
//!
//! Invariants:
//! - Every exchange runs on a UDP socket opened inside the endpoint's
//!   namespace (on a short-lived thread, so no cnetd thread changes
//!   namespace) and bound to the endpoint's interface, port 68. It speaks
//!   from the endpoint's MAC (the macvlan's own), with the broadcast flag
//!   set so answers reach an interface that has no address yet.
//! - A reply counts only if it carries our transaction ID and our MAC.
//! - Functions block for at most their timeout; none holds a lock.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use socket2::{Domain, Protocol, Socket, Type};

use super::Lease;

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;

/// What an exchange needs to know about the endpoint.
#[derive(Clone, Debug)]
pub struct Who {
    pub netns_path: String,
    pub ifname: String,
    pub mac: [u8; 6],
    /// Sent as the host name option (dnsmasq registers it).
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("no DHCP server answered on {ifname} within {secs} s: check that the LAN has one, or use Static IPAM")]
    NoAnswer { ifname: String, secs: u64 },
    #[error("the DHCP server refused the request (NAK){0}")]
    Refused(String),
    #[error("DHCP socket in {path}: {source}")]
    Socket { path: String, source: io::Error },
    #[error("DHCP: {0}")]
    Protocol(String),
}

/// The socket of one exchange, inside the endpoint's namespace.
fn open(who: &Who) -> Result<UdpSocket, DhcpError> {
    let ifname = who.ifname.clone();
    let fail = |source| DhcpError::Socket { path: who.netns_path.clone(), source };
    let made = cnet_dataplane::netns::run_in(&who.netns_path, move || -> io::Result<UdpSocket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(ifname.as_bytes()))?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into())?;
        Ok(s.into())
    })
    .map_err(|e| fail(io::Error::other(e.to_string())))?;
    made.map_err(fail)
}

fn message(who: &Who, xid: u32, kind: MessageType, ciaddr: Ipv4Addr) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, ciaddr, z, z, z, &who.mac);
    m.set_opcode(Opcode::BootRequest);
    if ciaddr.is_unspecified() {
        m.set_flags(Flags::default().set_broadcast());
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut id = vec![1u8];
    id.extend_from_slice(&who.mac);
    opts.insert(DhcpOption::ClientIdentifier(id));
    // RFC 2131 table 5: a RELEASE carries no host name or parameter list.
    if kind != MessageType::Release {
        if let Some(h) = &who.hostname {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::DomainName,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
    }
    m
}

fn send(sock: &UdpSocket, m: &Message, to: Ipv4Addr) -> Result<(), DhcpError> {
    let bytes = m.to_vec().map_err(|e| DhcpError::Protocol(format!("encoding: {e}")))?;
    sock.send_to(&bytes, SocketAddrV4::new(to, SERVER_PORT))
        .map_err(|source| DhcpError::Socket { path: "send".into(), source })?;
    Ok(())
}

/// Waits until `deadline` for a reply to `xid` that `wanted` accepts
/// (others — a second server's OFFER, a late duplicate — are skipped).
fn receive(
    sock: &UdpSocket,
    who: &Who,
    xid: u32,
    deadline: Instant,
    wanted: &dyn Fn(&Message) -> bool,
) -> Result<Option<Message>, DhcpError> {
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left)).map_err(|source| DhcpError::Socket { path: "timeout".into(), source })?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(DhcpError::Socket { path: "receive".into(), source }),
        };
        let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else { continue };
        if m.opcode() == Opcode::BootReply && m.xid() == xid && m.chaddr().get(..6) == Some(&who.mac[..]) && wanted(&m)
        {
            return Ok(Some(m));
        }
    }
}

/// Sends `m` to `to` and waits for an answer that `wanted` accepts,
/// resending with backoff (0.5 s, 1 s, 2 s, …) until `total` has passed.
fn ask(
    sock: &UdpSocket,
    who: &Who,
    m: &Message,
    to: Ipv4Addr,
    total: Duration,
    wanted: &dyn Fn(&Message) -> bool,
) -> Result<Option<Message>, DhcpError> {
    let end = Instant::now() + total;
    let mut wait = Duration::from_millis(500);
    while Instant::now() < end {
        send(sock, m, to)?;
        let deadline = (Instant::now() + wait).min(end);
        if let Some(reply) = receive(sock, who, m.xid(), deadline, wanted)? {
            return Ok(Some(reply));
        }
        wait = (wait * 2).min(Duration::from_secs(4));
    }
    Ok(None)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The lease an ACK grants.
fn lease_of(ack: &Message, fallback_server: Option<Ipv4Addr>) -> Result<Lease, DhcpError> {
    let o = ack.opts();
    let server = match o.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => fallback_server.ok_or_else(|| DhcpError::Protocol("the ACK names no server".into()))?,
    };
    let prefix_len = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => u32::from(*m).count_ones() as u8,
        _ => 24,
    };
    let lease_secs = match o.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    let renew_secs = match o.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => *t,
        _ => lease_secs / 2,
    };
    let rebind_secs = match o.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => *t,
        _ => lease_secs / 8 * 7,
    };
    let router = match o.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match o.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => vec![],
    };
    let domain = match o.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => Some(d.clone()),
        _ => None,
    };
    if ack.yiaddr().is_unspecified() {
        return Err(DhcpError::Protocol("the ACK grants no address".into()));
    }
    Ok(Lease {
        address: ack.yiaddr(),
        prefix_len,
        router,
        dns,
        domain,
        server,
        lease_secs,
        renew_secs,
        rebind_secs,
        acquired_unix: now_unix(),
    })
}

fn server_of(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    }
}

fn nak_text(m: &Message) -> String {
    match m.opts().get(OptionCode::Message) {
        Some(DhcpOption::Message(t)) => format!(": {t}"),
        _ => String::new(),
    }
}

/// Acquires a lease: DISCOVER, the first OFFER, REQUEST, ACK.
pub fn acquire(who: &Who, timeout: Duration) -> Result<Lease, DhcpError> {
    let sock = open(who)?;
    let end = Instant::now() + timeout;
    let none = || DhcpError::NoAnswer { ifname: who.ifname.clone(), secs: timeout.as_secs() };
    let xid: u32 = rand_xid();
    let discover = message(who, xid, MessageType::Discover, Ipv4Addr::UNSPECIFIED);
    let is_offer = |m: &Message| m.opts().has_msg_type(MessageType::Offer) && !m.yiaddr().is_unspecified();
    let left = end.saturating_duration_since(Instant::now());
    let offer = ask(&sock, who, &discover, Ipv4Addr::BROADCAST, left, &is_offer)?.ok_or_else(none)?;
    let server = server_of(&offer).ok_or_else(|| DhcpError::Protocol("the OFFER names no server".into()))?;
    let mut request = message(who, xid, MessageType::Request, Ipv4Addr::UNSPECIFIED);
    request.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    request.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    let left = end.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    // Only the chosen server's ACK or NAK: other servers' OFFERs may still come in.
    let from_chosen = |m: &Message| {
        (m.opts().has_msg_type(MessageType::Ack) || m.opts().has_msg_type(MessageType::Nak))
            && server_of(m).is_none_or(|s| s == server)
    };
    match ask(&sock, who, &request, Ipv4Addr::BROADCAST, left, &from_chosen)? {
        Some(m) if m.opts().has_msg_type(MessageType::Ack) => lease_of(&m, Some(server)),
        Some(m) if m.opts().has_msg_type(MessageType::Nak) => Err(DhcpError::Refused(nak_text(&m))),
        _ => Err(none()),
    }
}

/// Extends `lease`: a REQUEST from its address, unicast to its server
/// (renewing) or broadcast to any (`rebinding`).
pub fn renew(who: &Who, lease: &Lease, rebinding: bool, timeout: Duration) -> Result<Lease, DhcpError> {
    let sock = open(who)?;
    let m = message(who, rand_xid(), MessageType::Request, lease.address);
    let to = if rebinding { Ipv4Addr::BROADCAST } else { lease.server };
    let answer = |m: &Message| m.opts().has_msg_type(MessageType::Ack) || m.opts().has_msg_type(MessageType::Nak);
    match ask(&sock, who, &m, to, timeout, &answer)? {
        Some(r) if r.opts().has_msg_type(MessageType::Ack) => lease_of(&r, Some(lease.server)),
        Some(r) if r.opts().has_msg_type(MessageType::Nak) => Err(DhcpError::Refused(nak_text(&r))),
        _ => Err(DhcpError::NoAnswer { ifname: who.ifname.clone(), secs: timeout.as_secs() }),
    }
}

/// Gives the lease back (no answer comes), broadcast: a RELEASE unicast
/// to the server waits in the adapter's neighbour queue while the server's
/// MAC is resolved, and the adapter, taken down right after, drops it (the
/// crash torture found leases left at the server that way). A broadcast frame
/// leaves at once; the server identifier says whose lease it is, and
/// servers (dnsmasq, ISC dhcpd) and relays take it as they take a unicast one.
pub fn release(who: &Who, lease: &Lease) -> Result<(), DhcpError> {
    let sock = open(who)?;
    let mut m = message(who, rand_xid(), MessageType::Release, lease.address);
    m.opts_mut().insert(DhcpOption::ServerIdentifier(lease.server));
    send(&sock, &m, Ipv4Addr::BROADCAST)
}

fn rand_xid() -> u32 {
    // Unique enough per exchange: time and a counter, hashed.
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    t.wrapping_mul(2_654_435_761).wrapping_add(n.wrapping_mul(40_503))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Who {
        Who {
            netns_path: String::new(),
            ifname: "eth0".into(),
            mac: [0x0a, 0x59, 1, 2, 3, 4],
            hostname: Some("web".into()),
        }
    }

    #[test]
    fn a_discover_asks_for_a_broadcast_answer_and_names_the_client() {
        let m = message(&who(), 7, MessageType::Discover, Ipv4Addr::UNSPECIFIED);
        let back = Message::decode(&mut Decoder::new(&m.to_vec().unwrap())).unwrap();
        assert!(back.flags().broadcast());
        assert_eq!(back.xid(), 7);
        assert_eq!(&back.chaddr()[..6], &who().mac);
        assert!(back.opts().has_msg_type(MessageType::Discover));
        assert_eq!(
            back.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![1, 0x0a, 0x59, 1, 2, 3, 4]))
        );
    }

    #[test]
    fn an_ack_becomes_a_lease_with_defaults_for_missing_times() {
        let mut ack = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            "192.0.2.50".parse().unwrap(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &who().mac,
        );
        ack.set_opcode(Opcode::BootReply);
        let o = ack.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::ServerIdentifier("192.0.2.1".parse().unwrap()));
        o.insert(DhcpOption::SubnetMask("255.255.255.0".parse().unwrap()));
        o.insert(DhcpOption::Router(vec!["192.0.2.1".parse().unwrap()]));
        o.insert(DhcpOption::AddressLeaseTime(120));
        let l = lease_of(&ack, None).unwrap();
        assert_eq!(
            (l.address, l.prefix_len, l.lease_secs, l.renew_secs, l.rebind_secs),
            (ack.yiaddr(), 24, 120, 60, 105)
        );
        assert_eq!(l.router, Some("192.0.2.1".parse().unwrap()));
    }
}
