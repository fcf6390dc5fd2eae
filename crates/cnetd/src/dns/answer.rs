//! The answer to one DNS query, as a pure function of its bytes, the
//! client and the names ([`respond`]): what the server sends, forwards or
//! drops. The wire format is hickory-proto's; the logic is ours.
//!
//! Invariants:
//! - Any input gets an answer or is dropped, never a panic: fewer than 12
//!   bytes (no header to answer) is dropped; a header with a body that does
//!   not parse gets FORMERR.
//! - A client that is not an endpoint of the network it asks (by its source
//!   address) is REFUSED: names are served only to the networks' own
//!   containers.
//! - Names of the client's networks are answered with authority (A, AAAA,
//!   PTR; other types of a known name: no data); anything else is forwarded
//!   only from a network that forwards, else REFUSED.
//! - A UDP answer larger than the client can take (512 bytes, or its EDNS
//!   size) goes out truncated (TC): the client asks again over TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use uuid::Uuid;

use super::names::{Found, Index, NAME_TTL};

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Answer(Vec<u8>),
    /// Ask the upstream servers (the query as it came).
    Forward,
    Drop,
}

/// An error answer to the query whose header is `query[..12]`.
fn error(query: &[u8], code: ResponseCode) -> Reply {
    let id = u16::from_be_bytes([query[0], query[1]]);
    match Message::error_msg(id, OpCode::Query, code).to_vec() {
        Ok(b) => Reply::Answer(b),
        Err(_) => Reply::Drop,
    }
}

/// The address an `in-addr.arpa` or `ip6.arpa` name stands for.
fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut o: Vec<u8> = v4.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u8>>>()?;
        if o.len() != 4 {
            return None;
        }
        o.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = v6
        .split('.')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|n| p.len() == 1 && *n < 16))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for n in nibbles.iter().rev() {
        v = (v << 4) | *n as u128;
    }
    Some(IpAddr::V6(Ipv6Addr::from(v)))
}

/// The answer to `query` from `client` on network `net`'s server; `udp`:
/// whether it came over UDP (answers are then size-limited).
pub fn respond(query: &[u8], client: IpAddr, net: Uuid, ix: &Index, udp: bool) -> Reply {
    if query.len() < 12 {
        return Reply::Drop;
    }
    let Ok(q) = Message::from_vec(query) else { return error(query, ResponseCode::FormErr) };
    if q.message_type() != MessageType::Query {
        return Reply::Drop;
    }
    if q.op_code() != OpCode::Query {
        return error(query, ResponseCode::NotImp);
    }
    let [question] = q.queries() else { return error(query, ResponseCode::FormErr) };
    let nets = ix.networks_of(client);
    if !nets.contains(&net) {
        return error(query, ResponseCode::Refused);
    }
    let name = question.name().to_lowercase().to_utf8();
    let name = name.trim_end_matches('.');
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true)
        .add_query(question.clone());
    if q.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        *r.extensions_mut() = Some(edns);
    }
    let qname = question.name().clone();
    let qtype = question.query_type();
    match ix.lookup(nets, name) {
        Found::Addresses(addrs) => {
            for ip in addrs {
                let data = match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                    _ => continue,
                };
                r.add_answer(Record::from_rdata(qname.clone(), NAME_TTL, data));
            }
        }
        Found::Unknown => match reverse_address(name).filter(|_| qtype == RecordType::PTR) {
            Some(ip) => match ix.reverse(nets, ip) {
                Some(target) => {
                    let Ok(target) = Name::from_ascii(format!("{target}.")) else {
                        return error(query, ResponseCode::ServFail);
                    };
                    r.add_answer(Record::from_rdata(qname, NAME_TTL, RData::PTR(PTR(target))));
                }
                None if ix.in_served_subnet(nets, ip) => {
                    r.set_response_code(ResponseCode::NXDomain);
                }
                None => return forward_or_refuse(query, net, ix),
            },
            None => return forward_or_refuse(query, net, ix),
        },
    }
    let Ok(bytes) = r.to_vec() else { return error(query, ResponseCode::ServFail) };
    let limit = if udp { q.max_payload().max(512) as usize } else { 65535 };
    if bytes.len() > limit {
        r.take_answers();
        r.set_truncated(true);
        return r.to_vec().map(Reply::Answer).unwrap_or(Reply::Drop);
    }
    Reply::Answer(bytes)
}

fn forward_or_refuse(query: &[u8], net: Uuid, ix: &Index) -> Reply {
    if ix.networks.get(&net).is_some_and(|n| n.forwards) {
        Reply::Forward
    } else {
        error(query, ResponseCode::Refused)
    }
}

/// SERVFAIL for `query` (no upstream answered).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    match (query.len() >= 12).then(|| error(query, ResponseCode::ServFail)) {
        Some(Reply::Answer(b)) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    #[test]
    fn reverse_names_stand_for_their_addresses() {
        assert_eq!(reverse_address("5.0.79.10.in-addr.arpa"), Some("10.79.0.5".parse().unwrap()));
        let v6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.7.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(reverse_address(v6), Some("fd00:79::5".parse().unwrap()));
        assert_eq!(reverse_address("300.1.1.1.in-addr.arpa"), None);
        assert_eq!(reverse_address("1.1.in-addr.arpa"), None);
        assert_eq!(reverse_address("example.com"), None);
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(77).set_recursion_desired(true).add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn garbage_is_dropped_or_answered_formerr_and_strangers_are_refused() {
        let ix = Index::default();
        let net = Uuid::from_u128(1);
        let client: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(respond(b"short", client, net, &ix, true), Reply::Drop);
        let mut bad = query("web.", RecordType::A);
        bad.truncate(14);
        let Reply::Answer(b) = respond(&bad, client, net, &ix, true) else { panic!("no answer") };
        assert_eq!(Message::from_vec(&b).unwrap().response_code(), ResponseCode::FormErr);
        let Reply::Answer(b) = respond(&query("web.", RecordType::A), client, net, &ix, true) else { panic!() };
        let m = Message::from_vec(&b).unwrap();
        assert_eq!((m.id(), m.response_code()), (77, ResponseCode::Refused), "not an endpoint of the network");
    }

    fn answer(q: &[u8], client: &str) -> Message {
        match respond(q, client.parse().unwrap(), Uuid::from_u128(1), &Index::sample(), true) {
            Reply::Answer(b) => Message::from_vec(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_aliases_and_addresses_of_the_clients_network_are_answered_with_authority() {
        let m = answer(&query("DB.", RecordType::A), "10.0.0.2");
        assert!(m.authoritative() && m.response_code() == ResponseCode::NoError);
        assert_eq!(m.answers()[0].data().as_a().map(|a| a.0.to_string()), Some("10.0.0.3".into()));
        assert_eq!(m.answers()[0].ttl(), NAME_TTL);
        let m = answer(&query("store.cnet.test.", RecordType::A), "10.0.0.2");
        assert_eq!(m.answers().len(), 1, "an alias with the domain");
        let m = answer(&query("web.", RecordType::AAAA), "10.0.0.2");
        assert_eq!(m.answers()[0].data().as_aaaa().map(|a| a.0.to_string()), Some("fd00::2".into()));
        let m = answer(&query("db.", RecordType::AAAA), "10.0.0.2");
        assert!(m.answers().is_empty() && m.response_code() == ResponseCode::NoError, "no data, not NXDOMAIN");
        let m = answer(&query("3.0.0.10.in-addr.arpa.", RecordType::PTR), "10.0.0.2");
        assert_eq!(m.answers()[0].data().as_ptr().map(|p| p.0.to_string()), Some("db.cnet.test.".into()));
        let m = answer(&query("9.0.0.10.in-addr.arpa.", RecordType::PTR), "10.0.0.2");
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "an address of the subnet nobody has");
        let other = respond(
            &query("example.com.", RecordType::A),
            "10.0.0.2".parse().unwrap(),
            Uuid::from_u128(1),
            &Index::sample(),
            true,
        );
        assert_eq!(other, Reply::Forward, "not ours: upstream");
        let m = answer(&query("db.", RecordType::A), "10.0.0.9");
        assert_eq!(m.response_code(), ResponseCode::Refused, "not an endpoint of the network");
    }

    #[test]
    fn random_bytes_and_mangled_queries_never_panic() {
        let ix = Index::sample();
        let good = query("store.cnet.test.", RecordType::A);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut q = good.clone();
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % q.len();
                q[i] = next() as u8;
            }
            q.truncate((next() as usize) % (q.len() + 1));
            let _ = respond(&q, "10.0.0.2".parse().unwrap(), Uuid::from_u128(1), &ix, next() % 2 == 0);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let ix = Index::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let mut buf = Vec::with_capacity(len % 600);
            for _ in 0..(len % 600) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            let _ = respond(&buf, "10.0.0.1".parse().unwrap(), Uuid::nil(), &ix, len % 2 == 0);
            let _ = servfail(&buf);
        }
    }
}
