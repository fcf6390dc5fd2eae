//! Address blocks: the pieces of an overlay subnet hosts claim, by index.
//!
//! Invariants: block `i` of a subnet is the `i`-th aligned `/len` inside it,
//! computed, never enumerated (an IPv6 /64 has 2^58 blocks of /122); a host
//! looks for a free block from an offset of its own (its ID's hash), so
//! hosts starting together rarely race for the same block; a search costs
//! as many steps as blocks are held, not as blocks exist.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use uuid::Uuid;

/// The block a key names (`10.0.0.64_26`), or `None` for another key.
pub fn parse_key(s: &str) -> Option<IpNet> {
    let (ip, len) = s.split_once('_')?;
    let net = IpNet::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.addr()).then_some(net)
}

fn bits(subnet: IpNet) -> u8 {
    match subnet {
        IpNet::V4(_) => 32,
        IpNet::V6(_) => 128,
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// How many blocks of `/len` `subnet` holds (saturating at `u128::MAX`).
pub fn count(subnet: IpNet, len: u8) -> u128 {
    let shift = len.saturating_sub(subnet.prefix_len()) as u32;
    1u128.checked_shl(shift).unwrap_or(u128::MAX)
}

/// Block `i` of `/len` in `subnet`.
pub fn nth(subnet: IpNet, len: u8, i: u128) -> IpNet {
    let size = 1u128 << (bits(subnet) - len);
    let start = to_u128(subnet.network()) + i * size;
    let ip = match subnet {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(start as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(start)),
    };
    IpNet::new(ip, len).expect("a prefix length within the family")
}

/// The first block of `/len` in `subnet` that is not in `held`, looking
/// from `host`'s own offset onwards (wrapping); `None` when all are held.
pub fn first_free(subnet: IpNet, len: u8, held: &[IpNet], host: Uuid) -> Option<IpNet> {
    if len < subnet.prefix_len() || len > bits(subnet) {
        return None;
    }
    let n = count(subnet, len);
    let start = host.as_u128() % n;
    // Among `held.len() + 1` consecutive candidates one is free, unless all are held.
    let tries = (held.len() as u128 + 1).min(n);
    (0..tries).map(|k| nth(subnet, len, (start + k) % n)).find(|b| !held.contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keys_name_aligned_blocks_only() {
        assert_eq!(parse_key("10.0.0.64_26"), Some(net("10.0.0.64/26")));
        assert_eq!(parse_key("fd00::40_122"), Some(net("fd00::40/122")));
        assert_eq!(parse_key("10.0.0.65_26"), None, "not aligned");
        assert_eq!(parse_key("10.0.0.0/26"), None);
        assert_eq!(parse_key("garbage"), None);
    }

    #[test]
    fn a_free_block_is_found_from_the_hosts_offset_and_none_when_all_are_held() {
        let s = net("10.1.0.0/24");
        let host = Uuid::from_u128(2); // offset 2 of 4 blocks
        assert_eq!(first_free(s, 26, &[], host), Some(net("10.1.0.128/26")));
        let held = [net("10.1.0.128/26"), net("10.1.0.192/26")];
        assert_eq!(first_free(s, 26, &held, host), Some(net("10.1.0.0/26")), "wraps around");
        let all: Vec<IpNet> = (0..4).map(|i| nth(s, 26, i)).collect();
        assert_eq!(first_free(s, 26, &all, host), None);
        assert_eq!(first_free(s, 23, &[], host), None, "a block larger than the subnet");
    }

    #[test]
    fn ipv6_subnets_with_astronomically_many_blocks_are_searched_in_a_few_steps() {
        let s = net("fd00:99::/64");
        assert_eq!(count(s, 122), 1 << 58);
        let host = Uuid::from_u128(u128::MAX);
        let b = first_free(s, 122, &[], host).unwrap();
        assert!(s.contains(&b.addr()) && b.prefix_len() == 122 && b.network() == b.addr(), "{b}");
        let next = first_free(s, 122, &[b], host).unwrap();
        assert_ne!(next, b);
    }
}
