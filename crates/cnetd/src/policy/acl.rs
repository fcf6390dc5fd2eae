//! The ACL compiler: an endpoint's checked ACL rules → the nft rules of its
//! two chains and its dispatch elements. Pure, so it is unit-tested as text.
//!
//! Invariants:
//! - No anonymous sets are emitted (nft 1.0.6 takes minutes to load 20,000
//!   of them): every list item becomes its own rule.
//! - Rules run by ascending `Priority`; at equal priority Block before
//!   Allow and Pass, then in the order given.
//! - Allow is `return` (the base chain goes on, so the peer's own In rules
//!   still run for endpoint-to-endpoint traffic); Block is a drop counted
//!   in the endpoint's `acl_<tag>` counter; Pass ends the endpoint's rules
//!   and leaves the decision to the default.
//! - The In chain ends in `default_in` (inbound TCP, UDP, ICMP and IGMP
//!   allowed, the rest dropped, as Windows does); the Out chain ends by
//!   falling through (outbound allowed).

use std::net::IpAddr;

use cnet_model::acl::{AclAction, AclDirection, AclRule, PortRange};
use ipnet::IpNet;
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
    /// Whether it has ACL rules (and so chains and dispatch elements).
    pub has_acls: bool,
    pub rules_in: Vec<String>,
    pub rules_out: Vec<String>,
    /// DisableICC: no traffic with the other endpoints of its switch.
    pub isolated: bool,
}

impl Program {
    pub fn chain(&self, dir: AclDirection) -> String {
        match dir {
            AclDirection::In => format!("ep_{}_in", self.tag),
            AclDirection::Out => format!("ep_{}_out", self.tag),
        }
    }
    pub fn counter(&self) -> String {
        format!("acl_{}", self.tag)
    }
    /// Its elements of the table's maps and sets: (map or set, key, verdict of a map).
    pub fn dispatch(&self) -> Vec<(&'static str, String, Option<String>)> {
        let mut out = Vec::new();
        for ip in &self.ips {
            let v4 = ip.is_ipv4();
            let key = format!("\"{}\" . {ip}", self.switch);
            if self.has_acls {
                let (i, o) = if v4 { ("in4", "out4") } else { ("in6", "out6") };
                out.push((i, key.clone(), Some(format!("jump {}", self.chain(AclDirection::In)))));
                out.push((o, key.clone(), Some(format!("jump {}", self.chain(AclDirection::Out)))));
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

/// Compiles `rules` of endpoint `id`, whose traffic passes `switch` from
/// and to `ips` (isolated from the switch's other endpoints when `isolated`).
pub fn compile(id: Uuid, switch: &str, ips: &[IpAddr], rules: &[AclRule], isolated: bool) -> Result<Program, String> {
    let mut p = Program {
        tag: tag_of(id),
        switch: switch.to_string(),
        ips: ips.to_vec(),
        has_acls: !rules.is_empty(),
        rules_in: vec![],
        rules_out: vec![],
        isolated,
    };
    let mut order: Vec<&AclRule> = rules.iter().collect();
    order.sort_by_key(|r| (r.priority, r.action != AclAction::Block));
    let block = format!("counter name \"{}\" drop", p.counter());
    for r in order {
        let verdict = match (r.action, r.direction) {
            (AclAction::Allow, _) | (AclAction::Pass, AclDirection::Out) => "return",
            (AclAction::Block, _) => block.as_str(),
            (AclAction::Pass, AclDirection::In) => "goto default_in",
        };
        let out = if r.direction == AclDirection::In { &mut p.rules_in } else { &mut p.rules_out };
        for m in matches(r) {
            out.push(format!("{m}{verdict}"));
        }
        if p.rules_in.len() + p.rules_out.len() > MAX_RULES {
            return Err(format!(
                "the endpoint's ACLs expand to more than {MAX_RULES} kernel rules (every combination of protocol, addresses and ports is one): use prefixes and port ranges instead of long lists"
            ));
        }
    }
    p.rules_in.push("goto default_in".into());
    Ok(p)
}

/// The match parts of one rule: one per combination of its list items
/// that can meet (an IPv4 local address never with an IPv6 remote one).
fn matches(r: &AclRule) -> Vec<String> {
    let inbound = r.direction == AclDirection::In;
    let (local_addr, remote_addr) = if inbound { ("daddr", "saddr") } else { ("saddr", "daddr") };
    let (local_port, remote_port) = if inbound { ("dport", "sport") } else { ("sport", "dport") };
    let mut out = Vec::new();
    for proto in opt(&r.protocols) {
        for local in opt(&r.local) {
            for remote in opt(&r.remote) {
                let Some(family) = family(proto, local, remote) else { continue };
                for lp in opt(&r.local_ports) {
                    for rp in opt(&r.remote_ports) {
                        let mut m = String::new();
                        if let Some(p) = proto {
                            m += &format!("meta l4proto {p} ");
                        }
                        if let Some(a) = local {
                            m += &format!("{family} {local_addr} {a} ");
                        }
                        if let Some(a) = remote {
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
    out
}

fn opt<T>(list: &[T]) -> Vec<Option<&T>> {
    if list.is_empty() {
        vec![None]
    } else {
        list.iter().map(Some).collect()
    }
}

/// `ip` or `ip6` for a combination, or `None` when its parts cannot meet.
fn family(proto: Option<&u8>, local: Option<&IpNet>, remote: Option<&IpNet>) -> Option<&'static str> {
    let fams: Vec<bool> = [local, remote].into_iter().flatten().map(|n| n.addr().is_ipv4()).collect();
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
            rules,
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
        let isolated = compile(Uuid::nil(), "cnb0", &["fd00::2".parse().unwrap()], &[], true).unwrap();
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
        let err = compile(Uuid::nil(), "b", &[], &[r], false).unwrap_err();
        assert!(err.contains("prefixes and port ranges"), "{err}");
    }
}
