//! Podman's objects as cnet's, and cnet's answers as netavark's: pure
//! functions, so every rule is unit-tested without a daemon.
//!
//! - `bridge` → NAT; `bridge` + `internal` → Internal when it has a gateway
//!   (Podman gives one when DNS is on), else Private (no host address on
//!   the switch, so Podman's IPAM may hand out every address); `macvlan` →
//!   Transparent on its parent.
//! - Podman's IPAM chooses the addresses (`static_ips`); cnet only checks
//!   and programs them. The gateways are Podman's.
//! - `dns_enabled` → cnet's DNS on the gateways, domain `dns.podman`, the
//!   container's name and aliases as names.
//! - The network is `AutoDelete` and carries Podman's network ID, so a
//!   network removed in Podman goes with its last container, and one
//!   recreated under the same name is told apart.

use std::net::IpAddr;

use cnet_model::Endpoint;
use serde_json::{json, Value};

use crate::types::{NetAddress, NetInterface, Network, PerNetworkOptions, PortMapping, StatusBlock};

/// The annotation holding Podman's network ID.
pub const ANN_NETWORK_ID: &str = "podman.io/network-id";
/// Podman's search domain for container names.
pub const DNS_DOMAIN: &str = "dns.podman";

/// The cnet network type for a Podman network, or what to do instead.
pub fn network_type(net: &Network) -> Result<&'static str, String> {
    match net.driver.as_str() {
        "bridge" if !net.internal => Ok("NAT"),
        "bridge" if net.subnets.iter().all(|s| s.gateway.is_some()) => Ok("Internal"),
        "bridge" => Ok("Private"),
        "macvlan" => Ok("Transparent"),
        other => Err(format!(
            "network {}: driver {other:?} is not supported by cnet: use the bridge or macvlan driver",
            net.name
        )),
    }
}

/// Whether the network publishes ports (netavark does it on bridge networks that are not internal).
pub fn publishes_ports(net: &Network) -> bool {
    net.driver == "bridge" && !net.internal
}

/// The `HostComputeNetwork` that serves a Podman network.
pub fn cnet_network(net: &Network) -> Result<Value, String> {
    let ty = network_type(net)?;
    match net.ipam_options.get("driver").map(String::as_str) {
        None | Some("host-local") => {}
        Some(other) => {
            return Err(format!(
                "network {}: IPAM driver {other:?} is not supported by cnet: use host-local (Podman's default)",
                net.name
            ))
        }
    }
    if net.subnets.is_empty() {
        return Err(format!("network {} has no subnet: give it one (podman network create --subnet …)", net.name));
    }
    let subnets: Vec<Value> = net
        .subnets
        .iter()
        .map(|s| {
            let mut v = json!({"IpAddressPrefix": s.subnet.to_string()});
            if let Some(gw) = s.gateway {
                let any = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                v["Routes"] = json!([{"NextHop": gw, "DestinationPrefix": any}]);
            }
            v
        })
        .collect();
    let mut body = json!({
        "Name": net.name, "Type": ty, "Ipams": [{"Type": "Static", "Subnets": subnets}],
        "AutoDelete": true, "Annotations": {ANN_NETWORK_ID: net.id},
    });
    let mut policies = Vec::new();
    if ty == "NAT" || ty == "Internal" {
        policies.push(json!({"Type": "AutomaticDNS", "Settings": {"Enable": net.dns_enabled}}));
        if net.dns_enabled {
            body["Dns"] = json!({"Domain": DNS_DOMAIN});
        }
    }
    if ty == "Transparent" {
        let Some(parent) = net.network_interface.as_deref().filter(|p| !p.is_empty()) else {
            return Err(format!(
                "macvlan network {} has no parent interface: create it with -o parent=IFACE",
                net.name
            ));
        };
        policies.push(json!({"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": parent}}));
    }
    for (k, v) in &net.options {
        match k.as_str() {
            "mtu" => {
                let mtu: u32 =
                    v.parse().map_err(|_| format!("network {}: option mtu={v} is not a number", net.name))?;
                body["Mtu"] = json!(mtu);
            }
            // cnet keeps NAT networks apart from each other always.
            "isolate" | "metric" => {}
            "mode" if ty == "Transparent" && v == "bridge" => {}
            "vlan" if v.is_empty() || v == "0" => {}
            other => {
                return Err(format!(
                    "network {}: option {other}={v} is not supported by cnet (it knows mtu, isolate, metric{})",
                    net.name,
                    if ty == "Transparent" { " and mode=bridge" } else { "" }
                ))
            }
        }
    }
    body["Policies"] = json!(policies);
    Ok(body)
}

fn protocol_number(p: &str) -> Result<u8, String> {
    match p {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "sctp" => Ok(132),
        other => Err(format!("port mapping protocol {other:?} is unknown: use tcp, udp or sctp")),
    }
}

/// A Podman port mapping as a cnet `PortMapping` policy.
pub fn port_policy(m: &PortMapping) -> Result<Value, String> {
    let mut settings = json!({
        "Protocol": protocol_number(&m.protocol)?, "InternalPort": m.container_port,
        "ExternalPort": m.host_port, "PortCount": m.range.max(1),
    });
    if !m.host_ip.is_empty() {
        let vip: IpAddr =
            m.host_ip.parse().map_err(|_| format!("port mapping host IP {:?} is not an address", m.host_ip))?;
        settings["VIP"] = json!(vip);
    }
    Ok(json!({"Type": "PortMapping", "Settings": settings}))
}

/// The container's names on the network: its name, then its aliases.
pub fn names(container_name: &str, per: &PerNetworkOptions) -> Vec<String> {
    let mut out = vec![container_name.to_string()];
    for a in &per.aliases {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

/// What `setup` answers for one network, from the endpoint cnetd made.
pub fn status(net: &Network, per: &PerNetworkOptions, ep: &Endpoint) -> Result<StatusBlock, String> {
    let mut subnets = Vec::new();
    for c in &ep.ip_configurations {
        let s =
            net.subnets.iter().find(|s| s.subnet.contains(&c.ip_address)).ok_or_else(|| {
                format!("cnetd gave {} an address outside network {}'s subnets", c.ip_address, net.name)
            })?;
        let ipnet = ipnet::IpNet::new(c.ip_address, s.subnet.prefix_len()).map_err(|e| e.to_string())?;
        subnets.push(NetAddress { gateway: s.gateway, ipnet });
    }
    let mac = ep.mac_address.map(|m| m.to_string().to_ascii_lowercase()).unwrap_or_default();
    let dns = net.dns_enabled && net.driver == "bridge";
    Ok(StatusBlock {
        dns_search_domains: if dns { vec![DNS_DOMAIN.to_string()] } else { vec![] },
        dns_server_ips: if dns { net.subnets.iter().filter_map(|s| s.gateway).collect() } else { vec![] },
        interfaces: [(per.interface_name.clone(), NetInterface { mac_address: mac, subnets })].into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NetworkOptions;

    fn options() -> NetworkOptions {
        serde_json::from_str(crate::types::tests_support::PODMAN_43).unwrap()
    }

    #[test]
    fn a_bridge_network_becomes_a_dual_stack_nat_network_with_podmans_gateways_and_dns() {
        let o = options();
        let body = cnet_network(&o.network_info["web"]).unwrap();
        assert_eq!(body["Type"], "NAT");
        assert_eq!(body["AutoDelete"], true);
        assert_eq!(body["Dns"]["Domain"], "dns.podman");
        let s = &body["Ipams"][0]["Subnets"];
        assert_eq!(s[0]["Routes"][0], json!({"NextHop": "10.89.0.1", "DestinationPrefix": "0.0.0.0/0"}));
        assert_eq!(s[1]["Routes"][0]["DestinationPrefix"], "::/0");
        assert_eq!(body["Policies"][0]["Settings"]["Enable"], true);
        assert_eq!(body["Annotations"][ANN_NETWORK_ID], o.network_info["web"].id);
    }

    #[test]
    fn internal_networks_are_internal_with_a_gateway_and_private_without() {
        let mut net = options().network_info["web"].clone();
        net.internal = true;
        assert_eq!(network_type(&net), Ok("Internal"));
        assert!(!publishes_ports(&net));
        for s in &mut net.subnets {
            s.gateway = None;
        }
        assert_eq!(network_type(&net), Ok("Private"));
    }

    #[test]
    fn unsupported_drivers_ipam_and_options_are_refused_with_what_to_use() {
        let mut net = options().network_info["web"].clone();
        net.options.insert("mtu".into(), "1400".into());
        assert_eq!(cnet_network(&net).unwrap()["Mtu"], 1400);
        net.options.insert("frobnicate".into(), "1".into());
        assert!(cnet_network(&net).unwrap_err().contains("frobnicate=1 is not supported"));
        net.options.clear();
        net.ipam_options.insert("driver".into(), "dhcp".into());
        assert!(cnet_network(&net).unwrap_err().contains("host-local"));
        net.driver = "ipvlan".into();
        assert!(network_type(&net).unwrap_err().contains("bridge or macvlan"));
        net.driver = "macvlan".into();
        net.ipam_options.clear();
        net.network_interface = None;
        assert!(cnet_network(&net).unwrap_err().contains("-o parent="));
    }

    #[test]
    fn ports_map_protocols_ranges_and_host_ips() {
        let o = options();
        assert_eq!(
            port_policy(&o.port_mappings[1]).unwrap()["Settings"],
            json!({"Protocol": 17, "InternalPort": 53, "ExternalPort": 5353, "PortCount": 1, "VIP": "127.0.0.1"})
        );
        let mut m = o.port_mappings[0].clone();
        m.protocol = "icmp".into();
        assert!(port_policy(&m).is_err());
    }

    #[test]
    fn the_status_names_the_interface_its_mac_addresses_gateways_and_dns() {
        let o = options();
        let ep: Endpoint = serde_json::from_value(json!({
            "HostComputeNetwork": "web", "MacAddress": "02:42:0A:59:00:05",
            "IpConfigurations": [{"IpAddress": "10.89.0.5", "PrefixLength": 24}, {"IpAddress": "fd00:89::2", "PrefixLength": 64}]
        }))
        .unwrap();
        let st = status(&o.network_info["web"], &o.networks["web"], &ep).unwrap();
        let want: StatusBlock = serde_json::from_value(json!({
            "dns_search_domains": ["dns.podman"], "dns_server_ips": ["10.89.0.1", "fd00:89::1"],
            "interfaces": {"eth0": {"mac_address": "02:42:0a:59:00:05", "subnets": [
                {"gateway": "10.89.0.1", "ipnet": "10.89.0.5/24"}, {"gateway": "fd00:89::1", "ipnet": "fd00:89::2/64"}]}}
        }))
        .unwrap();
        assert_eq!(st, want);
        assert_eq!(names("c1", &o.networks["web"]), ["c1", "www", "3f2a9c0d1e4b"]);
    }
}
