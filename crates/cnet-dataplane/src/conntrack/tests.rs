//! Encoding, parsing and (as root, in a private namespace) real deletions.
use super::*;
use crate::nfnetlink::NLMSG_HDRLEN;

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: 17,
        src_port: Some(sport),
        dst_port: Some(dport),
        proto_other: Vec::new(),
        other: Vec::new(),
    }
}

#[test]
fn a_delete_request_is_encoded_byte_for_byte() {
    let e = Entry {
        family: libc::AF_INET as u8,
        orig: udp("10.0.0.1", 4000, "192.168.1.1", 8080),
        reply: udp("10.79.0.2", 80, "10.0.0.1", 4000),
        zone: Some(7),
        id: Some(0x01020304),
    };
    let n = |v: u16| v.to_ne_bytes();
    let mut want = Vec::new();
    // nlmsghdr: length 88, type CTNETLINK << 8 | DELETE, REQUEST | ACK, seq 9, port 0
    want.extend_from_slice(&88u32.to_ne_bytes());
    want.extend_from_slice(&n(0x0102));
    want.extend_from_slice(&n(0x0005));
    want.extend_from_slice(&9u32.to_ne_bytes());
    want.extend_from_slice(&0u32.to_ne_bytes());
    want.extend_from_slice(&[2, 0, 0, 0]); // nfgenmsg: AF_INET, version 0, res_id 0
    want.extend_from_slice(&[n(52), n(0x8001)].concat()); // CTA_TUPLE_ORIG, nested
    want.extend_from_slice(&[n(20), n(0x8001)].concat()); //   CTA_TUPLE_IP, nested
    want.extend_from_slice(&[n(8), n(1)].concat()); //     CTA_IP_V4_SRC
    want.extend_from_slice(&[10, 0, 0, 1]);
    want.extend_from_slice(&[n(8), n(2)].concat()); //     CTA_IP_V4_DST
    want.extend_from_slice(&[192, 168, 1, 1]);
    want.extend_from_slice(&[n(28), n(0x8002)].concat()); //   CTA_TUPLE_PROTO, nested
    want.extend_from_slice(&[n(5), n(1)].concat()); //     CTA_PROTO_NUM, padded
    want.extend_from_slice(&[17, 0, 0, 0]);
    want.extend_from_slice(&[n(6), n(2)].concat()); //     CTA_PROTO_SRC_PORT 4000, big endian, padded
    want.extend_from_slice(&[0x0f, 0xa0, 0, 0]);
    want.extend_from_slice(&[n(6), n(3)].concat()); //     CTA_PROTO_DST_PORT 8080
    want.extend_from_slice(&[0x1f, 0x90, 0, 0]);
    want.extend_from_slice(&[n(6), n(18)].concat()); // CTA_ZONE 7, big endian
    want.extend_from_slice(&[0, 7, 0, 0]);
    want.extend_from_slice(&[n(8), n(12)].concat()); // CTA_ID
    want.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(delete_request(9, &e), want);
}

#[test]
fn the_dump_request_asks_for_both_families() {
    let mut want = Vec::new();
    want.extend_from_slice(&20u32.to_ne_bytes());
    want.extend_from_slice(&0x0101u16.to_ne_bytes()); // CTNETLINK << 8 | GET
    want.extend_from_slice(&0x0305u16.to_ne_bytes()); // REQUEST | ACK | DUMP
    want.extend_from_slice(&3u32.to_ne_bytes());
    want.extend_from_slice(&0u32.to_ne_bytes());
    want.extend_from_slice(&[0, 0, 0, 0]); // AF_UNSPEC
    assert_eq!(dump_request(3), want);
}

/// An IPv6 entry as the kernel sends it: nested flags, ICMPv6 id/type/code,
/// attributes this module does not read.
fn kernel_entry() -> Vec<u8> {
    let mut attrs = Vec::new();
    let tuple = |buf: &mut Vec<u8>, kind: u16, src: Ipv6Addr, dst: Ipv6Addr, t: u8| {
        nest(buf, kind, |buf| {
            nest(buf, CTA_TUPLE_IP, |buf| {
                put(buf, CTA_IP_V6_SRC, &src.octets());
                put(buf, CTA_IP_V6_DST, &dst.octets());
            });
            nest(buf, CTA_TUPLE_PROTO, |buf| {
                put(buf, CTA_PROTO_NUM, &[58]);
                put(buf, 7, &0x1234u16.to_be_bytes()); // CTA_PROTO_ICMPV6_ID
                put(buf, 8, &[t]); // CTA_PROTO_ICMPV6_TYPE
                put(buf, 9, &[0]); // CTA_PROTO_ICMPV6_CODE
            });
        })
    };
    let (a, b) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    tuple(&mut attrs, CTA_TUPLE_ORIG, a, b, 128);
    tuple(&mut attrs, CTA_TUPLE_REPLY, b, a, 129);
    put(&mut attrs, 3, &8u32.to_be_bytes()); // CTA_STATUS
    put(&mut attrs, CTA_ID, &99u32.to_be_bytes());
    message(IPCTNL_MSG_CT_NEW, 2, 1, libc::AF_INET6 as u8, &attrs)
}

#[test]
fn a_kernel_entry_parses_and_its_tuple_goes_back_unchanged() {
    let msg = kernel_entry();
    let e = Entry::parse(&msg[NLMSG_HDRLEN..]).unwrap();
    assert_eq!(e.family, libc::AF_INET6 as u8);
    assert_eq!((e.orig.src, e.orig.dst), ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()));
    assert_eq!((e.orig.protocol, e.orig.src_port, e.orig.dst_port), (58, None, None));
    assert_eq!(e.reply.src, "fd00::2".parse::<IpAddr>().unwrap());
    assert_eq!(e.orig.proto_other.len(), 3);
    assert_eq!((e.zone, e.id), (None, Some(99)));
    // The delete request carries the original tuple exactly as it came.
    let start = NLMSG_HDRLEN + NFGENMSG_LEN;
    let orig_len = usize::from(u16::from_ne_bytes([msg[start], msg[start + 1]]));
    let del = delete_request(1, &e);
    assert_eq!(del[start..start + orig_len], msg[start..start + orig_len]);
}

#[test]
fn tuples_go_through_encoding_and_back() {
    for t in [udp("10.0.0.1", 1, "10.0.0.2", 65535), udp("fd00::1", 53, "::1", 5353)] {
        let mut buf = Vec::new();
        t.emit(&mut buf, CTA_TUPLE_REPLY);
        let attrs = attributes(&buf).unwrap();
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, CTA_TUPLE_REPLY | NLA_F_NESTED);
        assert_eq!(Tuple::parse(attrs[0].1).unwrap(), t);
    }
}

#[test]
fn broken_messages_are_refused() {
    assert!(attributes(&[8, 0, 1, 0, 1, 2]).is_err()); // claims 8 bytes, has 6
    assert!(attributes(&[2, 0, 1, 0]).is_err()); // shorter than its header
    let msg = kernel_entry();
    assert!(Entry::parse(&msg[NLMSG_HDRLEN..NLMSG_HDRLEN + 2]).is_err());
    let mut no_ip = Vec::new();
    nest(&mut no_ip, CTA_TUPLE_PROTO, |b| put(b, CTA_PROTO_NUM, &[6]));
    assert!(Tuple::parse(&no_ip).is_err());
}

#[test]
fn matches_need_every_field_they_set() {
    let e = Entry {
        family: libc::AF_INET as u8,
        orig: udp("10.0.0.1", 4000, "192.168.1.1", 8080),
        reply: udp("10.79.0.2", 80, "10.0.0.1", 4000),
        zone: None,
        id: None,
    };
    let m = FlowMatch { protocol: Some(17), orig_dst_port: Some(8080), ..Default::default() };
    assert!(m.matches(&e));
    assert!(!FlowMatch { protocol: Some(6), ..m.clone() }.matches(&e));
    let to_endpoint = FlowMatch { reply_src: Some("10.79.0.2".parse().unwrap()), ..Default::default() };
    assert!(to_endpoint.matches(&e));
    assert!(FlowMatch { reply_src_port: Some(80), ..to_endpoint.clone() }.matches(&e));
    assert!(!FlowMatch { reply_src_port: Some(81), ..to_endpoint }.matches(&e));
    assert!(!FlowMatch { reply_src: Some("10.79.0.3".parse().unwrap()), ..Default::default() }.matches(&e));
}

#[test]
fn an_empty_match_is_refused() {
    let e = forget(&[FlowMatch { protocol: Some(17), ..Default::default() }, FlowMatch::default()]).unwrap_err();
    assert!(e.to_string().contains("would match every entry"), "{e}");
    assert_eq!(forget(&[]).unwrap(), 0);
}

#[test]
fn forget_deletes_the_matching_entries_and_only_those() {
    crate::testutil::in_private_netns(|| {
        // Conntrack tracks a namespace once a rule there needs it.
        crate::nft::apply(
            "table inet cnet_ct_test {
               chain out { type filter hook output priority 0; ct state new accept; }
             }
             table ip cnet_ct_nat {
               chain out { type nat hook output priority -100; udp dport 6000 dnat to 127.0.0.2:6001; }
             }",
        )
        .unwrap();
        let _listeners: Vec<_> = ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.2:6001", "[::1]:5001"]
            .iter()
            .map(|a| std::net::UdpSocket::bind(a).unwrap())
            .collect();
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for to in ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:6000"] {
            v4.send_to(b"x", to).unwrap();
        }
        std::net::UdpSocket::bind("[::1]:0").unwrap().send_to(b"x", "[::1]:5001").unwrap();

        let mut ct = Ctnl::open().unwrap();
        let before = ct.entries(|e| e.orig.protocol == 17).unwrap();
        assert_eq!(before.len(), 4, "{before:#?}");
        let v6 = before.iter().find(|e| e.orig.dst == "::1".parse::<IpAddr>().unwrap()).unwrap();
        assert_eq!(v6.family, libc::AF_INET6 as u8);
        let dnat = before.iter().find(|e| e.orig.dst_port == Some(6000)).unwrap();
        assert_eq!((dnat.reply.src, dnat.reply.src_port), ("127.0.0.2".parse().unwrap(), Some(6001)));

        let published = FlowMatch { protocol: Some(17), orig_dst_port: Some(5001), ..Default::default() };
        let to_endpoint = FlowMatch {
            reply_src: Some("127.0.0.2".parse().unwrap()),
            reply_src_port: Some(6001),
            ..Default::default()
        };
        assert_eq!(forget(&[published.clone(), to_endpoint]).unwrap(), 3);
        let after = ct.entries(|e| e.orig.protocol == 17).unwrap();
        assert_eq!(after.len(), 1, "{after:#?}");
        assert_eq!(after[0].orig.dst_port, Some(5002));

        assert_eq!(forget(&[published]).unwrap(), 0);
        assert_eq!(ct.delete(dnat).unwrap_err().kind(), ErrorKind::NotFound);
    });
}
