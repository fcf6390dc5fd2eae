//! The network configuration on stdin, read leniently: runtimes differ in key
//! case (containerd's CRI plugin sends `HostPort`, Podman `hostPort`) and in
//! where they put static addresses (`runtimeConfig.ips`, `args.cni.ips`,
//! `CNI_ARGS` `IP=`).

use std::net::IpAddr;

use cnet_model::{MacAddr, PortMapping, Protocol};
use serde_json::Value;

use crate::error::{code, CniError};
use crate::invocation::Invocation;
use crate::SUPPORTED_VERSIONS;

/// The parts of the configuration the plugin uses.
#[derive(Clone, Debug, Default)]
pub struct NetConf {
    pub cni_version: String,
    /// The cnet network's name.
    pub name: String,
    /// cnetd's socket.
    pub socket: String,
    /// A `HostComputeNetwork` to create the network from on first ADD.
    pub network: Option<Value>,
    pub prev_result: Option<Value>,
    /// The `dns` of the configuration.
    pub dns: Option<Value>,
    pub runtime: Value,
    pub args: Value,
    /// GC: `(containerID, ifname)` of the attachments to keep.
    pub valid_attachments: Vec<(String, String)>,
    /// The whole document, for annotations.
    pub raw: Value,
}

fn decode(msg: String) -> CniError {
    CniError::new(code::DECODE_FAILURE, msg)
}

fn invalid(msg: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// A key looked up without regard to case.
pub fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: Value = serde_json::from_slice(stdin)
            .map_err(|e| decode(format!("the network configuration on stdin is not JSON: {e}")))?;
        if !raw.is_object() {
            return Err(decode("the network configuration must be a JSON object".into()));
        }
        let s = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let conf = NetConf {
            cni_version: s("cniVersion"),
            name: s("name"),
            socket: raw.get("socket").and_then(Value::as_str).unwrap_or(cnet_client::DEFAULT_SOCKET).to_string(),
            network: raw.get("network").cloned().filter(|v| !v.is_null()),
            prev_result: raw.get("prevResult").cloned().filter(|v| !v.is_null()),
            dns: raw.get("dns").cloned().filter(|v| !v.is_null()),
            runtime: raw.get("runtimeConfig").cloned().unwrap_or(Value::Null),
            args: raw.get("args").cloned().unwrap_or(Value::Null),
            valid_attachments: raw
                .get("cni.dev/valid-attachments")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|a| {
                            let f = |k: &str| get_ci(a, k).and_then(Value::as_str).unwrap_or_default().to_string();
                            (f("containerID"), f("ifname"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            raw,
        };
        Ok(conf)
    }

    /// The version to answer in: the configuration's, when this plugin speaks it.
    pub fn check_version(&self) -> Result<(), CniError> {
        if self.cni_version.is_empty() {
            return Err(invalid("cniVersion is missing from the network configuration".into()));
        }
        if !SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {} is not supported: use one of {}",
                    self.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    pub fn check_name(&self) -> Result<(), CniError> {
        cnet_model::ObjectName::new(&self.name)
            .map(|_| ())
            .map_err(|e| invalid(format!("the network name: {}", e.error)))
    }

    /// The `bandwidth` capability (`runtimeConfig.bandwidth`: rates in
    /// bits/s and bursts in bits, as the CNI bandwidth plugin takes them) as
    /// a cnet `Bandwidth` policy; `None` when absent or all zero. As the
    /// plugin does, a direction with rate and burst 0 is not capped, and one
    /// of them 0 (or negative) is refused.
    pub fn bandwidth(&self) -> Result<Option<cnet_model::qos::BandwidthPolicy>, CniError> {
        let Some(bw) = get_ci(&self.runtime, "bandwidth").filter(|v| !v.is_null()) else { return Ok(None) };
        let num = |k: &str| -> Result<u64, CniError> {
            match get_ci(bw, k) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => {
                    v.as_u64().ok_or_else(|| invalid(format!("bandwidth {k} must be a whole number above 0, not {v}")))
                }
            }
        };
        let pair =
            |rate: u64, burst: u64| if rate == 0 && burst == 0 { (None, None) } else { (Some(rate), Some(burst)) };
        let (ingress_rate, ingress_burst) = pair(num("ingressRate")?, num("ingressBurst")?);
        let (egress_rate, egress_burst) = pair(num("egressRate")?, num("egressBurst")?);
        let p = cnet_model::qos::BandwidthPolicy { ingress_rate, ingress_burst, egress_rate, egress_burst };
        if p == cnet_model::qos::BandwidthPolicy::default() {
            return Ok(None);
        }
        p.check().map_err(|e| invalid(format!("runtimeConfig.bandwidth: {e}")))?;
        Ok(Some(p))
    }

    /// Port mappings from `runtimeConfig.portMappings`, keys in any case.
    pub fn port_mappings(&self) -> Result<Vec<PortMapping>, CniError> {
        let Some(list) = get_ci(&self.runtime, "portMappings").and_then(Value::as_array) else {
            return Ok(vec![]);
        };
        list.iter()
            .map(|m| {
                let port = |k: &str| -> Result<u16, CniError> {
                    get_ci(m, k)
                        .and_then(Value::as_u64)
                        .filter(|p| (1..=65535).contains(p))
                        .map(|p| p as u16)
                        .ok_or_else(|| invalid(format!("portMappings entry {m} needs {k} between 1 and 65535")))
                };
                let protocol = match get_ci(m, "protocol").and_then(Value::as_str).unwrap_or("tcp") {
                    "" => Protocol::Tcp,
                    p => p.parse::<Protocol>().map_err(|e| invalid(format!("portMappings: {}", e.error)))?,
                };
                let vip = match get_ci(m, "hostIP").and_then(Value::as_str).unwrap_or("") {
                    "" | "0.0.0.0" | "::" => None,
                    ip => Some(
                        ip.parse::<IpAddr>()
                            .map_err(|_| invalid(format!("portMappings hostIP {ip:?} is not an address")))?,
                    ),
                };
                Ok(PortMapping {
                    protocol,
                    internal_port: port("containerPort")?,
                    external_port: port("hostPort")?,
                    vip,
                    flags: 0,
                    port_count: 1,
                })
            })
            .collect()
    }

    /// Static addresses: `runtimeConfig.ips`, then `args.cni.ips`, then `CNI_ARGS` `IP=`.
    pub fn static_ips(&self, inv: &Invocation) -> Result<Vec<IpAddr>, CniError> {
        let from_list = |v: Option<&Value>| -> Option<Vec<String>> {
            v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        };
        let texts = from_list(get_ci(&self.runtime, "ips"))
            .or_else(|| from_list(self.args.get("cni").and_then(|c| c.get("ips"))))
            .or_else(|| inv.args.get("IP").map(|s| s.split(',').map(str::to_string).collect()))
            .unwrap_or_default();
        texts
            .iter()
            .map(|t| {
                let addr = t.split('/').next().unwrap_or("");
                addr.parse::<IpAddr>().map_err(|_| invalid(format!("static IP {t:?} is not an address")))
            })
            .collect()
    }

    /// A static MAC: `runtimeConfig.mac`, `args.cni.mac`, or `CNI_ARGS` `MAC=`.
    pub fn static_mac(&self, inv: &Invocation) -> Result<Option<MacAddr>, CniError> {
        let text = get_ci(&self.runtime, "mac")
            .and_then(Value::as_str)
            .or_else(|| self.args.get("cni").and_then(|c| c.get("mac")).and_then(Value::as_str))
            .map(str::to_string)
            .or_else(|| inv.args.get("MAC").cloned());
        text.filter(|t| !t.is_empty())
            .map(|t| t.parse::<MacAddr>().map_err(|e| invalid(format!("static MAC: {}", e.error))))
            .transpose()
    }

    /// DNS for the endpoint: `runtimeConfig.dns` (servers, searches,
    /// options, domain), else the configuration's `dns`.
    pub fn endpoint_dns(&self) -> Option<Value> {
        let list = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Array(vec![]));
        if let Some(d) = get_ci(&self.runtime, "dns").filter(|d| d.is_object()) {
            return Some(serde_json::json!({
                "ServerList": list(d, "servers"), "Search": list(d, "searches"), "Options": list(d, "options"),
                "Domain": d.get("domain").cloned().unwrap_or(Value::String(String::new())),
            }));
        }
        self.dns.as_ref().map(|d| {
            serde_json::json!({
                "ServerList": list(d, "nameservers"), "Search": list(d, "search"), "Options": list(d, "options"),
                "Domain": d.get("domain").cloned().unwrap_or(Value::String(String::new())),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: Value) -> NetConf {
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn port_mappings_accept_podman_and_cri_key_case() {
        let c = conf(serde_json::json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"portMappings": [
            {"hostPort": 18083, "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"},
            {"HostPort": 18095, "ContainerPort": 8080, "Protocol": "udp", "HostIP": ""}
        ]}}));
        let m = c.port_mappings().unwrap();
        assert_eq!(
            (m[0].external_port, m[0].internal_port, m[0].vip),
            (18083, 8080, Some("127.0.0.1".parse().unwrap()))
        );
        assert_eq!((m[1].external_port, m[1].protocol, m[1].vip), (18095, Protocol::Udp, None));
    }

    #[test]
    fn the_bandwidth_capability_is_a_bandwidth_policy_refused_as_the_cni_plugin_refuses() {
        let conf = |bw: Value| NetConf { runtime: serde_json::json!({"bandwidth": bw}), ..NetConf::default() };
        let p = conf(serde_json::json!({"ingressRate": 40_000_000, "ingressBurst": 1_000_000}))
            .bandwidth()
            .unwrap()
            .unwrap();
        assert_eq!((p.ingress_rate, p.ingress_burst, p.egress_rate), (Some(40_000_000), Some(1_000_000), None));
        assert_eq!(conf(serde_json::json!({"ingressRate": 0, "egressRate": 0})).bandwidth().unwrap(), None);
        assert_eq!(NetConf::default().bandwidth().unwrap(), None);
        for bad in [
            serde_json::json!({"egressRate": 1000}),
            serde_json::json!({"ingressBurst": 1000}),
            serde_json::json!({"egressRate": -5, "egressBurst": 10}),
        ] {
            let err = conf(bad.clone()).bandwidth().unwrap_err();
            assert_eq!(err.code, code::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn static_ip_and_mac_come_from_runtime_config_or_cni_args() {
        let c =
            conf(serde_json::json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"ips": ["10.0.0.7/24"]}}));
        assert_eq!(c.static_ips(&Invocation::default()).unwrap(), vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
        let c = conf(serde_json::json!({"cniVersion": "1.0.0", "name": "n"}));
        let mut inv = Invocation::default();
        inv.args.insert("IP".into(), "10.0.0.8".into());
        inv.args.insert("MAC".into(), "0a:58:00:00:00:08".into());
        assert_eq!(c.static_ips(&inv).unwrap(), vec!["10.0.0.8".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.static_mac(&inv).unwrap().unwrap().to_string(), "0a:58:00:00:00:08");
    }

    #[test]
    fn bad_json_is_a_decode_error_and_old_versions_are_incompatible() {
        assert_eq!(NetConf::parse(b"{nope").unwrap_err().code, code::DECODE_FAILURE);
        let c = conf(serde_json::json!({"cniVersion": "0.2.0", "name": "n"}));
        assert_eq!(c.check_version().unwrap_err().code, code::INCOMPATIBLE_VERSION);
    }
}
