//! netavark's JSON, as Podman 4.3 writes it and netavark 1.4 to 2.x reads
//! it (`src/network/types.rs` there): unknown keys are ignored, the fields
//! netavark requires are required here too, and `networks` may be a map or
//! (netavark 2) a list of `{"name": …}` objects.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// The stdin of `setup` and `teardown`.
#[derive(Clone, Debug, Deserialize)]
pub struct NetworkOptions {
    pub container_id: String,
    pub container_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(deserialize_with = "networks_map_or_list")]
    pub networks: BTreeMap<String, PerNetworkOptions>,
    pub network_info: BTreeMap<String, Network>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dns_servers: Vec<IpAddr>,
}

/// One network's part of a container's setup.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PerNetworkOptions {
    pub interface_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub static_ips: Vec<IpAddr>,
    #[serde(default)]
    pub static_mac: Option<String>,
}

/// A Podman network definition (`/etc/containers/networks/NAME.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    #[serde(default)]
    pub network_interface: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub subnets: Vec<Subnet>,
    pub ipv6_enabled: bool,
    pub internal: bool,
    pub dns_enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ipam_options: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub network_dns_servers: Vec<IpAddr>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Subnet {
    pub subnet: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// One published port (range), one protocol.
#[derive(Clone, Debug, Deserialize)]
pub struct PortMapping {
    pub host_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub range: u16,
    pub protocol: String,
}

/// The answer of `setup`, per network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusBlock {
    pub dns_search_domains: Vec<String>,
    pub dns_server_ips: Vec<IpAddr>,
    pub interfaces: BTreeMap<String, NetInterface>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Vec<NetAddress>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetAddress {
    pub gateway: Option<IpAddr>,
    pub ipnet: IpNet,
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn networks_map_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, PerNetworkOptions>, D::Error> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
        #[serde(flatten)]
        opts: PerNetworkOptions,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Map(BTreeMap<String, PerNetworkOptions>),
        List(Vec<Named>),
    }
    Ok(match Shape::deserialize(d)? {
        Shape::Map(m) => m,
        Shape::List(l) => l.into_iter().map(|n| (n.name, n.opts)).collect(),
    })
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// What Podman 4.3 writes for `podman run --network web --network-alias www
    /// --ip 10.89.0.5 --mac-address … -p 8080:80 -p 127.0.0.1:5353:53/udp`.
    pub const PODMAN_43: &str = r#"{"container_id":"3f2a9c0d1e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff","container_name":"c1",
      "port_mappings":[{"host_ip":"","container_port":80,"host_port":8080,"range":1,"protocol":"tcp"},
                       {"host_ip":"127.0.0.1","container_port":53,"host_port":5353,"range":1,"protocol":"udp"}],
      "networks":{"web":{"static_ips":["10.89.0.5","fd00:89::2"],"aliases":["www","3f2a9c0d1e4b"],
                         "static_mac":"02:42:0a:59:00:05","interface_name":"eth0"}},
      "network_info":{"web":{"name":"web","id":"b7c3000000000000000000000000000000000000000000000000000000000001",
        "driver":"bridge","network_interface":"podman1","created":"2024-05-01T10:00:00.123456789+02:00",
        "subnets":[{"subnet":"10.89.0.0/24","gateway":"10.89.0.1"},{"subnet":"fd00:89::/64","gateway":"fd00:89::1"}],
        "ipv6_enabled":true,"internal":false,"dns_enabled":true,"ipam_options":{"driver":"host-local"}}}}"#;
}

#[cfg(test)]
mod tests {
    use super::tests_support::PODMAN_43;
    use super::*;

    #[test]
    fn podman_43s_options_are_read() {
        let o: NetworkOptions = serde_json::from_str(PODMAN_43).unwrap();
        assert_eq!(o.port_mappings.len(), 2);
        let web = &o.networks["web"];
        assert_eq!(web.static_ips.len(), 2);
        assert_eq!(web.static_mac.as_deref(), Some("02:42:0a:59:00:05"));
        let net = &o.network_info["web"];
        assert_eq!(net.subnets[1].gateway, Some("fd00:89::1".parse().unwrap()));
        assert!(net.dns_enabled && !net.internal);
    }

    #[test]
    fn netavark_2s_list_of_networks_and_nulls_are_read() {
        let o: NetworkOptions = serde_json::from_value(serde_json::json!({
            "container_id": "abc", "container_name": "c", "container_hostname": "h", "port_mappings": null,
            "networks": [{"name": "n", "interface_name": "eth0", "options": {"host_interface_name": "x"}}],
            "network_info": {"n": {"name": "n", "id": "i", "driver": "bridge", "subnets": null, "ipv6_enabled": false,
                                   "internal": true, "dns_enabled": false, "routes": [], "labels": {}}}
        }))
        .unwrap();
        assert_eq!(o.networks["n"].interface_name, "eth0");
        assert!(o.port_mappings.is_empty() && o.network_info["n"].subnets.is_empty());
    }

    #[test]
    fn a_missing_required_field_is_an_error_that_names_it() {
        let err = serde_json::from_str::<NetworkOptions>(r#"{"container_id":"a","networks":{},"network_info":{}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("container_name"), "{err}");
    }
}
