//! The `TierAcl` endpoint policy: ordered tiers of rules. A packet meets the
//! tiers of its direction by ascending `Order`; in each, rules run by
//! ascending `Priority` (Block first at equal priority). `Allow` and `Block`
//! decide; `Pass`, or no rule matching, hands the packet to the next tier,
//! and after the last tier the endpoint's ACLs (and its network's
//! NetworkACLs) decide, then the default.
//!
//! Invariants:
//! - A checked [`Tier`]'s rules are [`AclRule`]s of the tier's direction:
//!   the same checks and the same compilation as an `ACL`.
//! - Of one endpoint, no two tiers of a direction share an `Order`
//!   ([`crate::validate::check_acls`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::acl::{AclAction, AclDirection, AclPolicy, AclRule};

/// At most this many tiers on one endpoint.
pub const MAX_TIERS: usize = 64;

/// `TierAcl` settings as HCN writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TierAclPolicy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub direction: AclDirection,
    /// Tiers run by ascending Order.
    #[serde(default)]
    pub order: u16,
    #[serde(default)]
    pub tier_acl_rules: Vec<TierAclRule>,
}

/// One rule of a tier: an ACL whose direction is the tier's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TierAclRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocols: String,
    /// Allow, Block, or Pass (to the next tier).
    pub tier_acl_rule_action: AclAction,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_addresses: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_addresses: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_ports: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_ports: String,
    #[serde(default)]
    pub priority: u16,
}

/// A checked tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub direction: AclDirection,
    pub order: u16,
    pub rules: Vec<AclRule>,
}

impl TierAclRule {
    /// The rule as an ACL of direction `direction`.
    pub fn acl(&self, direction: AclDirection) -> AclPolicy {
        AclPolicy {
            id: self.id.clone(),
            protocols: self.protocols.clone(),
            action: self.tier_acl_rule_action,
            direction,
            local_addresses: self.local_addresses.clone(),
            remote_addresses: self.remote_addresses.clone(),
            local_ports: self.local_ports.clone(),
            remote_ports: self.remote_ports.clone(),
            priority: self.priority,
            rule_type: None,
        }
    }
}

impl TierAclPolicy {
    /// The checked tier, or what to fix (naming the tier and the rule).
    pub fn tier(&self) -> Result<Tier, String> {
        let rules = self
            .tier_acl_rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.acl(self.direction).rule().map_err(|e| {
                    let rule = r.id.clone().unwrap_or_else(|| format!("#{}", i + 1));
                    format!("TierAcl {:?} (Order {}) rule {rule}: {e}", self.name, self.order)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tier { direction: self.direction, order: self.order, rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcn_shaped_tiers_parse_into_checked_rules_of_their_direction() {
        let t: TierAclPolicy = serde_json::from_value(serde_json::json!({"Name": "t1", "Direction": "Out",
            "Order": 1001, "TierAclRules": [{"Id": "r1", "Protocols": "6", "TierAclRuleAction": "Pass",
            "RemotePorts": "443", "Priority": 100}]}))
        .unwrap();
        let tier = t.tier().unwrap();
        assert_eq!((tier.direction, tier.order, tier.rules.len()), (AclDirection::Out, 1001, 1));
        assert_eq!(tier.rules[0].action, AclAction::Pass);
        assert_eq!(tier.rules[0].direction, AclDirection::Out);
    }

    #[test]
    fn a_bad_rule_is_refused_naming_its_tier_and_rule() {
        let t: TierAclPolicy = serde_json::from_value(serde_json::json!({"Name": "t1", "Direction": "In",
            "Order": 2, "TierAclRules": [{"TierAclRuleAction": "Block", "LocalPorts": "80"}]}))
        .unwrap();
        let err = t.tier().unwrap_err();
        assert!(err.contains("TierAcl \"t1\" (Order 2) rule #1") && err.contains("need Protocols"), "{err}");
        let bad = serde_json::from_value::<TierAclPolicy>(serde_json::json!({"Direction": "In", "Rules": []}));
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
    }
}
