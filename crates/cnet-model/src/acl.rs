//! The `ACL` endpoint policy: HCN's wire form ([`AclPolicy`], comma lists in
//! strings, as Windows clients send them) and the checked form
//! ([`AclRule`]) that cnetd compiles into the kernel.
//!
//! Invariants:
//! - An [`AclRule`] holds only what the kernel can match: protocol numbers,
//!   canonical prefixes, port ranges with `lo <= hi`, ports only with
//!   protocols that have ports (TCP, UDP, SCTP).
//! - "Local" is the endpoint's side, "Remote" the peer's, whatever the
//!   direction: for `In`, `LocalPorts` are destination ports; for `Out`,
//!   source ports.
//! - An address list item is an address or prefix when it parses as one,
//!   else the `Id` of a `SetPolicy` of the endpoint's network (whether that
//!   set exists is checked against the network, [`crate::validate`]).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::sets::{is_set_id, items, prefix};

/// What a matching packet gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AclAction {
    Allow,
    Block,
    /// No decision here: in a tier (`TierAcl`), the next tier decides; in
    /// an ACL, the default.
    Pass,
}

/// Which traffic a rule sees: `In` is sent to the endpoint, `Out` by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AclDirection {
    In,
    Out,
}

/// Where Windows enforces a rule (`Host`: WFP, `Switch`: VFP). cnet
/// enforces both on the virtual switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AclRuleType {
    Host,
    Switch,
}

/// `ACL` settings as HCN writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AclPolicy {
    /// The client's name for the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Comma list of IANA protocol numbers (`"6,17"`); empty or `256`: any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(example = "6")]
    pub protocols: String,
    pub action: AclAction,
    pub direction: AclDirection,
    /// Comma list of addresses, prefixes or SetPolicy Ids of the endpoint's side; empty: any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_addresses: String,
    /// Comma list of addresses, prefixes or SetPolicy Ids of the peer; empty: any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(example = "10.0.0.0/24,192.168.1.7")]
    pub remote_addresses: String,
    /// Comma list of ports and ranges (`80,8000-8080`) of the endpoint's side.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(example = "80,8000-8080")]
    pub local_ports: String,
    /// Comma list of ports and ranges of the peer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_ports: String,
    /// Lower is evaluated first; at equal priority Block goes before Allow.
    #[serde(default)]
    pub priority: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_type: Option<AclRuleType>,
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// One item of a checked address list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclAddress {
    /// Host bits cleared.
    Prefix(IpNet),
    /// A `SetPolicy` of the network, by its `Id`.
    Set(String),
}

/// A checked ACL rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclRule {
    pub action: AclAction,
    pub direction: AclDirection,
    /// Empty: any protocol.
    pub protocols: Vec<u8>,
    /// Empty: any address.
    pub local: Vec<AclAddress>,
    pub remote: Vec<AclAddress>,
    /// Empty: any port.
    pub local_ports: Vec<PortRange>,
    pub remote_ports: Vec<PortRange>,
    pub priority: u16,
}

/// Protocols with ports a rule can match.
const PORTED: [u8; 3] = [6, 17, 132];

impl AclPolicy {
    /// The checked rule, or what to fix (in words, naming the field).
    pub fn rule(&self) -> Result<AclRule, String> {
        let protocols = protocols(&self.protocols)?;
        let local_ports = ports("LocalPorts", &self.local_ports)?;
        let remote_ports = ports("RemotePorts", &self.remote_ports)?;
        if (!local_ports.is_empty() || !remote_ports.is_empty())
            && (protocols.is_empty() || protocols.iter().any(|p| !PORTED.contains(p)))
        {
            return Err(
                "ACL ports need Protocols of TCP (6), UDP (17) or SCTP (132) only: set Protocols or drop the ports"
                    .into(),
            );
        }
        Ok(AclRule {
            action: self.action,
            direction: self.direction,
            protocols,
            local: addresses("LocalAddresses", &self.local_addresses)?,
            remote: addresses("RemoteAddresses", &self.remote_addresses)?,
            local_ports,
            remote_ports,
            priority: self.priority,
        })
    }
}

impl AclRule {
    /// The set Ids it names.
    pub fn sets(&self) -> impl Iterator<Item = &str> {
        self.local.iter().chain(&self.remote).filter_map(|a| match a {
            AclAddress::Set(id) => Some(id.as_str()),
            AclAddress::Prefix(_) => None,
        })
    }
}

fn protocols(list: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for item in items(list) {
        match item.parse::<u16>() {
            Ok(256) => return Ok(vec![]),
            Ok(n) if n < 256 => out.push(n as u8),
            _ => {
                return Err(format!(
                    "ACL Protocols {item:?} is not a protocol number: use IANA numbers such as 6 (TCP), 17 (UDP), 1 (ICMP), 58 (ICMPv6), or 256 for any"
                ))
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn ports(field: &str, list: &str) -> Result<Vec<PortRange>, String> {
    let mut out = Vec::new();
    for item in items(list) {
        let bad =
            || format!("ACL {field} {item:?} is not a port or a range: use ports from 1 to 65535, as 80 or 8000-8080");
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?),
            None => {
                let p = item.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo == 0 {
            return Err(bad());
        }
        if lo > hi {
            return Err(format!("ACL {field} range {item:?} runs backwards: write the lower port first ({hi}-{lo})"));
        }
        out.push(PortRange { lo, hi });
    }
    Ok(out)
}

fn addresses(field: &str, list: &str) -> Result<Vec<AclAddress>, String> {
    let mut out = Vec::new();
    for item in items(list) {
        out.push(match prefix(item) {
            Some(net) => AclAddress::Prefix(net),
            None if is_set_id(item) => AclAddress::Set(item.to_string()),
            None => {
                return Err(format!(
                    "ACL {field} {item:?} is not an address, a prefix or a SetPolicy Id: list addresses such as 10.0.0.7 or 10.0.0.0/24, or the Id of a set of the network"
                ))
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(json: serde_json::Value) -> Result<AclRule, String> {
        serde_json::from_value::<AclPolicy>(json).map_err(|e| e.to_string())?.rule()
    }

    #[test]
    fn hcn_shaped_settings_parse_into_a_checked_rule() {
        let r = acl(serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "6, 17",
            "RemoteAddresses": "10.0.0.9/24,fd00::1", "LocalPorts": "80,8000-8080", "Priority": 100,
            "RuleType": "Switch", "Id": "web"}))
        .unwrap();
        assert_eq!(r.protocols, vec![6, 17]);
        assert_eq!(
            r.remote,
            vec![
                AclAddress::Prefix("10.0.0.0/24".parse().unwrap()),
                AclAddress::Prefix("fd00::1/128".parse().unwrap())
            ]
        );
        assert_eq!(r.local_ports, vec![PortRange { lo: 80, hi: 80 }, PortRange { lo: 8000, hi: 8080 }]);
        assert!(r.remote_ports.is_empty() && r.local.is_empty());
        assert_eq!(
            acl(serde_json::json!({"Action": "Block", "Direction": "Out", "Protocols": "256"})).unwrap().protocols,
            Vec::<u8>::new()
        );
        let r = acl(serde_json::json!({"Action": "Allow", "Direction": "In", "RemoteAddresses": "web, 10.0.0.1"}));
        assert_eq!(r.unwrap().sets().collect::<Vec<_>>(), vec!["web"], "a set Id where an address is not one");
    }

    #[test]
    fn bad_rules_are_refused_with_what_to_fix() {
        for (json, want) in [
            (
                serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "6", "LocalPorts": "90-80"}),
                "backwards",
            ),
            (serde_json::json!({"Action": "Allow", "Direction": "In", "LocalPorts": "80"}), "need Protocols"),
            (
                serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "1", "LocalPorts": "80"}),
                "need Protocols",
            ),
            (serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "tcp"}), "protocol number"),
            (
                serde_json::json!({"Action": "Allow", "Direction": "In", "Protocols": "6", "RemotePorts": "0"}),
                "1 to 65535",
            ),
            (serde_json::json!({"Action": "Allow", "Direction": "In", "RemoteAddresses": "web set"}), "SetPolicy Id"),
            (serde_json::json!({"Action": "Allow", "Direction": "Sideways"}), "unknown variant"),
            (serde_json::json!({"Action": "Allow", "Direction": "In", "Colour": "red"}), "unknown field"),
        ] {
            let err = acl(json.clone()).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
