//! Address and MAC allocation. Pure functions over "what is taken".

use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::MacAddr;
use crate::network::{MacPool, Subnet};

/// The `n`-th address of a subnet (0 = the network address).
pub fn nth_host(net: &IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()).wrapping_add(n as u32))),
        IpNet::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()).wrapping_add(n))),
    }
}

/// Whether `ip` may be given to an endpoint of `subnet` whose gateway is
/// `gateway`: inside the subnet, not the network address, not the IPv4
/// broadcast, not the gateway.
pub fn is_assignable(subnet: &Subnet, gateway: Option<IpAddr>, ip: IpAddr) -> bool {
    let net = subnet.ip_address_prefix;
    if !net.contains(&ip) || ip == net.network() || Some(ip) == gateway {
        return false;
    }
    !matches!(net, IpNet::V4(_) if ip == net.broadcast())
}

/// The offset of `ip` in `net` (0 = the network address).
fn offset_of(net: &IpNet, ip: IpAddr) -> u128 {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => u32::from(a).wrapping_sub(u32::from(n.network())) as u128,
        (IpNet::V6(n), IpAddr::V6(a)) => u128::from(a).wrapping_sub(u128::from(n.network())),
        _ => 0,
    }
}

/// The next free address of `subnet` after `after` (the one handed out
/// last), wrapping around at the end, skipping reserved ones and `taken` —
/// as CNI host-local does, so an address just freed is the last to be
/// handed out again (its old flows, neighbour entries and the traffic still
/// aimed at it do not reach a new owner). Without `after`, from the start.
///
/// With `IpSubnets`, only their blocks are searched, in their order, as
/// one range.
pub fn first_free(
    subnet: &Subnet,
    gateway: Option<IpAddr>,
    taken: &HashSet<IpAddr>,
    after: Option<IpAddr>,
) -> Option<IpAddr> {
    let blocks: Vec<IpNet> = if subnet.ip_subnets.is_empty() {
        vec![subnet.ip_address_prefix]
    } else {
        subnet.ip_subnets.iter().map(|b| b.ip_address_prefix).collect()
    };
    // Cap the search for huge IPv6 blocks: 2^20 candidates each is plenty.
    let size = |net: &IpNet| -> u128 {
        let host_bits = (net.max_prefix_len() - net.prefix_len()) as u32;
        if host_bits >= 20 {
            1 << 20
        } else {
            1u128 << host_bits
        }
    };
    let total: u128 = blocks.iter().map(size).sum();
    // Where the block containing `after` starts in the joined range.
    let mut start = 0;
    let mut base = 0;
    for b in &blocks {
        if let Some(a) = after.filter(|a| b.contains(a)) {
            start = base + offset_of(b, a) + 1;
        }
        base += size(b);
    }
    let at = |mut i: u128| -> IpAddr {
        for b in &blocks {
            if i < size(b) {
                return nth_host(b, i);
            }
            i -= size(b);
        }
        nth_host(&blocks[0], 0)
    };
    (0..total).map(|i| at((start + i) % total)).find(|ip| is_assignable(subnet, gateway, *ip) && !taken.contains(ip))
}

/// The MAC for an endpoint without one: `0a:58:` + its IPv4 address (so a
/// reused address keeps its MAC and neighbours need no new ARP), or
/// `0a:58:` + the last four bytes of its IPv6 address.
pub fn mac_for_ip(ip: IpAddr) -> MacAddr {
    let b = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    MacAddr([0x0a, 0x58, b[0], b[1], b[2], b[3]])
}

/// The MAC of an endpoint whose address comes later (from a DHCP lease):
/// `0a:59:` + four bytes of a hash of its ID, stable across restarts.
pub fn mac_for_id(id: &uuid::Uuid) -> MacAddr {
    let h = crate::names::stable_hash(id.as_bytes()).to_be_bytes();
    MacAddr([0x0a, 0x59, h[0], h[1], h[2], h[3]])
}

/// The first MAC of the pool that is not taken.
pub fn mac_from_pool(pool: &MacPool, taken: &HashSet<MacAddr>) -> Option<MacAddr> {
    pool.ranges.iter().find_map(|r| {
        (r.start_mac_address.to_u64()..=r.end_mac_address.to_u64())
            .map(MacAddr::from_u64)
            .find(|m| m.is_unicast() && !taken.contains(m))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(p: &str) -> Subnet {
        Subnet { ip_address_prefix: p.parse().unwrap(), routes: vec![], policies: vec![], ip_subnets: vec![] }
    }

    #[test]
    fn ip_subnets_restrict_allocation_to_their_blocks_in_order_and_wrap() {
        let mut s = subnet("192.168.1.0/24");
        for b in ["192.168.1.200/30", "192.168.1.100/31"] {
            s.ip_subnets.push(crate::network::IpSubnet { ip_address_prefix: b.parse().unwrap(), flags: 0 });
        }
        let ip = |x: &str| -> IpAddr { x.parse().unwrap() };
        let mut taken = HashSet::new();
        let mut got = Vec::new();
        let mut after = None;
        while let Some(a) = first_free(&s, Some(ip("192.168.1.1")), &taken, after) {
            taken.insert(a);
            got.push(a.to_string());
            after = Some(a);
        }
        assert_eq!(
            got,
            ["192.168.1.200", "192.168.1.201", "192.168.1.202", "192.168.1.203", "192.168.1.100", "192.168.1.101"]
        );
        taken.remove(&ip("192.168.1.201"));
        assert_eq!(first_free(&s, None, &taken, Some(ip("192.168.1.101"))), Some(ip("192.168.1.201")), "wraps");
    }

    #[test]
    fn allocation_skips_network_gateway_and_broadcast() {
        let s = subnet("10.0.0.0/30");
        let gw = Some(s.gateway());
        assert_eq!(gw, Some("10.0.0.1".parse().unwrap()));
        let mut taken = HashSet::new();
        let a = first_free(&s, gw, &taken, None).unwrap();
        assert_eq!(a, "10.0.0.2".parse::<IpAddr>().unwrap());
        taken.insert(a);
        assert_eq!(first_free(&s, gw, &taken, None), None);
    }

    #[test]
    fn allocation_never_hands_out_a_taken_address() {
        let s = subnet("10.0.0.0/24");
        let gw = Some(s.gateway());
        let mut taken = HashSet::new();
        let mut last = None;
        for _ in 0..253 {
            let a = first_free(&s, gw, &taken, last).unwrap();
            assert!(taken.insert(a), "{a} handed out twice");
            last = Some(a);
        }
        assert_eq!(first_free(&s, gw, &taken, last), None);
    }

    #[test]
    fn ipv6_allocation_works_in_a_64() {
        let s = subnet("fd00:79::/64");
        let gw = Some(s.gateway());
        let a = first_free(&s, gw, &HashSet::new(), None).unwrap();
        assert_eq!(a, "fd00:79::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_freed_address_is_handed_out_again_only_after_the_rest_of_the_subnet() {
        let s = subnet("10.0.0.0/29"); // hosts .2 to .6 (.1 is the gateway, .7 broadcast)
        let gw = Some(s.gateway());
        let ip = |x: &str| -> IpAddr { x.parse().unwrap() };
        let mut taken: HashSet<IpAddr> = [ip("10.0.0.2"), ip("10.0.0.3")].into();
        // .3 was handed out last; .2 is freed: the next one is .4, not .2.
        taken.remove(&ip("10.0.0.2"));
        assert_eq!(first_free(&s, gw, &taken, Some(ip("10.0.0.3"))), Some(ip("10.0.0.4")));
        // At the end of the subnet it wraps around, past the gateway, to the freed one.
        taken.extend([ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.6")]);
        assert_eq!(first_free(&s, gw, &taken, Some(ip("10.0.0.6"))), Some(ip("10.0.0.2")));
        // A cursor outside the subnet (another family) starts from the beginning.
        assert_eq!(first_free(&s, gw, &HashSet::new(), Some(ip("fd00::9"))), Some(ip("10.0.0.2")));
    }

    #[test]
    fn mac_follows_ipv4_address() {
        assert_eq!(mac_for_ip("10.79.0.2".parse().unwrap()).to_string(), "0a:58:0a:4f:00:02");
    }
}
