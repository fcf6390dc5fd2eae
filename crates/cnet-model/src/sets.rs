//! The `SetPolicy` network policy: named IP sets (`IPSET`) and sets of sets
//! (`NESTEDIPSET`) that ACL rules name in `LocalAddresses` and
//! `RemoteAddresses` by their `Id`.
//!
//! Invariants:
//! - A set's `Id` is a token that can never be read as an address (it is
//!   tried as one first), has no commas or blanks, and is at most
//!   [`MAX_SET_ID`] bytes.
//! - The sets of a network passed [`check_sets`]: Ids unique, an `IPSET`
//!   holds only addresses and prefixes, a `NESTEDIPSET` only Ids of the
//!   network's other sets, and nesting has no cycle. So [`flatten`] of
//!   checked sets always succeeds.
//! - [`flatten`] answers each set as its normalised leaves: prefixes with
//!   host bits cleared, aggregated, none inside another. Two sets with the
//!   same addresses answer the same list, so comparing lists compares sets.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest set Id.
pub const MAX_SET_ID: usize = 128;
/// At most this many values in one set.
pub const MAX_SET_VALUES: usize = 65_536;
/// At most this many sets on one network.
pub const MAX_SETS: usize = 1000;

/// What a set holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SetPolicyType {
    /// Addresses and prefixes.
    #[serde(rename = "IPSET")]
    IpSet,
    /// Ids of other sets of the network: their union.
    #[serde(rename = "NESTEDIPSET")]
    NestedIpSet,
}

/// `SetPolicy` settings as HCN writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SetPolicy {
    /// What ACLs name the set by.
    #[schema(example = "web")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// hnslib's Go field is `Type`, with the JSON key `PolicyType`: both are read.
    #[serde(alias = "Type")]
    pub policy_type: SetPolicyType,
    /// Comma list: addresses and prefixes (`IPSET`) or set Ids (`NESTEDIPSET`).
    #[serde(default)]
    #[schema(example = "10.0.0.7,192.168.1.0/24")]
    pub values: String,
}

/// The items of a comma list.
pub fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// An address or prefix, host bits cleared; `None` when `item` is neither.
pub fn prefix(item: &str) -> Option<IpNet> {
    match item.parse::<IpNet>() {
        Ok(n) => Some(n.trunc()),
        Err(_) => item.parse::<std::net::IpAddr>().ok().map(IpNet::from),
    }
}

/// Whether `s` can be a set Id (it is not an address: the caller tried
/// that first). Digits, dots and colons alone are a mistyped address.
pub fn is_set_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SET_ID
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b':'))
}

impl SetPolicy {
    fn members(&self) -> impl Iterator<Item = &str> {
        items(&self.values)
    }
}

/// Checks a network's sets: see the module's invariants.
pub fn check_sets<'a>(sets: impl IntoIterator<Item = &'a SetPolicy>) -> Result<(), String> {
    let sets: Vec<&SetPolicy> = sets.into_iter().collect();
    if sets.len() > MAX_SETS {
        return Err(format!("a network takes at most {MAX_SETS} SetPolicy policies, this one has {}", sets.len()));
    }
    let mut ids = BTreeSet::new();
    for s in &sets {
        if prefix(&s.id).is_some() || !is_set_id(&s.id) {
            return Err(format!(
                "SetPolicy Id {:?} is not a set name: use 1 to {MAX_SET_ID} letters, digits, '-', '_', '.' or ':', with a letter, '-' or '_' (it must not read as an address)",
                s.id
            ));
        }
        if !ids.insert(s.id.as_str()) {
            return Err(format!("SetPolicy Id {:?} is given twice: give each set its own Id", s.id));
        }
    }
    for s in &sets {
        let n = s.members().count();
        if n > MAX_SET_VALUES {
            return Err(format!("SetPolicy {:?} has {n} Values, more than {MAX_SET_VALUES}: use prefixes", s.id));
        }
        for v in s.members() {
            match s.policy_type {
                SetPolicyType::IpSet if prefix(v).is_none() => {
                    let hint = if ids.contains(v) { ": to name another set, make this one a NESTEDIPSET" } else { "" };
                    return Err(format!(
                        "SetPolicy {:?} (IPSET) Values {v:?} is not an address or a prefix: list addresses such as 10.0.0.7 or 10.0.0.0/24{hint}",
                        s.id
                    ));
                }
                SetPolicyType::NestedIpSet if !ids.contains(v) => {
                    let hint = if prefix(v).is_some() { ": addresses go in an IPSET" } else { "" };
                    return Err(format!(
                        "SetPolicy {:?} (NESTEDIPSET) Values {v:?} is not the Id of another set of the network: list set Ids, and add the sets first{hint}",
                        s.id
                    ));
                }
                _ => {}
            }
        }
    }
    flatten(sets).map(|_| ())
}

/// Each set's Id with its normalised leaves (see the module's invariants);
/// a cycle of nested sets is an error naming it.
pub fn flatten<'a>(sets: impl IntoIterator<Item = &'a SetPolicy>) -> Result<BTreeMap<String, Vec<IpNet>>, String> {
    let by_id: BTreeMap<&str, &SetPolicy> = sets.into_iter().map(|s| (s.id.as_str(), s)).collect();
    let mut done: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for id in by_id.keys() {
        leaves(id, &by_id, &mut done, &mut Vec::new())?;
    }
    Ok(done)
}

fn leaves<'a>(
    id: &'a str,
    by_id: &BTreeMap<&'a str, &'a SetPolicy>,
    done: &mut BTreeMap<String, Vec<IpNet>>,
    path: &mut Vec<&'a str>,
) -> Result<Vec<IpNet>, String> {
    if let Some(l) = done.get(id) {
        return Ok(l.clone());
    }
    if path.contains(&id) {
        path.push(id);
        return Err(format!(
            "nested sets form a cycle ({}): a NESTEDIPSET cannot contain itself, remove one of the Values",
            path.join(" → ")
        ));
    }
    let Some(set) = by_id.get(id) else {
        return Err(format!("set {id:?} does not exist on the network: add it first"));
    };
    let mut nets = Vec::new();
    match set.policy_type {
        SetPolicyType::IpSet => nets.extend(set.members().filter_map(prefix)),
        SetPolicyType::NestedIpSet => {
            path.push(id);
            for m in set.members() {
                nets.extend(leaves(m, by_id, done, path)?);
            }
            path.pop();
        }
    }
    let nets = IpNet::aggregate(&nets);
    done.insert(id.to_string(), nets.clone());
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, ty: SetPolicyType, values: &str) -> SetPolicy {
        SetPolicy { id: id.into(), name: String::new(), policy_type: ty, values: values.into() }
    }
    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn hcn_shaped_settings_parse_with_either_type_key() {
        let a: SetPolicy =
            serde_json::from_str(r#"{"Id":"web","Name":"w","PolicyType":"IPSET","Values":"10.0.0.1"}"#).unwrap();
        let b: SetPolicy =
            serde_json::from_str(r#"{"Id":"web","Name":"w","Type":"IPSET","Values":"10.0.0.1"}"#).unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<SetPolicy>(r#"{"Id":"x","PolicyType":"IPSET","Colour":1}"#).is_err());
    }

    #[test]
    fn leaves_are_normalised_and_nested_sets_are_their_union() {
        use SetPolicyType::*;
        let sets = [
            set("a", IpSet, "10.0.0.0/16, 10.0.1.0/24,10.0.0.9/8 , 192.0.2.1"),
            set("b", IpSet, "192.0.2.0/25,192.0.2.128/25,fd00::1/64"),
            set("ab", NestedIpSet, "a,b"),
            set("top", NestedIpSet, "ab,a"),
            set("empty", IpSet, ""),
        ];
        check_sets(&sets).unwrap();
        let f = flatten(&sets).unwrap();
        assert_eq!(f["a"], nets(&["10.0.0.0/8", "192.0.2.1/32"]), "contained prefixes dropped, host bits cleared");
        assert_eq!(f["b"], nets(&["192.0.2.0/24", "fd00::/64"]), "neighbours merged");
        assert_eq!(f["ab"], nets(&["10.0.0.0/8", "192.0.2.0/24", "fd00::/64"]));
        assert_eq!(f["top"], f["ab"]);
        assert!(f["empty"].is_empty());
    }

    #[test]
    fn bad_sets_are_refused_with_what_to_fix() {
        use SetPolicyType::*;
        for (sets, want) in [
            (vec![set("a", IpSet, "10.0.0.1,web")], "not an address"),
            (vec![set("a", IpSet, "10.0.0.1"), set("b", IpSet, "a")], "make this one a NESTEDIPSET"),
            (vec![set("n", NestedIpSet, "10.0.0.1")], "addresses go in an IPSET"),
            (vec![set("n", NestedIpSet, "missing")], "add the sets first"),
            (vec![set("a", IpSet, ""), set("a", IpSet, "")], "given twice"),
            (vec![set("10.0.0.1", IpSet, "")], "not a set name"),
            (vec![set("a b", IpSet, "")], "not a set name"),
            (vec![set("10.0.0", IpSet, "")], "not a set name"),
            (vec![set("x", NestedIpSet, "y"), set("y", NestedIpSet, "z"), set("z", NestedIpSet, "x")], "cycle"),
            (vec![set("x", NestedIpSet, "x")], "cycle"),
        ] {
            let err = check_sets(&sets).unwrap_err();
            assert!(err.contains(want), "{sets:?}: {err}");
        }
    }
}
