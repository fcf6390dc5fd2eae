//! The ACL compiler: an endpoint's checked ACL rules (its own and its
//! network's NetworkACLs) and tiers → the nft rules of its chains and its
//! dispatch elements. Pure, so it is unit-tested as text.
//!
//! Invariants:
//! - No anonymous sets are emitted (nft 1.0.6 takes minutes to load 20,000
//!   of them): every list item becomes its own rule, and an IP set is the
//!   named set of its network (`@ips_…_4`, `@ips_…_6`, [`super::sets`]),
//!   whose members change without any rule changing.
//! - Rules run by ascending `Priority`; at equal priority Block before
//!   Allow and Pass, then the endpoint's own ACLs before its network's, then
//!   in the order given.
//! - Allow is `return` (the base chain goes on, so the peer's own In rules
//!   still run for endpoint-to-endpoint traffic); Block is a drop counted
//!   in the endpoint's `acl_<tag>` counter; Pass ends the endpoint's rules
//!   and leaves the decision to the default.
//! - The In chain ends in `default_in` (inbound TCP, UDP, ICMP and IGMP
//!   allowed, the rest dropped, as Windows does); the Out chain ends by
//!   falling through (outbound allowed).
//! - Tiers ([`super::tiers`]) come first: the dispatch jumps to a
//!   direction's first tier when it has tiers, else to its ACL chain.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use cnet_model::acl::{AclAction, AclAddress, AclDirection, AclRule, PortRange};
use cnet_model::tier::Tier;
use uuid::Uuid;

/// At most this many kernel rules for one endpoint.
pub const MAX_RULES: usize = 10_000;

/// One endpoint's compiled ACLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// 16 hex digits of the endpoint ID: names its chains and counter.
    pub tag: String,
    /// The switch its traffic is seen on, with its addresses: the dispatch keys.
    pub switch: String,
    pub ips: Vec<IpAddr>,
    /// Whether it has ACL rules or tiers (and so chains and dispatch elements).
    pub has_acls: bool,
    pub rules_in: Vec<String>,
    pub rules_out: Vec<String>,
    /// Its tiers of each direction by ascending Order: chains `ep_<tag>_<dir>_t<i>`.
    pub tiers_in: Vec<Vec<String>>,
    pub tiers_out: Vec<Vec<String>>,
    /// DisableICC: no traffic with the other endpoints of its switch.
    pub isolated: bool,
    /// The IP sets its rules name (nft names without the family suffix).
    pub sets: BTreeSet<String>,
}

/// What an endpoint's chains are compiled from.
#[derive(Clone, Copy, Default)]
pub struct Source<'a> {
    /// Its own ACLs, then its network's NetworkACLs.
    pub rules: &'a [AclRule],
    pub tiers: &'a [Tier],
    /// The nft name of each set Id of its network.
    pub sets: Option<&'a BTreeMap<String, String>>,
}

fn dir_name(dir: AclDirection) -> &'static str {
    match dir {
        AclDirection::In => "in",
        AclDirection::Out => "out",
    }
}

impl Program {
    /// The chain of its ACLs of `dir`.
    pub fn chain(&self, dir: AclDirection) -> String {
        format!("ep_{}_{}", self.tag, dir_name(dir))
    }
    /// The chain of its tier `i` (0 first) of `dir`.
    pub fn tier_chain(&self, dir: AclDirection, i: usize) -> String {
        format!("ep_{}_{}_t{i}", self.tag, dir_name(dir))
    }
    pub fn tiers(&self, dir: AclDirection) -> &[Vec<String>] {
        match dir {
            AclDirection::In => &self.tiers_in,
            AclDirection::Out => &self.tiers_out,
        }
    }
    /// The chain the dispatch jumps to for `dir`.
    pub fn entry(&self, dir: AclDirection) -> String {
        if self.tiers(dir).is_empty() {
            self.chain(dir)
        } else {
            self.tier_chain(dir, 0)
        }
    }
    /// Every chain with its rules (none when it has no ACLs).
    pub fn chains(&self) -> Vec<(String, &[String])> {
        if !self.has_acls {
            return vec![];
        }
        let mut out = vec![
            (self.chain(AclDirection::In), &self.rules_in[..]),
            (self.chain(AclDirection::Out), &self.rules_out[..]),
        ];
        for dir in [AclDirection::In, AclDirection::Out] {
            out.extend(self.tiers(dir).iter().enumerate().map(|(i, r)| (self.tier_chain(dir, i), &r[..])));
        }
        out
    }
    pub fn counter(&self) -> String {
        format!("acl_{}", self.tag)
    }
    /// The verdict of a Block.
    pub fn block(&self) -> String {
        format!("counter name \"{}\" drop", self.counter())
    }
    /// Its elements of the table's maps and sets: (map or set, key, verdict of a map).
    pub fn dispatch(&self) -> Vec<(&'static str, String, Option<String>)> {
        let mut out = Vec::new();
        for ip in &self.ips {
            let v4 = ip.is_ipv4();
            let key = format!("\"{}\" . {ip}", self.switch);
            if self.has_acls {
                let (i, o) = if v4 { ("in4", "out4") } else { ("in6", "out6") };
                out.push((i, key.clone(), Some(format!("jump {}", self.entry(AclDirection::In)))));
                out.push((o, key.clone(), Some(format!("jump {}", self.entry(AclDirection::Out)))));
            }
            if self.isolated {
                out.push((if v4 { "noicc4" } else { "noicc6" }, key, None));
            }
        }
        out
    }
}

/// The tag of endpoint `id`.
pub fn tag_of(id: Uuid) -> String {
    id.simple().to_string()[..16].to_string()
}

/// Compiles `src` of endpoint `id`, whose traffic passes `switch` from
/// and to `ips` (isolated from the switch's other endpoints when `isolated`).
pub fn compile(id: Uuid, switch: &str, ips: &[IpAddr], src: &Source, isolated: bool) -> Result<Program, String> {
    let mut p = Program {
        tag: tag_of(id),
        switch: switch.to_string(),
        ips: ips.to_vec(),
        has_acls: !src.rules.is_empty() || !src.tiers.is_empty(),
        rules_in: vec![],
        rules_out: vec![],
        tiers_in: vec![],
        tiers_out: vec![],
        isolated,
        sets: BTreeSet::new(),
    };
    let block = p.block();
    let mut emitter = Emitter { sets: src.sets, used: BTreeSet::new(), count: 0 };
    for r in by_priority(src.rules) {
        let verdict = match (r.action, r.direction) {
            (AclAction::Allow, _) | (AclAction::Pass, AclDirection::Out) => "return",
            (AclAction::Block, _) => block.as_str(),
            (AclAction::Pass, AclDirection::In) => "goto default_in",
        };
        let out = if r.direction == AclDirection::In { &mut p.rules_in } else { &mut p.rules_out };
        emitter.emit(r, verdict, out)?;
    }
    p.rules_in.push("goto default_in".into());
    super::tiers::compile(&mut p, src.tiers, &mut emitter)?;
    p.sets = emitter.used;
    Ok(p)
}

/// Rules by ascending priority, Block first at equal priority, else as given.
pub(super) fn by_priority(rules: &[AclRule]) -> Vec<&AclRule> {
    let mut order: Vec<&AclRule> = rules.iter().collect();
    order.sort_by_key(|r| (r.priority, r.action != AclAction::Block));
    order
}

/// Writes rules, counting them against [`MAX_RULES`] and noting the sets they name.
pub(super) struct Emitter<'a> {
    sets: Option<&'a BTreeMap<String, String>>,
    used: BTreeSet<String>,
    count: usize,
}

impl Emitter<'_> {
    /// Appends `r`'s matches with `verdict` to `out`.
    pub(super) fn emit(&mut self, r: &AclRule, verdict: &str, out: &mut Vec<String>) -> Result<(), String> {
        let ms = self.matches(r)?;
        self.count += ms.len();
        out.extend(ms.into_iter().map(|m| format!("{m}{verdict}")));
        if self.count > MAX_RULES {
            return Err(format!(
                "the endpoint's ACLs expand to more than {MAX_RULES} kernel rules (every combination of protocol, addresses and ports is one): use prefixes, IP sets and port ranges instead of long lists"
            ));
        }
        Ok(())
    }

    /// An address list as (IPv4?, nft operand) items; a set is two, one per family.
    fn operands(&mut self, list: &[AclAddress]) -> Result<Vec<(bool, String)>, String> {
        let mut out = Vec::new();
        for a in list {
            match a {
                AclAddress::Prefix(n) => out.push((n.addr().is_ipv4(), n.to_string())),
                AclAddress::Set(id) => {
                    let name = self.sets.and_then(|s| s.get(id)).ok_or_else(|| {
                        format!("its ACLs name IP set {id:?}, which its network does not have: add the SetPolicy first")
                    })?;
                    self.used.insert(name.clone());
                    out.push((true, format!("@{name}_4")));
                    out.push((false, format!("@{name}_6")));
                }
            }
        }
        Ok(out)
    }

    /// The match parts of one rule: one per combination of its list items
    /// that can meet (an IPv4 local address never with an IPv6 remote one).
    fn matches(&mut self, r: &AclRule) -> Result<Vec<String>, String> {
        let inbound = r.direction == AclDirection::In;
        let (local_addr, remote_addr) = if inbound { ("daddr", "saddr") } else { ("saddr", "daddr") };
        let (local_port, remote_port) = if inbound { ("dport", "sport") } else { ("sport", "dport") };
        let (locals, remotes) = (self.operands(&r.local)?, self.operands(&r.remote)?);
        let mut out = Vec::new();
        for proto in opt(&r.protocols) {
            for local in opt(&locals) {
                for remote in opt(&remotes) {
                    let Some(family) = family(proto, local, remote) else { continue };
                    for lp in opt(&r.local_ports) {
                        for rp in opt(&r.remote_ports) {
                            let mut m = String::new();
                            if let Some(p) = proto {
                                m += &format!("meta l4proto {p} ");
                            }
                            if let Some((_, a)) = local {
                                m += &format!("{family} {local_addr} {a} ");
                            }
                            if let Some((_, a)) = remote {
                                m += &format!("{family} {remote_addr} {a} ");
                            }
                            if let Some(pr) = lp {
                                m += &format!("th {local_port} {} ", range(pr));
                            }
                            if let Some(pr) = rp {
                                m += &format!("th {remote_port} {} ", range(pr));
                            }
                            out.push(m);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn opt<T>(list: &[T]) -> Vec<Option<&T>> {
    if list.is_empty() {
        vec![None]
    } else {
        list.iter().map(Some).collect()
    }
}

/// `ip` or `ip6` for a combination, or `None` when its parts cannot meet.
fn family(proto: Option<&u8>, local: Option<&(bool, String)>, remote: Option<&(bool, String)>) -> Option<&'static str> {
    let fams: Vec<bool> = [local, remote].into_iter().flatten().map(|(v4, _)| *v4).collect();
    if fams.windows(2).any(|w| w[0] != w[1]) {
        return None;
    }
    let v4 = fams.first().copied();
    match (proto, v4) {
        (Some(1), Some(false)) | (Some(58), Some(true)) => None,
        (_, Some(false)) => Some("ip6"),
        _ => Some("ip"),
    }
}

fn range(p: &PortRange) -> String {
    if p.lo == p.hi {
        p.lo.to_string()
    } else {
        format!("{}-{}", p.lo, p.hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnet_model::acl::AclPolicy;

    fn rule(json: serde_json::Value) -> AclRule {
        serde_json::from_value::<AclPolicy>(json).unwrap().rule().unwrap()
    }

    fn program(rules: &[AclRule]) -> Program {
        compile(
            Uuid::from_u128(0xabcd_ef01_2345_6789_0000_0000_0000_0000),
            "cnb0",
            &["10.0.0.2".parse().unwrap()],
            &Source { rules, ..Default::default() },
            false,
        )
        .unwrap()
    }

    #[test]
    fn lists_become_one_rule_per_combination_in_priority_order_block_first() {
        let p = program(&[
            rule(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "6,17",
                "LocalPorts": "80,8000-8080", "RemoteAddresses": "10.1.0.0/16", "Priority": 200})),
            rule(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "1", "Priority": 100})),
            rule(serde_json::json!({"Action": "Block", "Direction": "In", "Protocols": "1", "Priority": 100,
                "RemoteAddresses": "10.1.0.9"})),
            rule(serde_json::json!({"Action": "Pass", "Direction": "In", "Priority": 300})),
        ]);
        let drop = "counter name \"acl_abcdef0123456789\" drop";
        assert_eq!(
            p.rules_in,
            vec![
                format!("meta l4proto 1 ip saddr 10.1.0.9/32 {drop}"),
                "meta l4proto 1 return".to_string(),
                "meta l4proto 6 ip saddr 10.1.0.0/16 th dport 80 return".into(),
                "meta l4proto 6 ip saddr 10.1.0.0/16 th dport 8000-8080 return".into(),
                "meta l4proto 17 ip saddr 10.1.0.0/16 th dport 80 return".into(),
                "meta l4proto 17 ip saddr 10.1.0.0/16 th dport 8000-8080 return".into(),
                "goto default_in".into(),
                "goto default_in".into(),
            ]
        );
        assert!(p.rules_out.is_empty());
        assert!(p.rules_in.iter().all(|r| !r.contains('{')), "no anonymous sets");
    }

    #[test]
    fn out_rules_swap_the_sides_and_mixed_families_split() {
        let p = program(&[rule(serde_json::json!({"Action": "Block", "Direction": "Out", "Protocols": "6",
            "RemoteAddresses": "192.0.2.1,2001:db8::/64", "LocalAddresses": "10.0.0.2", "RemotePorts": "443"}))]);
        assert_eq!(
            p.rules_out,
            vec!["meta l4proto 6 ip saddr 10.0.0.2/32 ip daddr 192.0.2.1/32 th dport 443 counter name \"acl_abcdef0123456789\" drop"]
        );
        let p = program(&[rule(serde_json::json!({"Action": "Allow", "Direction": "Out",
            "RemoteAddresses": "192.0.2.1,2001:db8::/64", "Protocols": "1,58"}))]);
        assert_eq!(
            p.rules_out,
            vec!["meta l4proto 1 ip daddr 192.0.2.1/32 return", "meta l4proto 58 ip6 daddr 2001:db8::/64 return"]
        );
        assert_eq!(
            p.dispatch()[0],
            ("in4", "\"cnb0\" . 10.0.0.2".to_string(), Some("jump ep_abcdef0123456789_in".into()))
        );
        let isolated = compile(Uuid::nil(), "cnb0", &["fd00::2".parse().unwrap()], &Source::default(), true).unwrap();
        assert_eq!(
            isolated.dispatch(),
            vec![("noicc6", "\"cnb0\" . fd00::2".to_string(), None)],
            "no chains without ACLs"
        );
    }

    #[test]
    fn a_cross_product_past_the_limit_is_refused() {
        let ports: Vec<String> = (1..=200).map(|p| p.to_string()).collect();
        let addrs: Vec<String> = (1..=60).map(|i| format!("10.9.0.{i}")).collect();
        let r = rule(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "6",
            "LocalPorts": ports.join(","), "RemoteAddresses": addrs.join(",")}));
        let err = compile(Uuid::nil(), "b", &[], &Source { rules: &[r], ..Default::default() }, false).unwrap_err();
        assert!(err.contains("port ranges instead of long lists"), "{err}");
    }

    #[test]
    fn a_set_is_named_by_both_halves_and_network_acls_follow_the_endpoints_own_at_equal_priority() {
        let own = rule(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "6",
            "RemoteAddresses": "web", "LocalPorts": "80", "Priority": 100}));
        let icmp = rule(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "1",
            "RemoteAddresses": "web,fd00::9", "Priority": 300}));
        let network =
            rule(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "17", "Priority": 100}));
        let network_block = rule(serde_json::json!({"Action": "Block", "Direction": "In", "Priority": 200}));
        let sets = BTreeMap::from([("web".to_string(), "ips_n_w".to_string())]);
        let rules = [own, icmp, network, network_block];
        let src = Source { rules: &rules, tiers: &[], sets: Some(&sets) };
        let p = compile(Uuid::nil(), "cnb0", &[], &src, false).unwrap();
        assert_eq!(
            p.rules_in,
            vec![
                "meta l4proto 6 ip saddr @ips_n_w_4 th dport 80 return".to_string(),
                "meta l4proto 6 ip6 saddr @ips_n_w_6 th dport 80 return".into(),
                "meta l4proto 17 return".into(),
                "counter name \"acl_0000000000000000\" drop".into(),
                "meta l4proto 1 ip saddr @ips_n_w_4 return".into(),
                "goto default_in".into(),
            ],
            "ICMP never meets the IPv6 half nor an IPv6 address"
        );
        assert_eq!(p.sets, BTreeSet::from(["ips_n_w".to_string()]));
        let unknown = Source { rules: &rules, tiers: &[], sets: Some(&BTreeMap::new()) };
        assert!(compile(Uuid::nil(), "cnb0", &[], &unknown, false).unwrap_err().contains("\"web\""));
    }
}
