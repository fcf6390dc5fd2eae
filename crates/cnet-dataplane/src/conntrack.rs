//! Conntrack entries over ctnetlink (`NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_CTNETLINK`), in process: one dump, then one delete request
//! per matching entry, no process per entry.
//!
//! Why: after a container with a UDP port mapping is removed, a client that
//! keeps sending keeps its conntrack entry, DNAT'd to the old address, and
//! the next container to get that address receives the traffic. The CNI
//! portmap plugin deletes such entries; so does [`forget`].
//!
//! The messages are encoded and parsed here by hand (a few attributes, see
//! `include/uapi/linux/netfilter/nfnetlink_conntrack.h`): a `nfgenmsg` header,
//! then `CTA_TUPLE_ORIG` / `CTA_TUPLE_REPLY`, each nesting `CTA_TUPLE_IP`
//! (`CTA_IP_V4_SRC/DST`, `CTA_IP_V6_SRC/DST`) and `CTA_TUPLE_PROTO`
//! (`CTA_PROTO_NUM`, `CTA_PROTO_SRC_PORT`, `CTA_PROTO_DST_PORT`, ports in
//! network byte order).
//!
//! Invariants:
//! - Everything happens in the calling thread's network namespace (its own
//!   conntrack table).
//! - A delete request always names one entry by its whole original tuple
//!   (plus zone and id): a `IPCTNL_MSG_CT_DELETE` without a tuple would flush
//!   the whole table, so this module never sends one. Tuple attributes that
//!   are not understood here (ICMP id, type and code, a tuple zone) are sent
//!   back as the kernel gave them.
//! - A [`FlowMatch`] with no field set is refused: it would match every entry.
//! - An entry that is gone by the time it is deleted is not an error.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NetlinkAddr};

use crate::{DataplaneError, ErrorKind, Result};

/// A set of conntrack entries; a field that is None matches anything. At least one field must be set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    /// The IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: Option<u8>,
    /// The destination port the client sent to (the published port).
    pub orig_dst_port: Option<u16>,
    /// Where the answers come from: the endpoint's address for entries
    /// leading to an endpoint (after DNAT).
    pub reply_src: Option<IpAddr>,
    /// The port the answers come from (the endpoint's port).
    pub reply_src_port: Option<u16>,
}

impl FlowMatch {
    fn is_empty(&self) -> bool {
        *self == FlowMatch::default()
    }

    fn matches(&self, e: &Entry) -> bool {
        fn wants<T: PartialEq>(want: Option<T>, have: T) -> bool {
            match want {
                None => true,
                Some(w) => w == have,
            }
        }
        wants(self.protocol, e.orig.protocol)
            && wants(self.orig_dst_port.map(Some), e.orig.dst_port)
            && wants(self.reply_src, e.reply.src)
            && wants(self.reply_src_port.map(Some), e.reply.src_port)
    }
}

/// Deletes every entry matching any of `matches` (one dump, then one delete per entry); returns how many went. An entry already gone is not an error.
///
/// Deleting goes on after a failure; the first failure is returned.
pub fn forget(matches: &[FlowMatch]) -> Result<usize> {
    if matches.iter().any(FlowMatch::is_empty) {
        return Err(DataplaneError::Invalid {
            what: "a conntrack match".into(),
            reason: "it sets no field, so it would match every entry".into(),
        });
    }
    if matches.is_empty() {
        return Ok(0);
    }
    let mut ct = Ctnl::open()?;
    let doomed = ct.entries(|e| matches.iter().any(|m| m.matches(e)))?;
    let (mut gone, mut first_error) = (0, None);
    for e in &doomed {
        match ct.delete(e) {
            Ok(()) => gone += 1,
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(gone),
    }
}

// From linux/netlink.h, linux/netfilter/nfnetlink.h and nfnetlink_conntrack.h.
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | 1 << 14);
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNETLINK_V0: u8 = 0;
const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// An attribute kept as the kernel sent it: its type (flags included) and value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawNla {
    kind: u16,
    value: Vec<u8>,
}

/// One direction of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    /// Other `CTA_TUPLE_PROTO` attributes (ICMP id, type, code).
    proto_other: Vec<RawNla>,
    /// Other tuple attributes (`CTA_TUPLE_ZONE`).
    other: Vec<RawNla>,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            6 => f.write_str("tcp ")?,
            17 => f.write_str("udp ")?,
            132 => f.write_str("sctp ")?,
            1 => f.write_str("icmp ")?,
            58 => f.write_str("icmpv6 ")?,
            p => write!(f, "protocol {p} ")?,
        }
        let end = |ip, port: Option<u16>| match port {
            Some(port) => SocketAddr::new(ip, port).to_string(),
            None => ip.to_string(),
        };
        write!(f, "{} -> {}", end(self.src, self.src_port), end(self.dst, self.dst_port))
    }
}

/// One conntrack entry, as much of it as cnet reads.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// `AF_INET` or `AF_INET6`, from the entry's `nfgenmsg`.
    family: u8,
    orig: Tuple,
    reply: Tuple,
    /// `CTA_ZONE`, when not the default zone.
    zone: Option<u16>,
    /// `CTA_ID`: the kernel's id of this entry (a delete with it never hits a
    /// newer entry with the same tuple).
    id: Option<u32>,
}

// Encoding.

/// Appends one attribute, padded to 4 bytes.
fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).expect("a conntrack attribute fits in 64 KiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Appends one nested attribute whose contents `f` appends.
fn nest(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    f(buf);
    let len = u16::try_from(buf.len() - start).expect("a conntrack attribute fits in 64 KiB");
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

fn put_ip(buf: &mut Vec<u8>, v4: u16, v6: u16, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => put(buf, v4, &ip.octets()),
        IpAddr::V6(ip) => put(buf, v6, &ip.octets()),
    }
}

impl Tuple {
    fn emit(&self, buf: &mut Vec<u8>, kind: u16) {
        nest(buf, kind, |buf| {
            nest(buf, CTA_TUPLE_IP, |buf| {
                put_ip(buf, CTA_IP_V4_SRC, CTA_IP_V6_SRC, self.src);
                put_ip(buf, CTA_IP_V4_DST, CTA_IP_V6_DST, self.dst);
            });
            nest(buf, CTA_TUPLE_PROTO, |buf| {
                put(buf, CTA_PROTO_NUM, &[self.protocol]);
                if let Some(p) = self.src_port {
                    put(buf, CTA_PROTO_SRC_PORT, &p.to_be_bytes());
                }
                if let Some(p) = self.dst_port {
                    put(buf, CTA_PROTO_DST_PORT, &p.to_be_bytes());
                }
                for a in &self.proto_other {
                    put(buf, a.kind, &a.value);
                }
            });
            for a in &self.other {
                put(buf, a.kind, &a.value);
            }
        });
    }
}

/// A ctnetlink message: netlink header, `nfgenmsg`, attributes.
fn message(msg_type: u8, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len()).expect("a conntrack request is small");
    let mut buf = Vec::with_capacity(len as usize);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | u16::from(msg_type)).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]); // res_id 0
    buf.extend_from_slice(attrs);
    buf
}

/// The request that dumps every entry of both families.
fn dump_request(seq: u32) -> Vec<u8> {
    message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq, libc::AF_UNSPEC as u8, &[])
}

/// The request that deletes exactly `e`.
fn delete_request(seq: u32, e: &Entry) -> Vec<u8> {
    let mut attrs = Vec::new();
    e.orig.emit(&mut attrs, CTA_TUPLE_ORIG);
    if let Some(zone) = e.zone {
        put(&mut attrs, CTA_ZONE, &zone.to_be_bytes());
    }
    if let Some(id) = e.id {
        put(&mut attrs, CTA_ID, &id.to_be_bytes());
    }
    message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, e.family, &attrs)
}

// Parsing.

/// The attributes in `buf`: raw type (flags included) and value.
fn attributes(mut buf: &[u8]) -> std::result::Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < 4 || len > buf.len() {
            return Err(format!("an attribute of type {kind} claims {len} bytes, {} are left", buf.len()));
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(out)
}

fn ip(kind: u16, value: &[u8]) -> std::result::Result<IpAddr, String> {
    match (<[u8; 4]>::try_from(value), <[u8; 16]>::try_from(value)) {
        (Ok(v4), _) if matches!(kind, CTA_IP_V4_SRC | CTA_IP_V4_DST) => Ok(IpAddr::V4(Ipv4Addr::from(v4))),
        (_, Ok(v6)) if matches!(kind, CTA_IP_V6_SRC | CTA_IP_V6_DST) => Ok(IpAddr::V6(Ipv6Addr::from(v6))),
        _ => Err(format!("an address attribute of type {kind} has {} bytes", value.len())),
    }
}

fn port(value: &[u8]) -> std::result::Result<u16, String> {
    <[u8; 2]>::try_from(value).map(u16::from_be_bytes).map_err(|_| format!("a port has {} bytes", value.len()))
}

impl Tuple {
    /// Parses the contents of a `CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY`.
    fn parse(buf: &[u8]) -> std::result::Result<Tuple, String> {
        let (mut src, mut dst, mut protocol) = (None, None, None);
        let mut t = Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            protocol: 0,
            src_port: None,
            dst_port: None,
            proto_other: Vec::new(),
            other: Vec::new(),
        };
        for (kind, value) in attributes(buf)? {
            match kind & NLA_TYPE_MASK {
                CTA_TUPLE_IP => {
                    for (kind, value) in attributes(value)? {
                        match kind & NLA_TYPE_MASK {
                            k @ (CTA_IP_V4_SRC | CTA_IP_V6_SRC) => src = Some(ip(k, value)?),
                            k @ (CTA_IP_V4_DST | CTA_IP_V6_DST) => dst = Some(ip(k, value)?),
                            _ => {}
                        }
                    }
                }
                CTA_TUPLE_PROTO => {
                    for (kind, value) in attributes(value)? {
                        match kind & NLA_TYPE_MASK {
                            CTA_PROTO_NUM => protocol = value.first().copied(),
                            CTA_PROTO_SRC_PORT => t.src_port = Some(port(value)?),
                            CTA_PROTO_DST_PORT => t.dst_port = Some(port(value)?),
                            _ => t.proto_other.push(RawNla { kind, value: value.to_vec() }),
                        }
                    }
                }
                _ => t.other.push(RawNla { kind, value: value.to_vec() }),
            }
        }
        match (src, dst, protocol) {
            (Some(src), Some(dst), Some(protocol)) => Ok(Tuple { src, dst, protocol, ..t }),
            _ => Err("a tuple without source, destination or protocol".into()),
        }
    }
}

impl Entry {
    /// Parses the payload (after the netlink header) of an entry message.
    fn parse(payload: &[u8]) -> std::result::Result<Entry, String> {
        if payload.len() < NFGENMSG_LEN {
            return Err("an entry message without nfgenmsg header".into());
        }
        let (mut orig, mut reply, mut zone, mut id) = (None, None, None, None);
        for (kind, value) in attributes(&payload[NFGENMSG_LEN..])? {
            match kind & NLA_TYPE_MASK {
                CTA_TUPLE_ORIG => orig = Some(Tuple::parse(value)?),
                CTA_TUPLE_REPLY => reply = Some(Tuple::parse(value)?),
                CTA_ZONE => zone = Some(port(value)?),
                CTA_ID => id = <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes),
                _ => {}
            }
        }
        match (orig, reply) {
            (Some(orig), Some(reply)) => Ok(Entry { family: payload[0], orig, reply, zone, id }),
            _ => Err("an entry without original or reply tuple".into()),
        }
    }
}

/// A ctnetlink socket in the calling thread's namespace.
struct Ctnl {
    socket: Socket,
    seq: u32,
}

fn failed(what: impl Into<String>, source: io::Error) -> DataplaneError {
    DataplaneError::Netlink { what: what.into(), source }
}

impl Ctnl {
    fn open() -> Result<Ctnl> {
        let open = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_NETFILTER)?;
            socket.bind_auto()?;
            socket.connect(&NetlinkAddr::new(0, 0))?;
            // Acknowledgements without a copy of the request.
            socket.set_cap_ack(true)?;
            Ok(socket)
        };
        Ok(Ctnl { socket: open().map_err(|e| failed("opening a ctnetlink socket", e))?, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `request` and hands the payload of every entry message of the
    /// answer to `each`, until the acknowledgement, the end of the dump or an
    /// error.
    fn exchange(&mut self, request: &[u8], mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let seq = u32::from_ne_bytes(request[8..12].try_into().expect("a netlink header"));
        self.socket.send(request, 0)?;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= data.len() {
                let h = &data[at..];
                let len = u32::from_ne_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(h[4..6].try_into().expect("2 bytes"));
                let reply_seq = u32::from_ne_bytes(h[8..12].try_into().expect("4 bytes"));
                if len < NLMSG_HDRLEN || len > h.len() {
                    return Err(invalid("a netlink message longer than what was received"));
                }
                let payload = &h[NLMSG_HDRLEN..len];
                at += len.next_multiple_of(4);
                if reply_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        // Both carry an error code first: 0 for success, else -errno.
                        let code = payload.get(..4).map_or(0, |c| i32::from_ne_bytes(c.try_into().expect("4 bytes")));
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    k if k == NFNL_SUBSYS_CTNETLINK << 8 | u16::from(IPCTNL_MSG_CT_NEW) => each(payload)?,
                    _ => {}
                }
            }
        }
    }

    /// The entries of the table for which `keep` says yes, from one dump.
    fn entries(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> Result<Vec<Entry>> {
        let request = dump_request(self.next_seq());
        let mut kept = Vec::new();
        self.exchange(&request, |payload| {
            let e = Entry::parse(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if keep(&e) {
                kept.push(e);
            }
            Ok(())
        })
        .map_err(|e| failed("listing conntrack entries", e))?;
        Ok(kept)
    }

    /// Deletes exactly the entry `e`; an error of kind
    /// [`ErrorKind::NotFound`] when it is gone.
    fn delete(&mut self, e: &Entry) -> Result<()> {
        let request = delete_request(self.next_seq(), e);
        self.exchange(&request, |_| Ok(())).map_err(|err| failed(format!("deleting conntrack entry {}", e.orig), err))
    }
}

#[cfg(test)]
mod tests;
