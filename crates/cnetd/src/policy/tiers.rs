//! The tier compiler: an endpoint's `TierAcl` policies → one chain per tier,
//! `ep_<tag>_<dir>_t<i>` (`i` from 0, by ascending `Order`), run before its
//! ACL chain.
//!
//! Invariants:
//! - A tier's rules run by ascending `Priority`, Block first at equal
//!   priority (as ACLs, [`super::acl::by_priority`]).
//! - Allow is `return` and Block the counted drop, as in ACLs; Pass is
//!   `goto` the next tier's chain, and so is the end of a tier (no match
//!   falls through to the next tier). After the last tier comes the ACL
//!   chain of the direction (its own ACLs and NetworkACLs, then the default).
//! - Chains are numbered by position, not by `Order`: their names stay
//!   short, and a change in the number of tiers adds or deletes the last
//!   chains only.

use cnet_model::acl::{AclAction, AclDirection};
use cnet_model::tier::Tier;

use super::acl::{by_priority, Emitter, Program};

/// Fills `p.tiers_in` and `p.tiers_out` from `tiers`.
pub(super) fn compile(p: &mut Program, tiers: &[Tier], emitter: &mut Emitter) -> Result<(), String> {
    let block = p.block();
    for dir in [AclDirection::In, AclDirection::Out] {
        let mut mine: Vec<&Tier> = tiers.iter().filter(|t| t.direction == dir).collect();
        mine.sort_by_key(|t| t.order);
        let mut chains = Vec::with_capacity(mine.len());
        for (i, tier) in mine.iter().enumerate() {
            let next = if i + 1 < mine.len() {
                format!("goto {}", p.tier_chain(dir, i + 1))
            } else {
                format!("goto {}", p.chain(dir))
            };
            let mut rules = Vec::new();
            for r in by_priority(&tier.rules) {
                let verdict = match r.action {
                    AclAction::Allow => "return",
                    AclAction::Block => block.as_str(),
                    AclAction::Pass => next.as_str(),
                };
                emitter.emit(r, verdict, &mut rules)?;
            }
            rules.push(next);
            chains.push(rules);
        }
        match dir {
            AclDirection::In => p.tiers_in = chains,
            AclDirection::Out => p.tiers_out = chains,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::acl::{compile as compile_program, Source};
    use cnet_model::tier::TierAclPolicy;
    use uuid::Uuid;

    fn tier(json: serde_json::Value) -> cnet_model::tier::Tier {
        serde_json::from_value::<TierAclPolicy>(json).unwrap().tier().unwrap()
    }

    #[test]
    fn tiers_chain_by_order_with_pass_and_no_match_going_to_the_next_and_the_acls_last() {
        let tiers = [
            tier(serde_json::json!({"Name": "second", "Direction": "In", "Order": 20, "TierAclRules": [
                {"TierAclRuleAction": "Allow", "Protocols": "6", "LocalPorts": "22", "Priority": 2},
                {"TierAclRuleAction": "Block", "Protocols": "6", "Priority": 2}]})),
            tier(serde_json::json!({"Name": "first", "Direction": "In", "Order": 10, "TierAclRules": [
                {"TierAclRuleAction": "Pass", "RemoteAddresses": "10.9.0.0/24", "Priority": 5},
                {"TierAclRuleAction": "Block", "RemoteAddresses": "10.9.0.4", "Priority": 5},
                {"TierAclRuleAction": "Allow", "Priority": 9}]})),
            tier(serde_json::json!({"Name": "out", "Direction": "Out", "Order": 1, "TierAclRules": [
                {"TierAclRuleAction": "Pass", "Protocols": "17"}]})),
        ];
        let id = Uuid::from_u128(0xabcd_ef01_2345_6789_0000_0000_0000_0000);
        let src = Source { tiers: &tiers, ..Default::default() };
        let p = compile_program(id, "cnb0", &["10.9.0.2".parse().unwrap()], &src, false).unwrap();
        let drop = "counter name \"acl_abcdef0123456789\" drop";
        assert_eq!(
            p.tiers_in,
            vec![
                vec![
                    format!("ip saddr 10.9.0.4/32 {drop}"),
                    "ip saddr 10.9.0.0/24 goto ep_abcdef0123456789_in_t1".into(),
                    "return".into(),
                    "goto ep_abcdef0123456789_in_t1".into(),
                ],
                vec![
                    format!("meta l4proto 6 {drop}"),
                    "meta l4proto 6 th dport 22 return".into(),
                    "goto ep_abcdef0123456789_in".into(),
                ],
            ],
            "Order 10 first; Block before Allow and Pass at equal priority"
        );
        assert_eq!(
            p.tiers_out,
            vec![vec![
                "meta l4proto 17 goto ep_abcdef0123456789_out".to_string(),
                "goto ep_abcdef0123456789_out".into()
            ]]
        );
        assert_eq!(p.rules_in, vec!["goto default_in"], "the ACL chain comes after the last tier");
        assert!(p.chains().iter().all(|(_, rules)| rules.iter().all(|r| !r.contains('{'))), "no anonymous sets");
        let d = p.dispatch();
        assert_eq!(d[0].2.as_deref(), Some("jump ep_abcdef0123456789_in_t0"), "the dispatch enters the first tier");
        assert_eq!(d[1].2.as_deref(), Some("jump ep_abcdef0123456789_out_t0"));
        let names: Vec<String> = p.chains().into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            names,
            ["ep_abcdef0123456789_in", "ep_abcdef0123456789_out", "ep_abcdef0123456789_in_t0"]
                .into_iter()
                .map(String::from)
                .chain(["ep_abcdef0123456789_in_t1".into(), "ep_abcdef0123456789_out_t0".into()])
                .collect::<Vec<_>>()
        );
    }
}
