//! Policies on an Overlay network across two hosts, with real packets: an
//! endpoint's ACLs hold against a peer on another host, and anti-spoofing
//! holds on the sending host.

use cnet_model::stats::EndpointStats;
use cnet_model::{Endpoint, Namespace, Network};
use cnet_testkit::cluster::ClusterWorld;
use cnet_testkit::probe;
use serde_json::{json, Value};

fn container(w: &ClusterWorld, i: usize, net: &Network, name: &str, policies: Value) -> (Endpoint, String) {
    let ns: Namespace = w.client(i).post("/namespaces", &json!({"Name": format!("{}-{name}", w.tag)})).unwrap();
    let ep: Endpoint = w
        .client(i)
        .post("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id, "Policies": policies}))
        .unwrap();
    (ep, ns.netns_path.unwrap())
}

fn stats(w: &ClusterWorld, i: usize, ep: &Endpoint) -> EndpointStats {
    w.client(i).get(&format!("/endpoints/{}/stats", ep.id)).unwrap()
}

#[test]
fn acls_and_anti_spoofing_hold_between_hosts_of_an_overlay_network() {
    cnet_testkit::require_root!();
    let mut w = ClusterWorld::new(2);
    for i in 0..2 {
        w.start_daemon(i);
    }
    w.within(10, "both hosts healthy", || {
        (0..2).all(|i| w.status(i).health == "Healthy" && w.status(i).hosts.len() == 2)
    });
    let vsid = json!([{"Type": "VSID", "Settings": {"IsolationId": 4242}}]);
    let def = json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.241.0.0/16", "Policies": vsid}]}]});
    let net: Network = w.client(0).post("/networks", &def).unwrap();
    w.within(5, "the network on both hosts", || w.client(1).get::<Network>(&format!("/networks/{}", net.id)).is_ok());

    let block = json!({"Type": "ACL", "Settings": {"Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "7081"}});
    let (a, a_ns) = container(&w, 0, &net, "a", json!([block]));
    let (b, b_ns) = container(&w, 1, &net, "b", json!([]));
    let a_ip = a.ip_configurations[0].ip_address.to_string();
    let _blocked = probe::tcp_server(&a_ns, "0.0.0.0:7081");
    let _open = probe::tcp_server(&a_ns, "0.0.0.0:7082");
    let b_ip = b.ip_configurations[0].ip_address.to_string();
    w.within(10, "b reaches a across the tunnel", || probe::tcp_seen_as(&b_ns, &format!("{a_ip}:7082")).is_some());
    assert_eq!(probe::tcp_seen_as(&b_ns, &format!("{a_ip}:7082")), Some(b_ip.clone()), "an open port");
    assert_eq!(probe::tcp_seen_as(&b_ns, &format!("{a_ip}:7081")), None, "a's ACL blocks the other host's peer");
    assert!(stats(&w, 0, &a).policy_drops.acl > 0, "and counts it on a's host");

    // b sends from an address of the network that is not its own: dropped on
    // its own host, before the tunnel.
    let spoofed = "10.241.255.200";
    probe_cmd(&b_ns, &["ip", "addr", "add", &format!("{spoofed}/32"), "dev", "eth0"]);
    let from_spoofed = probe_cmd_ok(&b_ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", spoofed, &a_ip]);
    assert!(!from_spoofed, "a spoofed source does not cross the tunnel");
    assert!(stats(&w, 1, &b).policy_drops.spoofing > 0, "counted on b's host");
    assert!(probe::ping(&b_ns, &a_ip), "b's own address still works");
}

fn probe_cmd(netns: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("nsenter").arg(format!("--net={netns}")).args(args).output().expect("nsenter")
}

fn probe_cmd_ok(netns: &str, args: &[&str]) -> bool {
    probe_cmd(netns, args).status.success()
}
