//! The physical-network types with real frames. The "physical network" is
//! the world's LAN namespace (198.18.0.0/24, router 198.18.0.1) joined to
//! the test host by the veth uplink `uplink0` (the host is 198.18.0.2).

mod common;

use std::time::{Duration, Instant};

use cnet_model::{Endpoint, Network};
use cnet_testkit::lan::{lan_neighbour, lan_vlan_port, mac_of, Capture, DhcpServer};
use common::*;
use serde_json::{json, Value};

const SUBNET: &str = "198.18.0.0/24";

fn uplink() -> Value {
    json!([{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}])
}

fn physical(w: &World, name: &str, ty: &str, ipam: &str, subnet: Value) -> Network {
    w.client()
        .post(
            "/networks",
            &json!({"Name": name, "Type": ty, "Policies": uplink(), "Ipams": [{"Type": ipam, "Subnets": subnet}]}),
        )
        .unwrap_or_else(|e| panic!("create network {name}: {e}"))
}

fn lan_subnet() -> Value {
    json!([{"IpAddressPrefix": SUBNET}])
}

fn exec_ok(w: &World, ns: &str, args: &[&str]) -> String {
    let out = w.exec_in(ns, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_transparent_endpoint_is_on_the_lan_with_its_own_mac_and_the_host_reaches_it() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let subnets = json!([{"IpAddressPrefix": SUBNET}, {"IpAddressPrefix": "fd00:18::/64"}]);
    let net = physical(&w, "lan", "Transparent", "Static", subnets);
    let c = container(&w, &net, "web", json!([]));
    let (ip, mac) = (c.ip(), c.ep.mac_address.unwrap().to_string());
    assert_ne!(ip, HOST_IP, "the host's own address is never handed out");
    assert_ne!(c.ip6(), HOST_IP6);
    assert!(probe::ping(&w.lan_path(), &c.ip6()), "LAN -> endpoint over IPv6");
    assert!(probe::ping(&c.path(), LAN_IP6), "endpoint -> LAN over IPv6");
    assert!(c.ep.host_interface_name.is_none(), "a macvlan endpoint has no host side");

    assert!(probe::ping(&w.lan_path(), &ip), "LAN -> endpoint");
    assert_eq!(lan_neighbour(&w, &ip).as_deref(), Some(mac.as_str()), "the LAN sees the endpoint's own MAC");
    let _srv = probe::tcp_server(&c.path(), "0.0.0.0:8080");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{ip}:8080")).as_deref(), Some(LAN_IP), "LAN -> TCP");
    assert_eq!(probe::tcp_seen_as(&w.host_path(), &format!("{ip}:8080")).as_deref(), Some(HOST_IP), "host -> TCP");
    let _lan = probe::tcp_server(&w.lan_path(), "0.0.0.0:9090");
    assert_eq!(
        probe::tcp_seen_as(&c.path(), &format!("{LAN_IP}:9090")).as_deref(),
        Some(ip.as_str()),
        "endpoint -> LAN"
    );
    let _host = probe::tcp_server(&w.host_path(), "0.0.0.0:9091");
    assert_eq!(
        probe::tcp_seen_as(&c.path(), &format!("{HOST_IP}:9091")).as_deref(),
        Some(ip.as_str()),
        "endpoint -> host"
    );
    assert!(probe::ping(&w.lan_path(), HOST_IP), "LAN -> host");
    assert_eq!(
        lan_neighbour(&w, HOST_IP).as_deref(),
        Some(mac_of(&w, &w.host_path(), "uplink0").as_str()),
        "the LAN still finds the host at the uplink's MAC, not the shim's"
    );
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Port mappings mean nothing here: the endpoint has its own LAN address.
    let err = w
        .client()
        .post::<Endpoint>("/endpoints", &json!({"HostComputeNetwork": net.id, "Policies": [port_map(6, 8080, 80)]}))
        .unwrap_err();
    assert!(err.to_string().contains("own addresses"), "{err}");

    // The shim deleted behind cnet's back: diag says so, a restart rebuilds it.
    let shim = format!("cnh{}", &net.bridge_name.clone().unwrap()[3..]);
    exec_ok(&w, &w.host_path(), &["ip", "link", "del", &shim]);
    assert!(w.drift().iter().any(|d| d.contains(&shim)), "{:?}", w.drift());
    w.kill_daemon();
    w.start_daemon();
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert_eq!(probe::tcp_seen_as(&w.host_path(), &format!("{ip}:8080")).as_deref(), Some(HOST_IP), "host again");

    w.client().delete(&format!("/endpoints/{}", c.ep.id)).unwrap();
    assert!(!probe::ping(&w.lan_path(), &ip), "gone from the LAN");
    let inside = exec_ok(&w, &c.path(), &["ip", "-o", "link"]);
    assert!(!inside.contains("eth0"), "the macvlan is gone: {inside}");
}

#[test]
fn a_dhcp_endpoint_leases_renews_survives_a_crash_and_releases() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let dhcp = DhcpServer::start(&w, "198.18.0.100", "198.18.0.150", 4);
    // As docs/networks.md shows it, with the CLI.
    let out =
        w.cnet(&["-o", "json", "network", "create", "lan", "--type", "Transparent", "--uplink", "uplink0", "--dhcp"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let net: Network = serde_json::from_slice(&out.stdout).unwrap();
    let c = container(&w, &net, "db", json!([]));
    let (ip, mac) = (c.ip(), c.ep.mac_address.unwrap().to_string());
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!((100..=150).contains(&last), "leased from the server's range: {ip}");
    assert_eq!(c.ep.ip_configurations[0].prefix_length, 24);
    assert_eq!(c.ep.routes[0].next_hop.map(|g| g.to_string()).as_deref(), Some(LAN_IP), "gateway from the lease");
    let dns = c.ep.dns.clone().expect("DNS from the lease");
    assert_eq!(dns.server_list[0].to_string(), LAN_IP);
    assert_eq!(dns.domain, "lan.test");
    assert!(dhcp.leases().iter().any(|l| l.contains(&mac) && l.contains(&ip)), "{:?}", dhcp.leases());
    assert!(probe::ping(&w.lan_path(), &ip), "LAN -> leased address");
    assert!(probe::ping(&w.host_path(), &ip), "host -> leased address");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // T1 is 4 s: cnetd renews (a REQUEST without a new DISCOVER).
    wait_for("a renewal", 15, || dhcp.count("DHCPREQUEST", &mac) >= 2);
    assert_eq!(dhcp.count("DHCPDISCOVER", &mac), 1);

    // kill -9 and back: the same lease, renewed on, never acquired twice.
    w.kill_daemon();
    let before = dhcp.count("DHCPREQUEST", &mac);
    w.start_daemon();
    let again: Endpoint = w.client().get(&format!("/endpoints/{}", c.ep.id)).unwrap();
    assert_eq!(again.ip_configurations, c.ep.ip_configurations);
    wait_for("a renewal after the restart", 15, || dhcp.count("DHCPREQUEST", &mac) > before);
    assert_eq!(dhcp.count("DHCPDISCOVER", &mac), 1, "no second lease: {}", dhcp.log_text());
    assert!(probe::ping(&w.lan_path(), &ip), "traffic after the restart");

    w.client().delete(&format!("/endpoints/{}", c.ep.id)).unwrap();
    wait_for("the release", 5, || dhcp.count("DHCPRELEASE", &mac) == 1);
    wait_for("the lease to go", 5, || !dhcp.leases().iter().any(|l| l.contains(&mac)));
}

#[test]
fn without_a_dhcp_server_the_attach_fails_cleanly() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = physical(&w, "lan", "Transparent", "Dhcp", json!([]));
    let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("x")})).unwrap();
    let err = w
        .client()
        .post::<Endpoint>("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no DHCP server answered"), "{err}");
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "nothing half-made: {eps:?}");
    let inside = exec_ok(&w, ns.netns_path.as_deref().unwrap(), &["ip", "-o", "link"]);
    assert!(!inside.contains("eth0"), "{inside}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn l2bridge_frames_carry_the_host_mac_both_ways() {
    cnet_testkit::require_root!();
    let w = World::new();
    // The LAN leaves .64–.127 to containers.
    let subnet = json!([{"IpAddressPrefix": SUBNET, "IpSubnets": [{"IpAddressPrefix": "198.18.0.64/26"}]}]);
    let net = physical(&w, "l2", "L2Bridge", "Static", subnet);
    let c = container(&w, &net, "app", json!([port_map(6, 8081, 80)]));
    let (ip, mac) = (c.ip(), c.ep.mac_address.unwrap().to_string());
    assert_eq!(ip, "198.18.0.64", "the first address of the IpSubnets block");
    let host_mac = mac_of(&w, &w.host_path(), "uplink0");

    let cap = Capture::start(&w, &w.lan_path(), "lan0", "icmp or arp");
    assert!(probe::ping(&c.path(), LAN_IP), "endpoint -> LAN");
    assert!(probe::ping(&w.lan_path(), &ip), "LAN -> endpoint");
    let frames = cap.stop();
    assert!(frames.iter().any(|f| f.contains(&ip)), "{frames:?}");
    assert!(!frames.iter().any(|f| f.contains(&mac)), "the endpoint's MAC never reaches the wire: {frames:?}");
    // Sent by the endpoint: from the host's MAC; ARP for it: answered with it.
    let from_endpoint: Vec<&String> = frames.iter().filter(|f| f.contains(&format!("{ip} > "))).collect();
    assert!(!from_endpoint.is_empty(), "{frames:?}");
    for f in from_endpoint {
        assert_eq!(f.split_whitespace().nth(1), Some(host_mac.as_str()), "{f}");
    }
    assert!(frames.iter().any(|f| f.contains(&format!("Reply {ip} is-at {host_mac}"))), "{frames:?}");
    assert_eq!(lan_neighbour(&w, &ip).as_deref(), Some(host_mac.as_str()), "the LAN resolves it to the host");

    let _srv = probe::tcp_server(&c.path(), "0.0.0.0:80");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{ip}:80")).as_deref(), Some(LAN_IP), "LAN -> TCP");
    assert_eq!(probe::tcp_seen_as(&w.host_path(), &format!("{ip}:80")).as_deref(), Some(HOST_IP), "host -> TCP");
    // A port mapping publishes it on the host's address too.
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8081")).as_deref(), Some(LAN_IP), "mapped");

    // A forged source address does not get out.
    exec_ok(&w, &c.path(), &["ip", "address", "add", "198.18.0.99/32", "dev", "eth0"]);
    let cap = Capture::start(&w, &w.lan_path(), "lan0", "icmp and src host 198.18.0.99");
    let _ = w.exec_in(&c.path(), &["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "198.18.0.99", LAN_IP]);
    let frames: Vec<String> = cap.stop().into_iter().filter(|f| !f.is_empty()).collect();
    assert!(frames.is_empty(), "a forged source must not reach the LAN: {frames:?}");
    exec_ok(&w, &c.path(), &["ip", "address", "del", "198.18.0.99/32", "dev", "eth0"]);

    // Isolated from the host's other networks, as NAT networks are.
    let nat = network(&w, "nat", "NAT", &["10.88.0.0/24"]);
    let other = container(&w, &nat, "other", json!([]));
    assert!(!probe::ping(&other.path(), &ip), "NAT container -> L2Bridge endpoint");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    w.client().delete(&format!("/endpoints/{}", c.ep.id)).unwrap();
    assert!(!probe::ping(&w.lan_path(), &ip), "gone");
    let proxies = exec_ok(&w, &w.host_path(), &["ip", "neigh", "show", "proxy"]);
    assert!(!proxies.contains(&ip), "proxy entry gone: {proxies}");
}

#[test]
fn l2tunnel_traffic_between_two_local_endpoints_crosses_the_lan() {
    cnet_testkit::require_root!();
    let w = World::new();
    exec_ok(&w, &w.lan_path(), &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // As docs/networks.md shows it, with the CLI.
    let out = w.cnet(&[
        "-o", "json", "network", "create", "tun", "--type", "L2Tunnel", "--uplink", "uplink0", "--subnet", SUBNET,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let net: Network = serde_json::from_slice(&out.stdout).unwrap();
    let a = container(&w, &net, "a", json!([]));
    let b = container(&w, &net, "b", json!([]));
    let cap = Capture::start(&w, &w.lan_path(), "lan0", "icmp");
    assert!(probe::ping(&a.path(), &b.ip()), "a -> b");
    let frames = cap.stop();
    let between = frames.iter().filter(|f| f.contains(&format!("{} > {}", a.ip(), b.ip()))).count();
    assert!(between >= 2, "a's echo request crossed the LAN to the gateway and back: {frames:?}");
    assert!(probe::ping(&w.lan_path(), &a.ip()), "LAN -> a");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn vlans_keep_endpoints_apart_and_the_trunk_carries_the_tag() {
    cnet_testkit::require_root!();
    let w = World::new();
    // The LAN's side of VLAN 10, on its trunk.
    lan_vlan_port(&w, "lan0v10", 10, [2, 0, 0, 0, 10, 1], "192.0.2.1/24");
    let net = physical(&w, "vl", "Transparent", "Static", json!([{"IpAddressPrefix": "192.0.2.0/24"}]));
    let vlan = |id: u32| json!([{"Type": "VLAN", "Settings": {"IsolationId": id}}]);
    let ten = container(&w, &net, "ten", vlan(10));
    let twenty = {
        let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("twenty")})).unwrap();
        let ns_id = ns.id.to_string();
        let args = ["-o", "json", "endpoint", "create", "--network", "vl", "--namespace", &ns_id, "--vlan", "20"];
        let out = w.cnet(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Container { ns, ep: serde_json::from_slice(&out.stdout).unwrap() }
    };

    let cap = Capture::start(&w, &w.lan_path(), "lan0", "vlan");
    assert!(probe::ping(&ten.path(), "192.0.2.1"), "VLAN 10 endpoint -> the LAN's VLAN 10");
    let frames = cap.stop();
    assert!(frames.iter().any(|f| f.contains("vlan 10") && f.contains(&ten.ip())), "{frames:?}");
    assert!(!probe::ping(&twenty.path(), "192.0.2.1"), "VLAN 20 does not reach VLAN 10");
    assert!(!probe::ping(&twenty.path(), &ten.ip()), "VLAN 20 endpoint -> VLAN 10 endpoint");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // A subnet-wide VLAN puts every endpoint on it.
    let net2 = physical(
        &w,
        "vl2",
        "Transparent",
        "Static",
        json!([{"IpAddressPrefix": "192.0.3.0/24", "Policies": [{"Type": "VLAN", "Settings": {"IsolationId": 30}}]}]),
    );
    let c = container(&w, &net2, "thirty", json!([]));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    let cap = Capture::start(&w, &w.lan_path(), "lan0", "vlan 30");
    let _ = probe::ping(&c.path(), "192.0.3.1");
    assert!(cap.stop().iter().any(|f| f.contains("vlan 30")), "tagged 30");
}

#[test]
fn physical_networks_refuse_bad_uplinks_with_what_to_fix() {
    cnet_testkit::require_root!();
    let w = World::new();
    let post = |body: Value| w.client().post::<Network>("/networks", &body).unwrap_err().to_string();
    let err = post(json!({"Name": "x", "Type": "Transparent", "Ipams": [{"Subnets": lan_subnet()}]}));
    assert!(err.contains("needs its uplink"), "{err}");
    let err = post(json!({"Name": "x", "Type": "Transparent", "Ipams": [{"Subnets": lan_subnet()}],
        "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "nosuch0"}}]}));
    assert!(err.contains("does not exist"), "{err}");
    let _t = physical(&w, "t", "Transparent", "Static", json!([{"IpAddressPrefix": "198.18.0.0/25"}]));
    let err = post(json!({"Name": "y", "Type": "L2Bridge", "Policies": uplink(),
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "198.18.0.128/25"}]}]}));
    assert!(err.contains("already the Transparent network"), "{err}");
    let err = post(json!({"Name": "z", "Type": "L2Bridge", "Policies": uplink(), "Ipams": [{"Type": "Dhcp"}]}));
    assert!(err.contains("Dhcp IPAM needs a Transparent network"), "{err}");
    let caps: Value = w.client().get("/capabilities").unwrap();
    assert_eq!(caps["Macvlan"], true, "{caps}");
    assert_eq!(caps["Vlan"], true, "VLANs by eBPF work on every kernel with cls_bpf: {caps}");
    assert_eq!(caps["BridgePortIsolation"], true, "{caps}");
    assert!(caps["Vlan8021q"].is_boolean() && caps["BridgeVlanFiltering"].is_boolean(), "probed, reported: {caps}");
    assert!(caps["IpamTypes"].as_array().unwrap().iter().any(|t| t == "Dhcp"), "{caps}");
    assert!(caps["NetworkTypes"].as_array().unwrap().iter().any(|t| t == "L2Tunnel"), "{caps}");
}
