//! The nft text of one endpoint's change, and of a whole-table load.
//!
//! Invariants:
//! - Chains are created (and flushed) before any rule is added, so a rule
//!   may `goto` a chain of the same program; a chain is deleted only after
//!   nothing refers to it (its dispatch elements gone, every chain that went
//!   to it flushed), in the same transaction.
//! - A dispatch element whose verdict changes is deleted and added again
//!   (a verdict map refuses an add with another verdict for its key).

use std::fmt::Write;

use ipnet::IpNet;

use super::acl::Program;
use super::{sets, SKELETON, TABLE};

/// Replaces the table with the skeleton, `sets` and `programs`, in one transaction.
pub fn load_script<'a>(
    programs: impl Iterator<Item = &'a Program>,
    all_sets: impl Iterator<Item = (&'a str, &'a [IpNet])>,
) -> String {
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n{SKELETON}");
    for (name, leaves) in all_sets {
        sets::declare(&mut s, name, leaves);
    }
    for p in programs {
        s += &set_script(p, None);
    }
    s
}

/// `key` or `key : verdict`.
fn element(key: &str, verdict: &Option<String>) -> String {
    match verdict {
        Some(v) => format!("{key} : {v}"),
        None => key.to_string(),
    }
}

/// Brings endpoint `new.tag`'s chains and elements from `old` to `new`
/// (the sets it names exist already).
pub fn set_script(new: &Program, old: Option<&Program>) -> String {
    let mut s = String::new();
    let chains = new.chains();
    for (chain, _) in &chains {
        let _ = writeln!(s, "add chain inet {TABLE} {chain}");
        let _ = writeln!(s, "flush chain inet {TABLE} {chain}");
    }
    if new.has_acls {
        let _ = writeln!(s, "add counter inet {TABLE} {}", new.counter());
    }
    for (chain, rules) in &chains {
        for r in rules.iter() {
            let _ = writeln!(s, "add rule inet {TABLE} {chain} {r}");
        }
    }
    let wanted = new.dispatch();
    let gone: Vec<_> =
        old.map(|o| o.dispatch()).unwrap_or_default().into_iter().filter(|e| !wanted.contains(e)).collect();
    remove_elements(&mut s, &gone);
    for (set, key, verdict) in &wanted {
        let _ = writeln!(s, "add element inet {TABLE} {set} {{ {} }}", element(key, verdict));
    }
    if let Some(old) = old {
        let kept: Vec<String> = chains.into_iter().map(|(c, _)| c).collect();
        let obsolete: Vec<String> = old.chains().into_iter().map(|(c, _)| c).filter(|c| !kept.contains(c)).collect();
        remove_chains(&mut s, &obsolete);
        if old.has_acls && !new.has_acls {
            remove_counter(&mut s, old);
        }
    }
    s
}

/// Deletes `elems`; each is added first, so that deleting one that is gone succeeds.
fn remove_elements(s: &mut String, elems: &[(&'static str, String, Option<String>)]) {
    for (set, key, verdict) in elems {
        let _ = writeln!(s, "add element inet {TABLE} {set} {{ {} }}", element(key, verdict));
        let _ = writeln!(s, "delete element inet {TABLE} {set} {{ {key} }}");
    }
}

/// Deletes `chains` (nothing outside them refers to them any more): all
/// flushed first, as one may go to another.
fn remove_chains(s: &mut String, chains: &[String]) {
    for chain in chains {
        let _ = writeln!(s, "add chain inet {TABLE} {chain}");
        let _ = writeln!(s, "flush chain inet {TABLE} {chain}");
    }
    for chain in chains {
        let _ = writeln!(s, "delete chain inet {TABLE} {chain}");
    }
}

fn remove_counter(s: &mut String, old: &Program) {
    let _ = writeln!(s, "add counter inet {TABLE} {}", old.counter());
    let _ = writeln!(s, "delete counter inet {TABLE} {}", old.counter());
}

/// Removes endpoint `old.tag`'s elements, chains and counter.
pub fn remove_script(old: &Program) -> String {
    let mut s = String::new();
    remove_elements(&mut s, &old.dispatch());
    if old.has_acls {
        let chains: Vec<String> = old.chains().into_iter().map(|(c, _)| c).collect();
        remove_chains(&mut s, &chains);
        remove_counter(&mut s, old);
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cnet_model::acl::{AclPolicy, AclRule};
    use cnet_model::tier::TierAclPolicy;
    use uuid::Uuid;

    use super::super::acl::{compile, Source};
    use super::*;

    fn rule(json: serde_json::Value) -> AclRule {
        serde_json::from_value::<AclPolicy>(json).unwrap().rule().unwrap()
    }

    /// One endpoint's change is sent by cnet's netlink writer, not by
    /// libnftables (whose cache fetch grows with the table): every command
    /// the compiler emits for it is one the writer takes.
    #[test]
    fn every_change_of_one_endpoint_is_in_the_netlink_writers_subset() {
        let rules = [
            rule(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "6,17",
                "LocalPorts": "80,8000-8080", "RemoteAddresses": "10.1.0.0/16,web,2001:db8::/64", "Priority": 200})),
            rule(
                serde_json::json!({"Action": "Block", "Direction": "In", "Protocols": "1", "RemoteAddresses": "10.1.0.9"}),
            ),
            rule(serde_json::json!({"Action": "Pass", "Direction": "In", "Priority": 300})),
            rule(serde_json::json!({"Action": "Block", "Direction": "Out", "Protocols": "6", "RemotePorts": "443",
                "RemoteAddresses": "192.0.2.0/25", "LocalAddresses": "10.0.0.2"})),
            rule(
                serde_json::json!({"Action": "Allow", "Direction": "Out", "Protocols": "58", "RemoteAddresses": "fd00::/8"}),
            ),
        ];
        let tiers = [serde_json::from_value::<TierAclPolicy>(serde_json::json!({"Name": "t", "Direction": "In",
            "Order": 1, "TierAclRules": [{"TierAclRuleAction": "Pass", "RemoteAddresses": "10.9.0.0/24"},
            {"TierAclRuleAction": "Block", "Protocols": "6", "LocalPorts": "22"}]}))
        .unwrap()
        .tier()
        .unwrap()];
        let sets = BTreeMap::from([("web".to_string(), "ips_n_w".to_string())]);
        let ips = ["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let program = |rules: &[AclRule], tiers, isolated| {
            let src = Source { rules, tiers, sets: Some(&sets) };
            compile(Uuid::from_u128(7), "cnb0", &ips, &src, isolated).unwrap()
        };
        let full = program(&rules, &tiers, true);
        let fewer = program(&rules[3..], &[], false);
        for (what, script) in [
            ("a new endpoint", set_script(&full, None)),
            ("a change that drops tiers and DisableICC", set_script(&fewer, Some(&full))),
            ("a change that adds them", set_script(&full, Some(&fewer))),
            ("a removal", remove_script(&full)),
        ] {
            assert!(cnet_dataplane::nftwrite::parse(&script).is_some(), "{what}:\n{script}");
        }
    }
}
