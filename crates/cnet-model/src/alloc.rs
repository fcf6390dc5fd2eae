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
pub fn first_free(
    subnet: &Subnet,
    gateway: Option<IpAddr>,
    taken: &HashSet<IpAddr>,
    after: Option<IpAddr>,
) -> Option<IpAddr> {
    let net = subnet.ip_address_prefix;
    let host_bits = (net.max_prefix_len() - net.prefix_len()) as u32;
    // Cap the search for huge IPv6 subnets: 2^20 candidates is plenty.
    let size: u128 = if host_bits >= 20 { 1 << 20 } else { 1u128 << host_bits };
    let start = after.filter(|a| net.contains(a)).map(|a| offset_of(&net, a) + 1).unwrap_or(0);
    (0..size)
        .map(|i| (start + i) % size)
        .map(|off| nth_host(&net, off))
        .find(|ip| is_assignable(subnet, gateway, *ip) && !taken.contains(ip))
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
        Subnet { ip_address_prefix: p.parse().unwrap(), routes: vec![], policies: vec![] }
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
