//! Docker's port bindings (`com.docker.network.portmap`) as cnet port
//! mappings.
//!
//! Invariants:
//! - A binding with a host port range, or with host port 0 (`-p 80`: the
//!   driver chooses), takes the first port of the range (of [`AUTO_PORTS`])
//!   that no cnet mapping of that protocol has.
//! - Bindings Docker sends once per address family (`0.0.0.0` and `::`)
//!   are one mapping: cnet maps both families with one.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value};

use cnet_model::Protocol;

pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
/// Host ports chosen for `-p 80` (no host port): Linux's default ephemeral range's top.
pub const AUTO_PORTS: std::ops::RangeInclusive<u16> = 49153..=65535;

/// One of Docker's port bindings (`types.PortBinding`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    pub host_port_end: u16,
}

/// The port bindings in a call's options (`com.docker.network.portmap`).
pub fn port_bindings(opts: &Map<String, Value>) -> Result<Vec<PortBinding>, String> {
    match opts.get(OPT_PORTMAP) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("option {OPT_PORTMAP} is malformed: {e}")),
    }
}

/// cnet port mappings for Docker's bindings: a host port range or `0`
/// takes the first port that no mapping in `used` (protocol, host port) has.
pub fn port_mappings(
    bindings: &[PortBinding],
    used: &BTreeSet<(u8, u16)>,
) -> Result<Vec<cnet_model::PortMapping>, String> {
    let mut used = used.clone();
    let mut out: Vec<cnet_model::PortMapping> = Vec::new();
    let mut seen = BTreeSet::new();
    for b in bindings {
        let protocol = match b.proto {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            p => return Err(format!("port binding of protocol {p}: cnet publishes TCP (6), UDP (17) and SCTP (132)")),
        };
        let vip = match b.host_ip.as_str() {
            "" => None,
            s => Some(s.parse::<IpAddr>().map_err(|_| format!("host IP {s:?} is not an IP address"))?),
        }
        .filter(|ip| !ip.is_unspecified());
        // Docker sends 0.0.0.0 and :: bindings of one port: one mapping covers both families.
        if !seen.insert((b.proto, b.port, b.host_port, b.host_port_end, vip)) {
            continue;
        }
        let candidates = match (b.host_port, b.host_port_end) {
            (0, _) => AUTO_PORTS,
            (p, end) if end > p => p..=end,
            (p, _) => p..=p,
        };
        let fixed = candidates.start() == candidates.end();
        let port = candidates
            .clone()
            .find(|p| fixed || !used.contains(&(b.proto, *p)))
            .ok_or_else(|| format!("no free host port in {}-{}", candidates.start(), candidates.end()))?;
        used.insert((b.proto, port));
        out.push(cnet_model::PortMapping {
            protocol,
            internal_port: b.port,
            external_port: port,
            vip,
            flags: 0,
            port_count: 1,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_bindings_become_mappings_with_ranges_and_chosen_ports() {
        let b: Vec<PortBinding> = serde_json::from_value(json!([
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "Port": 53, "HostIP": "198.18.0.2", "HostPort": 5300, "HostPortEnd": 5302},
            {"Proto": 6, "Port": 22, "HostPort": 0},
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8081, "HostPortEnd": 8081}
        ]))
        .unwrap();
        let used: BTreeSet<(u8, u16)> = [(17, 5300), (6, 49153)].into();
        let m = port_mappings(&b, &used).unwrap();
        let got: Vec<(u16, u16, Option<IpAddr>)> =
            m.iter().map(|m| (m.external_port, m.internal_port, m.vip)).collect();
        assert_eq!(
            got,
            vec![
                (8080, 80, None),
                (5301, 53, Some("198.18.0.2".parse().unwrap())),
                (49154, 22, None),
                (8081, 80, None)
            ],
            "one mapping for both families, the first free port of a range, a chosen port, a second host port"
        );
        let bad: Vec<PortBinding> = serde_json::from_value(json!([{"Proto": 1, "Port": 1, "HostPort": 1}])).unwrap();
        assert!(port_mappings(&bad, &BTreeSet::new()).is_err());
    }
}
