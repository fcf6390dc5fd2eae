//! What the CLI prints for each object kind in table mode.

use cnet_model::{DnsName, Endpoint, Namespace, Network};

use crate::{ports, table};

fn ips(ep: &Endpoint) -> String {
    ep.ip_configurations.iter().map(|c| format!("{}/{}", c.ip_address, c.prefix_length)).collect::<Vec<_>>().join(",")
}

pub fn networks_table(nets: &[Network]) -> String {
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.name.to_string(),
                n.r#type.to_string(),
                n.subnets().map(|s| s.ip_address_prefix.to_string()).collect::<Vec<_>>().join(","),
                n.bridge_name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::render(&["ID", "NAME", "TYPE", "SUBNETS", "BRIDGE"], &rows)
}

/// Whose endpoint it is, from the annotations runtimes leave: a Kubernetes
/// pod (`namespace/name`), a named container, or a container ID.
fn owner(ep: &Endpoint) -> String {
    let a = |k: &str| ep.annotations.get(k).filter(|v| !v.is_empty());
    if let (Some(ns), Some(pod)) = (a("K8S_POD_NAMESPACE"), a("K8S_POD_NAME")) {
        return format!("pod {ns}/{pod}");
    }
    if let Some(name) = a("cnet.dev/container-name") {
        return name.clone();
    }
    a("cni.dev/containerID").map(|id| id.chars().take(12).collect()).unwrap_or_default()
}

pub fn endpoints_table(eps: &[Endpoint]) -> String {
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                ips(e),
                e.mac_address.map(|m| m.to_string()).unwrap_or_default(),
                format!("{:?}", e.state),
                e.port_mappings().map(ports::format_publish).collect::<Vec<_>>().join(","),
                owner(e),
            ]
        })
        .collect();
    table::render(&["ID", "NAME", "ADDRESSES", "MAC", "STATE", "PORTS", "OWNER"], &rows)
}

pub fn cluster_text(st: &cnet_model::cluster::ClusterStatus) -> String {
    if !st.enabled {
        return "single host (cnetd runs without --etcd)\n".into();
    }
    let me = st.host.as_ref().map(|h| h.id);
    let mut out = format!("health: {}", st.health);
    if !st.reason.is_empty() {
        out.push_str(&format!(" ({})", st.reason));
    }
    if let (Some(lease), Some(ttl)) = (st.lease, st.lease_ttl) {
        out.push_str(&format!("\nlease: {lease:x} ({ttl} s)"));
    }
    out.push_str(&format!("\netcd revision: {}\n\n", st.revision));
    let rows: Vec<Vec<String>> = st
        .hosts
        .iter()
        .map(|h| {
            let blocks: Vec<&str> = st.blocks.iter().filter(|b| b.host == h.id).map(|b| b.block.as_str()).collect();
            vec![
                h.id.to_string(),
                format!("{}{}", h.hostname, if Some(h.id) == me { " (this host)" } else { "" }),
                h.provider_address.clone(),
                h.vtep_mac.clone(),
                blocks.join(","),
            ]
        })
        .collect();
    out.push_str(&table::render(&["HOST", "NAME", "PROVIDER ADDRESS", "VTEP MAC", "BLOCKS"], &rows));
    out
}

pub fn namespaces_table(nss: &[Namespace]) -> String {
    let rows: Vec<Vec<String>> = nss
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.name.as_ref().map(|x| x.to_string()).unwrap_or_default(),
                match n.netns_path.as_deref() {
                    Some(p) if !p.is_empty() => p.to_string(),
                    _ if n.r#type == "Guest" => "(a VM: no netns)".into(),
                    _ => String::new(),
                },
                n.resources.len().to_string(),
            ]
        })
        .collect();
    table::render(&["ID", "NAME", "NETNS", "ENDPOINTS"], &rows)
}

pub fn dns_table(names: &[DnsName]) -> String {
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| vec![n.name.clone(), n.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")])
        .collect();
    table::render(&["NAME", "ADDRESSES"], &rows)
}

/// An endpoint's statistics: one row each way, then the policy drops.
pub fn stats_text(st: &cnet_model::stats::EndpointStats) -> String {
    let rows = vec![
        vec![
            "received".into(),
            st.bytes_received.to_string(),
            st.packets_received.to_string(),
            st.dropped_packets_incoming.to_string(),
        ],
        vec![
            "sent".into(),
            st.bytes_sent.to_string(),
            st.packets_sent.to_string(),
            st.dropped_packets_outgoing.to_string(),
        ],
    ];
    let d = &st.policy_drops;
    table::render(&["DIRECTION", "BYTES", "PACKETS", "DROPPED"], &rows)
        + &format!("policy drops: acl {}, spoofing {}, qos {}\n", d.acl, d.spoofing, d.qos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_print_the_header_line_ending_in_a_newline() {
        assert_eq!(networks_table(&[]), "ID  NAME  TYPE  SUBNETS  BRIDGE\n");
        assert_eq!(endpoints_table(&[]), "ID  NAME  ADDRESSES  MAC  STATE  PORTS  OWNER\n");
        assert_eq!(namespaces_table(&[]), "ID  NAME  NETNS  ENDPOINTS\n");
    }

    #[test]
    fn the_owner_column_names_the_pod_or_the_container() {
        let ep = |ann: serde_json::Value| -> Endpoint {
            serde_json::from_value(serde_json::json!({"HostComputeNetwork": "n", "Annotations": ann})).unwrap()
        };
        let pod = ep(serde_json::json!({"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0",
                                         "cni.dev/containerID": "0123456789abcdef"}));
        assert_eq!(owner(&pod), "pod default/web-0");
        assert_eq!(owner(&ep(serde_json::json!({"cni.dev/containerID": "0123456789abcdef"}))), "0123456789ab");
        assert_eq!(owner(&ep(serde_json::json!({"cnet.dev/container-name": "c1"}))), "c1");
        assert!(endpoints_table(&[pod]).lines().nth(1).unwrap().ends_with("pod default/web-0"));
    }
}
