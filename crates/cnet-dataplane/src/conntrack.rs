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

use crate::nfnetlink::{
    self, attributes, nest, put, Nfnl, NFGENMSG_LEN, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
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
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | 1 << 14);
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
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
    nfnetlink::message(NFNL_SUBSYS_CTNETLINK, msg_type, flags, seq, family, attrs)
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
struct Ctnl(Nfnl);

fn failed(what: impl Into<String>, source: io::Error) -> DataplaneError {
    DataplaneError::Netlink { what: what.into(), source }
}

/// The message type of one entry in an answer.
const ENTRY: u16 = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW as u16;

impl Ctnl {
    fn open() -> Result<Ctnl> {
        Nfnl::open().map(Ctnl).map_err(|e| failed("opening a ctnetlink socket", e))
    }

    /// The entries of the table for which `keep` says yes, from one dump.
    fn entries(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> Result<Vec<Entry>> {
        let request = dump_request(self.0.next_seq());
        let mut kept = Vec::new();
        self.0
            .exchange(&request, ENTRY, |payload| {
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
        let request = delete_request(self.0.next_seq(), e);
        self.0
            .exchange(&request, ENTRY, |_| Ok(()))
            .map_err(|err| failed(format!("deleting conntrack entry {}", e.orig), err))
    }
}

#[cfg(test)]
mod tests;

/// Fuzzing entry point: parses `payload` as a dump's entry message, and
/// checks that what cnet sends back for it says the same. Panics on a
/// mismatch; any input that does not parse is fine.
#[doc(hidden)]
pub fn check_round_trip(payload: &[u8]) {
    let Ok(e) = Entry::parse(payload) else { return };
    for t in [&e.orig, &e.reply] {
        let mut buf = Vec::new();
        t.emit(&mut buf, CTA_TUPLE_ORIG);
        let [(_, inner)] = attributes(&buf).expect("our own encoding parses")[..] else {
            panic!("one tuple encodes as one attribute")
        };
        assert_eq!(&Tuple::parse(inner).expect("our own tuple parses"), t, "a tuple changed on the way back");
    }
    let request = delete_request(7, &e);
    let attrs = attributes(&request[crate::nfnetlink::NLMSG_HDRLEN + NFGENMSG_LEN..]).expect("our request parses");
    let orig = attrs.iter().find(|(k, _)| k & NLA_TYPE_MASK == CTA_TUPLE_ORIG).expect("the request names the entry");
    assert_eq!(Tuple::parse(orig.1).expect("the request's tuple parses"), e.orig);
    assert_eq!(request[crate::nfnetlink::NLMSG_HDRLEN], e.family, "the request keeps the family");
}
