//! A network's run-time policies: `SetPolicy` (IP sets) and `NetworkACL`,
//! added, removed and replaced by modify requests
//! (`ResourceType: Policy`).
//!
//! Invariants:
//! - Only these two types change at run time; the others are fixed at
//!   create (a request naming one is refused, changing nothing).
//! - A set is named by its `Id`, and so is a NetworkACL in Remove and
//!   Update (one without an Id is named by all its fields in Remove).
//! - A set still named by an endpoint's ACL or TierAcl, by a NetworkACL
//!   or by a nested set is not removed (`EntityHasReferences`, naming who
//!   uses it): the kernel never holds a rule naming a set that is gone.

use cnet_model::acl::AclPolicy;
use cnet_model::endpoint::{acls_in, tiers_in};
use cnet_model::sets::{items, SetPolicy, SetPolicyType};
use cnet_model::{ErrorCode, Network, NetworkPolicy};
use uuid::Uuid;

use crate::error::{Result, ServiceError};
use crate::state::Objects;

/// A change to a network's run-time policies.
#[derive(Clone, Debug, PartialEq)]
pub enum NetworkPolicyChange {
    Add(Vec<NetworkPolicy>),
    /// Sets by Id, NetworkACLs by Id (or whole).
    Remove(Vec<NetworkPolicy>),
    /// Replaces the sets and NetworkACLs of the same Ids.
    Update(Vec<NetworkPolicy>),
}

fn fixed(p: &NetworkPolicy) -> Result<()> {
    match p {
        NetworkPolicy::SetPolicy(_) | NetworkPolicy::NetworkAcl(_) => Ok(()),
        other => Err(ServiceError::unsupported(format!(
            "only SetPolicy and NetworkACL policies change at run time; {} is fixed when the network is created",
            cnet_model::validate::policy_type(other)
        ))),
    }
}

fn same_acl(a: &AclPolicy, b: &AclPolicy) -> bool {
    match (&a.id, &b.id) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Who still names set `id` of network `net` (id `net_id`), if anyone.
fn users_of(o: &Objects, net_id: Uuid, net: &Network, id: &str) -> Vec<String> {
    let mut users = Vec::new();
    for ep in o.endpoints.values().map(|e| &e.record).filter(|e| e.network == net_id) {
        let rules = acls_in(&ep.policies)
            .cloned()
            .chain(tiers_in(&ep.policies).flat_map(|t| t.tier_acl_rules.iter().map(|r| r.acl(t.direction))));
        if rules.filter_map(|a| a.rule().ok()).any(|r| r.sets().any(|s| s == id)) {
            users.push(format!("endpoint {}'s ACLs", ep.display_name()));
        }
    }
    if net.network_acls().filter_map(|a| a.rule().ok()).any(|r| r.sets().any(|s| s == id)) {
        users.push("a NetworkACL".into());
    }
    for s in net.sets().filter(|s| s.policy_type == SetPolicyType::NestedIpSet && items(&s.values).any(|v| v == id)) {
        users.push(format!("nested set {:?}", s.id));
    }
    users
}

/// `net` (network `net_id`) with `change` made to its policies; what to
/// fix when it cannot be made. The caller validates the result.
pub(super) fn change_policies(o: &Objects, net_id: Uuid, net: &mut Network, change: NetworkPolicyChange) -> Result<()> {
    let name = net.name.to_string();
    let no_such = |what: String| ServiceError::invalid(format!("network {name} has no {what}: use Add to add it"));
    match change {
        NetworkPolicyChange::Add(ps) => {
            for p in ps {
                fixed(&p)?;
                if let NetworkPolicy::SetPolicy(s) = &p {
                    if net.sets().any(|x| x.id == s.id) {
                        return Err(ServiceError::invalid(format!(
                            "network {name} has a set with Id {:?} already: use Update to change its Values",
                            s.id
                        )));
                    }
                }
                net.policies.push(p);
            }
        }
        NetworkPolicyChange::Remove(ps) => {
            for p in ps {
                fixed(&p)?;
                let before = net.policies.len();
                match &p {
                    NetworkPolicy::SetPolicy(s) => {
                        net.policies.retain(|x| !matches!(x, NetworkPolicy::SetPolicy(y) if y.id == s.id));
                        if net.policies.len() == before {
                            return Err(no_such(format!("set with Id {:?}", s.id)));
                        }
                        let users = users_of(o, net_id, net, &s.id);
                        if !users.is_empty() {
                            return Err(ServiceError::new(
                                ErrorCode::EntityHasReferences,
                                format!(
                                    "set {:?} of network {name} is still named by {}: remove it from their addresses first",
                                    s.id,
                                    users.join(", ")
                                ),
                            ));
                        }
                    }
                    NetworkPolicy::NetworkAcl(a) => {
                        net.policies.retain(|x| !matches!(x, NetworkPolicy::NetworkAcl(y) if same_acl(y, a)));
                        if net.policies.len() == before {
                            return Err(no_such(format!("such NetworkACL ({a:?})")));
                        }
                    }
                    _ => unreachable!("fixed() let only sets and NetworkACLs through"),
                }
            }
        }
        NetworkPolicyChange::Update(ps) => {
            for p in ps {
                fixed(&p)?;
                let slot = net.policies.iter_mut().find(|x| match (&**x, &p) {
                    (NetworkPolicy::SetPolicy(a), NetworkPolicy::SetPolicy(b)) => a.id == b.id,
                    (NetworkPolicy::NetworkAcl(a), NetworkPolicy::NetworkAcl(b)) => a.id.is_some() && a.id == b.id,
                    _ => false,
                });
                match (slot, &p) {
                    (Some(slot), _) => *slot = p,
                    (None, NetworkPolicy::SetPolicy(SetPolicy { id, .. })) => {
                        return Err(no_such(format!("set with Id {id:?}")))
                    }
                    (None, _) => {
                        return Err(ServiceError::invalid(format!(
                            "Update replaces the NetworkACL of the same Id, and network {name} has none with that Id: give the Id, or use Add"
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}
