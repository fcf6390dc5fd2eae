//! The ADD result, encoded for the spec version the runtime asked for.
//! 0.3.x and 0.4.0 carry `"version": "4"|"6"` on each IP; 1.x drops it.

use cnet_model::Endpoint;
use serde_json::{json, Value};

/// The result of an ADD for `ep`, attached in `netns`, in `version`'s encoding.
pub fn add_result(version: &str, ep: &Endpoint, netns: &str, conf_dns: Option<&Value>) -> Value {
    let legacy = version.starts_with("0.");
    // A macvlan endpoint (Transparent) has no host side: only its inside.
    let mut interfaces: Vec<Value> =
        ep.host_interface_name.iter().filter(|h| !h.is_empty()).map(|h| json!({"name": h})).collect();
    let inside = interfaces.len();
    interfaces.push(json!({"name": ep.interface_name().to_string(), "mac": ep.mac_address.map(|m| m.to_string()).unwrap_or_default(), "sandbox": netns}));
    let ips: Vec<Value> = ep
        .ip_configurations
        .iter()
        .map(|c| {
            let gateway = ep
                .routes
                .iter()
                .filter(|r| r.destination_prefix.prefix_len() == 0)
                .filter_map(|r| r.next_hop)
                .find(|gw| gw.is_ipv4() == c.ip_address.is_ipv4());
            let mut ip = json!({"address": format!("{}/{}", c.ip_address, c.prefix_length), "interface": inside});
            if let Some(gw) = gateway {
                ip["gateway"] = json!(gw.to_string());
            }
            if legacy {
                ip["version"] = json!(if c.ip_address.is_ipv4() { "4" } else { "6" });
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = ep
        .routes
        .iter()
        .map(|r| {
            let mut v = json!({"dst": r.destination_prefix.to_string()});
            if let Some(gw) = r.next_hop {
                v["gw"] = json!(gw.to_string());
            }
            v
        })
        .collect();
    let mut out = json!({"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes});
    let dns = match &ep.dns {
        Some(d) => json!({"nameservers": d.server_list, "domain": d.domain, "search": d.search, "options": d.options}),
        None => conf_dns.cloned().unwrap_or(json!({})),
    };
    out["dns"] = dns;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        serde_json::from_value(json!({
            "HostComputeNetwork": "n", "HostInterfaceName": "cnv0123456789a", "MacAddress": "0a:58:0a:00:00:02",
            "IpConfigurations": [{"IpAddress": "10.0.0.2", "PrefixLength": 24}, {"IpAddress": "fd00::2", "PrefixLength": 64}],
            "Routes": [{"NextHop": "10.0.0.1", "DestinationPrefix": "0.0.0.0/0"}, {"NextHop": "fd00::1", "DestinationPrefix": "::/0"}]
        }))
        .unwrap()
    }

    #[test]
    fn legacy_versions_carry_the_ip_version_and_1x_does_not() {
        let old = add_result("0.4.0", &endpoint(), "/run/netns/x", None);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        let new = add_result("1.1.0", &endpoint(), "/run/netns/x", None);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["gateway"], "10.0.0.1");
        assert_eq!(new["ips"][1]["gateway"], "fd00::1");
        assert_eq!(new["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(new["interfaces"][1]["name"], "eth0");
        assert_eq!(new["routes"][0]["dst"], "0.0.0.0/0");
    }
}
