//! Checks of firewall policies: an endpoint's `ACL` and `TierAcl`
//! policies, a network's `SetPolicy` and `NetworkACL` policies, and that
//! every set an ACL names is a set of its network.

use std::collections::BTreeSet;

use crate::acl::AclRule;
use crate::endpoint::{acls_in, tiers_in, EndpointPolicy};
use crate::error::{ApiError, Result};
use crate::tier::MAX_TIERS;
use crate::Network;

/// At most this many ACL policies on one endpoint, and NetworkACLs on one network.
pub const MAX_ACLS: usize = 1000;

/// Every set `rule` names (in `what`) is one of `net`'s.
fn check_set_refs(rule: &AclRule, what: &str, net: &Network) -> Result<()> {
    for id in rule.sets() {
        if !net.sets().any(|s| s.id == id) {
            return Err(ApiError::invalid_param(format!(
                "{what} names IP set {id:?} in its addresses, which network {} does not have: add a SetPolicy with Id {id:?} to the network first, or list addresses",
                net.name
            )));
        }
    }
    Ok(())
}

/// Each `ACL` and `TierAcl` policy is a rule the kernel can match, naming
/// only sets of `net`.
pub fn check_acls(policies: &[EndpointPolicy], net: &Network) -> Result<()> {
    let mut n = 0;
    for acl in acls_in(policies) {
        let rule = acl.rule().map_err(ApiError::invalid_param)?;
        check_set_refs(&rule, "an ACL", net)?;
        n += 1;
    }
    if n > MAX_ACLS {
        return Err(ApiError::invalid_param(format!(
            "an endpoint takes at most {MAX_ACLS} ACL policies, this one has {n}: merge rules with address and port lists"
        )));
    }
    let mut orders = BTreeSet::new();
    let mut tiers = 0;
    for t in tiers_in(policies) {
        let tier = t.tier().map_err(ApiError::invalid_param)?;
        for r in &tier.rules {
            check_set_refs(r, &format!("TierAcl {:?}", t.name), net)?;
        }
        if !orders.insert((tier.direction == crate::acl::AclDirection::In, tier.order)) {
            return Err(ApiError::invalid_param(format!(
                "two TierAcl policies of Direction {:?} have Order {}: give each tier of a direction its own Order",
                tier.direction, tier.order
            )));
        }
        tiers += 1;
    }
    if tiers > MAX_TIERS {
        return Err(ApiError::invalid_param(format!(
            "an endpoint takes at most {MAX_TIERS} TierAcl policies, this one has {tiers}: merge tiers"
        )));
    }
    Ok(())
}

/// A network's `SetPolicy` policies ([`crate::sets::check_sets`]) and its
/// `NetworkACL` policies: rules the kernel can match, naming only its sets.
pub fn check_network_policies(net: &Network) -> Result<()> {
    crate::sets::check_sets(net.sets()).map_err(ApiError::invalid_param)?;
    let mut n = 0;
    for acl in net.network_acls() {
        let rule = acl.rule().map_err(|e| ApiError::invalid_param(format!("NetworkACL: {e}")))?;
        check_set_refs(&rule, "a NetworkACL", net)?;
        n += 1;
    }
    if n > MAX_ACLS {
        return Err(ApiError::invalid_param(format!(
            "a network takes at most {MAX_ACLS} NetworkACL policies, this one has {n}: merge rules with address and port lists"
        )));
    }
    Ok(())
}
