//! The `OutBoundNAT` endpoint policy: which of an endpoint's outbound
//! traffic leaves with another source address, and which one.
//!
//! Invariants of [`OutboundNatRule`] (the checked form):
//! - Prefixes are canonical (host bits zero) and none holds another of the
//!   same list (the kernel's interval sets refuse overlaps).
//! - `exceptions` are never translated; with `destinations`, only those are.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa::ToSchema;

/// `OutBoundNAT` settings as HCN writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OutboundNatPolicy {
    /// The source address traffic leaves with; empty: the host's address on
    /// the way out (masquerade).
    #[serde(rename = "VirtualIP", default, skip_serializing_if = "String::is_empty")]
    #[schema(example = "198.18.0.77")]
    pub virtual_ip: String,
    /// Destinations (addresses or prefixes) reached without translation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!(["10.0.0.0/8"]))]
    pub exceptions: Vec<String>,
    /// When given, only traffic to these is translated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// HCN's NatFlags (LocalRoutedVip 1, IPv6 2): accepted; the family
    /// follows the addresses.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u32,
    /// hnslib's port pool limit: accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_port_pool_usage: Option<u16>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A checked `OutBoundNAT` policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundNatRule {
    /// `None`: the host's address on the way out.
    pub virtual_ip: Option<IpAddr>,
    pub exceptions: Vec<IpNet>,
    pub destinations: Vec<IpNet>,
}

impl OutboundNatPolicy {
    /// The checked form, or what to fix.
    pub fn rule(&self) -> Result<OutboundNatRule, String> {
        let virtual_ip = match self.virtual_ip.trim() {
            "" => None,
            s => Some(s.parse::<IpAddr>().map_err(|_| {
                format!("OutBoundNAT VirtualIP {s:?} is not an address: give one such as 198.18.0.77, or leave it empty for the host's")
            })?),
        };
        Ok(OutboundNatRule {
            virtual_ip,
            exceptions: prefixes("Exceptions", &self.exceptions)?,
            destinations: prefixes("Destinations", &self.destinations)?,
        })
    }
}

/// `list` as canonical prefixes, those inside another one dropped.
fn prefixes(field: &str, list: &[String]) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in list {
        let item = item.trim();
        let net = crate::net::parse_prefix(item).ok_or_else(|| {
            format!("OutBoundNAT {field} entry {item:?} is not an address or a prefix: write one such as 10.0.0.0/8 or 192.0.2.7")
        })?;
        nets.push(net);
    }
    Ok(IpNet::aggregate(&nets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Result<OutboundNatRule, String> {
        serde_json::from_value::<OutboundNatPolicy>(json).map_err(|e| e.to_string())?.rule()
    }

    #[test]
    fn prefixes_are_canonical_and_merged_and_an_empty_vip_is_the_hosts() {
        let r = rule(serde_json::json!({"VirtualIP": "", "Exceptions": ["10.1.2.3/8", "10.9.0.0/16", "192.0.2.7"],
            "Flags": 2, "MaxPortPoolUsage": 80}))
        .unwrap();
        assert_eq!(r.virtual_ip, None);
        assert_eq!(r.exceptions, vec!["10.0.0.0/8".parse::<IpNet>().unwrap(), "192.0.2.7/32".parse().unwrap()]);
        assert!(r.destinations.is_empty());
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let err = rule(serde_json::json!({"VirtualIP": "host"})).unwrap_err();
        assert!(err.contains("VirtualIP \"host\" is not an address"), "{err}");
        let err = rule(serde_json::json!({"Exceptions": ["10.0.0.0/33"]})).unwrap_err();
        assert!(err.contains("Exceptions entry \"10.0.0.0/33\""), "{err}");
        let err = rule(serde_json::json!({"Exception": []})).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
