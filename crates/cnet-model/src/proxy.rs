//! The `L4Proxy` endpoint policy: the endpoint's outbound TCP flows go to a
//! proxy on the host instead, which reads where they were going with
//! `SO_ORIGINAL_DST`.
//!
//! Invariants of [`L4ProxyRule`] (the checked form):
//! - TCP only (`SO_ORIGINAL_DST` answers for TCP alone); a port 1 to 65535.
//! - The proxy is on the host (no `IP`: the address the endpoint reaches the
//!   host by; or one of the host's): its own upstream connections leave
//!   from the host and are never redirected.
//! - Exceptions are canonical prefixes, none inside another.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa::ToSchema;

/// `L4Proxy` settings, as HCN's schema and hnslib spell them (both spellings
/// of the exception list and of `OutboundNAT` are taken).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct L4ProxyPolicy {
    /// The proxy's address; empty: the host, as the endpoint reaches it.
    #[serde(rename = "IP", default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The proxy's port, a string in HCN.
    #[schema(example = "15001")]
    pub port: String,
    /// IANA protocol number; only 6 (TCP).
    #[serde(default = "tcp")]
    pub protocol: u32,
    /// Destinations (addresses or prefixes) never redirected.
    #[serde(default, alias = "Exceptions", skip_serializing_if = "Vec::is_empty")]
    pub exception_list: Vec<String>,
    /// When given, only flows to this address or prefix are redirected.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    /// In HCN's schema; accepted: the proxy's own traffic leaves through the host's routing anyway.
    #[serde(default, alias = "OutboundNAT")]
    pub outbound_nat: bool,
}

fn tcp() -> u32 {
    6
}

/// A checked `L4Proxy` policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4ProxyRule {
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub exceptions: Vec<IpNet>,
    pub destination: Option<IpNet>,
}

impl L4ProxyPolicy {
    /// The checked form, or what to fix.
    pub fn rule(&self) -> Result<L4ProxyRule, String> {
        if self.protocol != 6 {
            return Err(format!(
                "L4Proxy Protocol {} is not supported: only TCP (6) flows can be proxied (a proxy reads a UDP flow's destination with IP_RECVORIGDSTADDR, which cnet does not arrange)",
                self.protocol
            ));
        }
        let port = self
            .port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("L4Proxy Port {:?} is not a port: give one from 1 to 65535", self.port))?;
        let ip = match self.ip.trim() {
            "" => None,
            s => Some(s.parse::<IpAddr>().map_err(|_| format!("L4Proxy IP {s:?} is not an address"))?),
        };
        let mut exceptions = Vec::new();
        for item in &self.exception_list {
            exceptions.push(
                crate::net::parse_prefix(item.trim())
                    .ok_or_else(|| format!("L4Proxy ExceptionList entry {item:?} is not an address or a prefix"))?,
            );
        }
        let destination = match self.destination.trim() {
            "" => None,
            s => Some(
                crate::net::parse_prefix(s)
                    .ok_or_else(|| format!("L4Proxy Destination {s:?} is not an address or a prefix"))?,
            ),
        };
        Ok(L4ProxyRule { ip, port, exceptions: IpNet::aggregate(&exceptions), destination })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Result<L4ProxyRule, String> {
        serde_json::from_value::<L4ProxyPolicy>(json).map_err(|e| e.to_string())?.rule()
    }

    #[test]
    fn both_spellings_are_taken_and_prefixes_merged() {
        let r = rule(
            serde_json::json!({"Port": "15001", "Exceptions": ["10.0.0.0/8", "10.1.0.0/16"], "OutboundNAT": true}),
        )
        .unwrap();
        assert_eq!(
            r,
            L4ProxyRule { ip: None, port: 15001, exceptions: vec!["10.0.0.0/8".parse().unwrap()], destination: None }
        );
        let r = rule(serde_json::json!({"Port": "80", "IP": "198.18.0.2", "ExceptionList": ["192.0.2.1"],
            "Destination": "192.0.2.0/24", "Protocol": 6, "OutboundNat": false}))
        .unwrap();
        assert_eq!(r.ip, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(r.destination, Some("192.0.2.0/24".parse().unwrap()));
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        for (json, want) in [
            (serde_json::json!({"Port": "0"}), "is not a port"),
            (serde_json::json!({"Port": "http"}), "is not a port"),
            (serde_json::json!({"Port": "80", "Protocol": 17}), "only TCP"),
            (serde_json::json!({"Port": "80", "IP": "proxy"}), "IP \"proxy\""),
            (serde_json::json!({"Port": "80", "Destination": "10.0.0.0/99"}), "Destination"),
            (serde_json::json!({"Port": "80", "Colour": 1}), "unknown field"),
        ] {
            let err = rule(json).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
