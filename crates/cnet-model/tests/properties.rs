//! Properties of address allocation, subnet arithmetic and port-range
//! overlap, checked on random inputs against brute force.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cnet_model::alloc::{first_free, is_assignable, nth_host};
use cnet_model::endpoint::MAX_PORT_COUNT;
use cnet_model::network::Subnet;
use cnet_model::{PortMapping, Protocol};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

fn subnet(net: IpNet, blocks: &[IpNet]) -> Subnet {
    let mut v = serde_json::json!({"IpAddressPrefix": net.to_string()});
    v["IpSubnets"] = blocks.iter().map(|b| serde_json::json!({"IpAddressPrefix": b.to_string()})).collect();
    serde_json::from_value(v).unwrap()
}

/// A small IPv4 subnet (/24 to /30) somewhere in 10.0.0.0/8.
fn small_v4() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 24u8..=30)
        .prop_map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (a & 0x00ff_ffff)), len).unwrap().trunc())
}

/// Every address of `net`, in order.
fn all(net: &Ipv4Net) -> Vec<IpAddr> {
    (u32::from(net.network())..=u32::from(net.broadcast())).map(|a| IpAddr::V4(a.into())).collect()
}

fn mapping(proto: Protocol, ext: u16, count: u16, vip: Option<IpAddr>) -> PortMapping {
    let mut v =
        serde_json::json!({"Protocol": proto.number(), "InternalPort": 80, "ExternalPort": ext, "PortCount": count});
    if let Some(vip) = vip {
        v["VIP"] = vip.to_string().into();
    }
    serde_json::from_value(v).unwrap()
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)]
}

proptest! {
    /// The n-th host: the network address at 0, the broadcast last, every
    /// address in order, and never the network, broadcast or gateway assignable.
    #[test]
    fn subnet_arithmetic(net in small_v4(), gw_at in 1u32..4) {
        let ipnet = IpNet::V4(net);
        let s = subnet(ipnet, &[]);
        let size = 1u32 << (32 - net.prefix_len());
        prop_assert_eq!(nth_host(&ipnet, 0), IpAddr::V4(net.network()));
        prop_assert_eq!(nth_host(&ipnet, u128::from(size - 1)), IpAddr::V4(net.broadcast()));
        let gw = nth_host(&ipnet, u128::from(gw_at % (size - 1)).max(1));
        for (i, ip) in all(&net).into_iter().enumerate() {
            prop_assert_eq!(nth_host(&ipnet, i as u128), ip);
            let reserved = i == 0 || i as u32 == size - 1 || ip == gw;
            prop_assert_eq!(is_assignable(&s, Some(gw), ip), !reserved, "{}", ip);
        }
        prop_assert!(!is_assignable(&s, None, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))), "outside");
    }

    /// The next free address is the first assignable, untaken one after the
    /// last handed out, cyclically (as brute force finds it); None only when
    /// every assignable address is taken.
    #[test]
    fn first_free_is_the_next_free_after_the_last(net in small_v4(), taken_bits in any::<u64>(), after_at in any::<u8>()) {
        let ipnet = IpNet::V4(net);
        let s = subnet(ipnet, &[]);
        let gw = nth_host(&ipnet, 1);
        let addrs = all(&net);
        let taken: HashSet<IpAddr> =
            addrs.iter().enumerate().filter(|(i, _)| taken_bits >> (i % 64) & 1 == 1).map(|(_, a)| *a).collect();
        let after = addrs[after_at as usize % addrs.len()];
        let start = addrs.iter().position(|a| *a == after).unwrap() + 1;
        let expected = (0..addrs.len())
            .map(|k| addrs[(start + k) % addrs.len()])
            .find(|ip| is_assignable(&s, Some(gw), *ip) && !taken.contains(ip));
        prop_assert_eq!(first_free(&s, Some(gw), &taken, Some(after)), expected);
    }

    /// Allocating until the pool is empty hands out every assignable
    /// address exactly once, and only from the blocks when there are blocks.
    #[test]
    fn allocation_never_hands_out_an_address_twice(net in small_v4(), split in any::<bool>()) {
        let ipnet = IpNet::V4(net);
        let blocks: Vec<IpNet> = if split && net.prefix_len() < 30 {
            net.subnets(net.prefix_len() + 2).unwrap().step_by(2).map(IpNet::V4).collect()
        } else {
            vec![]
        };
        let s = subnet(ipnet, &blocks);
        let gw = nth_host(&ipnet, 1);
        let mut taken = HashSet::new();
        let mut last = None;
        while let Some(ip) = first_free(&s, Some(gw), &taken, last) {
            prop_assert!(taken.insert(ip), "{} handed out twice", ip);
            prop_assert!(blocks.is_empty() || blocks.iter().any(|b| b.contains(&ip)), "{} outside the blocks", ip);
            last = Some(ip);
        }
        let in_pool = |ip: &IpAddr| blocks.is_empty() || blocks.iter().any(|b| b.contains(ip));
        let assignable = all(&net).into_iter().filter(|ip| in_pool(ip) && is_assignable(&s, Some(gw), *ip)).count();
        prop_assert_eq!(taken.len(), assignable);
        prop_assert!(assignable > 0);
    }

    /// IPv6: starting after a freed address, it is the last to come back,
    /// and every address but the network's is handed out.
    #[test]
    fn a_freed_ipv6_address_comes_back_last(host in any::<u16>(), len in 118u8..=124) {
        let net = Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), len).unwrap();
        let ipnet = IpNet::V6(net);
        let s = subnet(ipnet, &[]);
        let size = 1u128 << (128 - len);
        let freed = nth_host(&ipnet, 1 + u128::from(host) % (size - 1));
        let mut taken = HashSet::new();
        let mut last = Some(freed);
        let mut order = vec![];
        while let Some(ip) = first_free(&s, None, &taken, last) {
            taken.insert(ip);
            order.push(ip);
            last = Some(ip);
        }
        prop_assert_eq!(order.last().copied(), Some(freed));
        prop_assert_eq!(order.len() as u128, size - 1);
    }

    /// Two port mappings conflict exactly when they share a protocol, a
    /// host port and a VIP (or either is on every address); symmetric.
    #[test]
    fn port_ranges_overlap_as_sets_of_ports_do(
        pa in protocol(), pb in protocol(),
        a0 in 1u16..200, ac in 1u16..40, b0 in 1u16..200, bc in 1u16..40,
        va in proptest::option::of(0u8..3), vb in proptest::option::of(0u8..3),
    ) {
        let vip = |v: Option<u8>| v.map(|n| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)));
        let (a, b) = (mapping(pa, a0, ac, vip(va)), mapping(pb, b0, bc, vip(vb)));
        let ports = |s: u16, c: u16| (s..s + c).collect::<HashSet<u16>>();
        let shared_port = !ports(a0, ac).is_disjoint(&ports(b0, bc));
        let shared_vip = va.is_none() || vb.is_none() || va == vb;
        let expected = pa == pb && shared_port && shared_vip;
        prop_assert_eq!(a.conflicts_with(&b), expected);
        prop_assert_eq!(b.conflicts_with(&a), expected);
    }

    /// A range is accepted exactly when it has 1 to MAX_PORT_COUNT ports and
    /// neither its host nor its container ports run past 65535.
    #[test]
    fn a_range_is_accepted_exactly_when_it_fits(start in 1u16..=65535, count in 0u16..=6000) {
        let m = mapping(Protocol::Tcp, start, count, None);
        let fits = |first: u16| u32::from(first) + u32::from(count) - 1 <= 65535;
        let expected = (1..=MAX_PORT_COUNT).contains(&count) && fits(start) && fits(80);
        prop_assert_eq!(m.check().is_ok(), expected, "{}+{}", start, count);
    }
}
