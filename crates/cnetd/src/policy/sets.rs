//! IP sets in the kernel: a network's `SetPolicy` policies → named interval
//! sets of `inet cnetpol`, two per set, `ips_<net>_<id>_4` and `_6`.
//!
//! Invariants:
//! - A set's name is `ips_` + 10 hex digits of its network (the digits of
//!   the network's bridge name, unique among networks: creating a network
//!   refuses a collision) + 12 hex digits of a hash of its Id (a collision
//!   within a network is refused by [`of_network`]): short, safe for nft,
//!   and never the name of another network's set.
//! - A nested set is a set of its own holding the union of its leaves
//!   ([`cnet_model::sets::flatten`]): nftables has no set of sets.
//! - Contents are normalised (aggregated, no prefix inside another), so an
//!   element is never refused as overlapping and never swallowed: without
//!   `auto-merge`, a change is the exact deletes then the exact adds.
//! - Only sets some endpoint's rules name are in the kernel; every set is
//!   in the store with its network.

use std::collections::BTreeMap;
use std::fmt::Write;

use cnet_model::names::stable_hash;
use ipnet::IpNet;

use super::TABLE;
use crate::state::NetworkRecord;

/// A network's sets: the nft name of each Id, and each name's leaves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetSets {
    pub names: BTreeMap<String, String>,
    pub contents: BTreeMap<String, Vec<IpNet>>,
}

/// The nft name (without the family suffix) of set `id` of `net`.
pub fn set_name(net: &NetworkRecord, id: &str) -> String {
    let net_part = stable_hash(net.id.as_bytes()) & 0xff_ffff_ffff;
    format!("ips_{net_part:010x}_{:012x}", stable_hash(id.as_bytes()) & 0xffff_ffff_ffff)
}

/// `net`'s sets, flattened; what to fix when two Ids would share a name.
pub fn of_network(net: &NetworkRecord) -> Result<NetSets, String> {
    let flat = cnet_model::sets::flatten(&net.sets)?;
    let mut out = NetSets::default();
    for (id, leaves) in flat {
        let name = set_name(net, &id);
        if let Some((other, _)) = out.names.iter().find(|(_, n)| **n == name) {
            return Err(format!("SetPolicy Ids {other:?} and {id:?} hash to the same kernel set name: rename one"));
        }
        out.contents.insert(name.clone(), leaves);
        out.names.insert(id, name);
    }
    Ok(out)
}

fn half(leaves: &[IpNet], v4: bool) -> Vec<String> {
    leaves.iter().filter(|n| n.addr().is_ipv4() == v4).map(|n| n.to_string()).collect()
}

fn families() -> [(bool, &'static str, &'static str); 2] {
    [(true, "4", "ipv4_addr"), (false, "6", "ipv6_addr")]
}

/// Creates set `name` holding `leaves`.
pub fn declare(s: &mut String, name: &str, leaves: &[IpNet]) {
    for (v4, suffix, ty) in families() {
        let _ = writeln!(s, "add set inet {TABLE} {name}_{suffix} {{ type {ty}; flags interval; }}");
        let elems = half(leaves, v4);
        if !elems.is_empty() {
            let _ = writeln!(s, "add element inet {TABLE} {name}_{suffix} {{ {} }}", elems.join(", "));
        }
    }
}

/// Brings set `name` from `old` to `new`: deletes first, so that a new
/// prefix never overlaps an old one it replaces.
pub fn change(s: &mut String, name: &str, old: &[IpNet], new: &[IpNet]) {
    for (v4, suffix, _) in families() {
        let gone: Vec<String> = half(old, v4).into_iter().filter(|e| !half(new, v4).contains(e)).collect();
        if !gone.is_empty() {
            let _ = writeln!(s, "delete element inet {TABLE} {name}_{suffix} {{ {} }}", gone.join(", "));
        }
    }
    for (v4, suffix, _) in families() {
        let added: Vec<String> = half(new, v4).into_iter().filter(|e| !half(old, v4).contains(e)).collect();
        if !added.is_empty() {
            let _ = writeln!(s, "add element inet {TABLE} {name}_{suffix} {{ {} }}", added.join(", "));
        }
    }
}

/// Deletes set `name` (no rule names it any more).
pub fn delete(s: &mut String, name: &str) {
    for (_, suffix, _) in families() {
        let _ = writeln!(s, "delete set inet {TABLE} {name}_{suffix}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_membership_change_is_exact_deletes_then_exact_adds() {
        let mut s = String::new();
        change(
            &mut s,
            "ips_x",
            &nets(&["10.0.0.0/25", "10.1.2.3/32", "fd00::/64"]),
            &nets(&["10.0.0.0/24", "fd00::/64"]),
        );
        assert_eq!(
            s,
            "delete element inet cnetpol ips_x_4 { 10.0.0.0/25, 10.1.2.3/32 }\nadd element inet cnetpol ips_x_4 { 10.0.0.0/24 }\n"
        );
        let mut s = String::new();
        declare(&mut s, "ips_x", &nets(&["fd00::1/128"]));
        assert_eq!(
            s,
            "add set inet cnetpol ips_x_4 { type ipv4_addr; flags interval; }\n\
             add set inet cnetpol ips_x_6 { type ipv6_addr; flags interval; }\n\
             add element inet cnetpol ips_x_6 { fd00::1/128 }\n"
        );
    }
}
