//! NAT networks end to end, with real packets: container ↔ container and
//! gateway, egress through masquerade, published ports from the LAN, from the
//! host and from containers (hairpin), UDP, ranges, VIPs, IPv6.

mod common;
use common::*;
use serde_json::json;

#[test]
fn containers_on_one_nat_network_reach_each_other_and_the_gateway() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.81.0.0/24"]);
    let a = container(&w, &net, "a", json!([]));
    let b = container(&w, &net, "b", json!([]));
    assert!(probe::ping(&a.path(), &b.ip()), "a cannot ping b");
    assert!(probe::ping(&a.path(), "10.81.0.1"), "a cannot ping its gateway");
    let _srv = probe::tcp_server(&b.path(), "0.0.0.0:7000");
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{}:7000", b.ip())), Some(a.ip()), "b must see a's own address");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn egress_is_masqueraded_to_the_host_uplink_address() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.82.0.0/24"]);
    let a = container(&w, &net, "a", json!([]));
    let _tcp = probe::tcp_server(&w.lan_path(), "0.0.0.0:7001");
    let _udp = probe::udp_server(&w.lan_path(), "0.0.0.0:7002");
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{LAN_IP}:7001")), Some(HOST_IP.to_string()));
    assert_eq!(probe::udp_seen_as(&a.path(), &format!("{LAN_IP}:7002")), Some(HOST_IP.to_string()));
    assert!(probe::ping(&a.path(), LAN_IP), "ICMP must pass the NAT");
}

#[test]
fn a_published_port_is_reached_from_the_lan_the_host_and_a_container() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.83.0.0/24"]);
    let web = container(&w, &net, "web", json!([port_map(6, 8080, 80), port_map(17, 5353, 53)]));
    let other = container(&w, &net, "other", json!([]));
    let _tcp = probe::tcp_server(&web.path(), "0.0.0.0:80");
    let _udp = probe::udp_server(&web.path(), "0.0.0.0:53");
    let target = format!("{HOST_IP}:8080");

    // From the LAN: the client's own address is preserved.
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &target), Some(LAN_IP.to_string()));
    assert_eq!(probe::udp_seen_as(&w.lan_path(), &format!("{HOST_IP}:5353")), Some(LAN_IP.to_string()));
    // From the host itself (LocalRoutedVip), on its address and on localhost.
    assert!(probe::tcp_seen_as(&w.host_path(), &target).is_some(), "host → its own address:8080");
    assert!(probe::tcp_seen_as(&w.host_path(), "127.0.0.1:8080").is_some(), "host → 127.0.0.1:8080");
    // NAT loopback: another container, and the container itself, through the host address.
    assert!(probe::tcp_seen_as(&other.path(), &target).is_some(), "hairpin from another container");
    assert!(probe::tcp_seen_as(&web.path(), &target).is_some(), "hairpin to itself");
    // Unpublished ports are not reachable.
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8081")), None);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn localhost_publishing_does_not_open_127_to_the_lan() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.84.0.0/24"]);
    let web = container(&w, &net, "web", json!([port_map(6, 8080, 80)]));
    let _tcp = probe::tcp_server(&web.path(), "0.0.0.0:80");
    let _local = probe::tcp_server(&w.host_path(), "127.0.0.1:9999");
    // The LAN's box is the attacker's: it sends packets for 127.0.0.1 to the
    // host's uplink (a policy rule ahead of its own local table, and
    // route_localnet so that its kernel lets them out).
    let attacker = format!(
        "sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.lan0.route_localnet=1 && \
         ip route add 127.0.0.0/8 via {HOST_IP} dev lan0 table 100 && \
         ip rule add pref 100 lookup local && ip rule del pref 0 && ip rule add pref 10 to 127.0.0.0/8 lookup 100"
    );
    let out = w.exec_in(&w.lan_path(), &["bash", "-c", &attacker]);
    assert!(out.status.success(), "{out:?}");
    // They do reach the host: tcpdump sees them on its uplink.
    let host = w.host_path();
    let capture = std::thread::spawn(move || {
        std::process::Command::new("nsenter")
            .arg(format!("--net={host}"))
            .args(["timeout", "8", "tcpdump", "-nli", "uplink0", "tcp and dst net 127.0.0.0/8"])
            .output()
            .expect("tcpdump")
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), "127.0.0.1:8080"), None, "the localhost mapping from the LAN");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), "127.0.0.1:9999"), None, "a host-local service from the LAN");
    let seen = capture.join().unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(
        seen.contains("> 127.0.0.1.8080") && seen.contains("> 127.0.0.1.9999"),
        "the packets reached the host: {seen}"
    );
    let sysctl = w.exec_in(&w.host_path(), &["sysctl", "-n", "net.ipv4.conf.all.route_localnet"]);
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "0", "route_localnet must not be set host-wide");
    // The host itself still reaches the mapping on 127.0.0.1.
    assert!(probe::tcp_seen_as(&w.host_path(), "127.0.0.1:8080").is_some());
}

#[test]
fn port_ranges_and_vips_map_exactly_what_they_say() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.85.0.0/24"]);
    let ranged = json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": 9000, "InternalPort": 7000, "PortCount": 3}});
    let vip = json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": 9100, "InternalPort": 7100, "VIP": HOST_IP}});
    let c = container(&w, &net, "c", json!([ranged, vip]));
    let _s: Vec<_> =
        [7000, 7001, 7002, 7100].iter().map(|p| probe::tcp_server(&c.path(), &format!("0.0.0.0:{p}"))).collect();
    for p in 9000..=9002 {
        assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:{p}")).is_some(), "port {p} of the range");
    }
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:9003")), None, "one past the range");
    assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:9100")).is_some(), "VIP mapping on its VIP");
    // The same port on another host address is not mapped.
    let gw = "10.85.0.1";
    assert_eq!(probe::tcp_seen_as(&w.host_path(), &format!("{gw}:9100")), None, "VIP mapping on another address");
    assert!(probe::tcp_seen_as(&w.host_path(), &format!("{gw}:9000")).is_some(), "any-address mapping on the gateway");
}

#[test]
fn a_taken_host_port_is_refused_with_port_already_exists() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.86.0.0/24"]);
    container(&w, &net, "a", json!([port_map(6, 8080, 80)]));
    let err = w
        .client()
        .post::<serde_json::Value>(
            "/endpoints",
            &json!({"HostComputeNetwork": "nat", "Policies": [port_map(6, 8080, 81)]}),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(cnet_model::ErrorCode::PortAlreadyExists), "{err}");
    // UDP on the same number is another port.
    w.client()
        .post::<serde_json::Value>(
            "/endpoints",
            &json!({"HostComputeNetwork": "nat", "Policies": [port_map(17, 8080, 80)]}),
        )
        .expect("udp 8080 is free");
}

#[test]
fn dual_stack_endpoints_get_both_families_and_ipv6_works_through_nat_and_ports() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.87.0.0/24", "fd00:87::/64"]);
    let a = container(&w, &net, "a", json!([port_map(6, 8080, 80)]));
    let b = container(&w, &net, "b", json!([]));
    assert_eq!(a.ep.ip_configurations.len(), 2);
    assert!(probe::ping(&a.path(), &b.ip6()), "a → b over IPv6");
    assert!(probe::ping(&a.path(), "fd00:87::1"), "a → IPv6 gateway");
    // A dual-stack endpoint keeps its IPv6 link-local address (neighbour discovery needs it).
    let ll = w.exec_in(&a.path(), &["ip", "-6", "-o", "address", "show", "scope", "link"]);
    assert!(String::from_utf8_lossy(&ll.stdout).contains("fe80::"), "{ll:?}");
    let _lan = probe::tcp_server(&w.lan_path(), "[::]:7003");
    assert_eq!(
        probe::tcp_seen_as(&b.path(), &format!("[{LAN_IP6}]:7003")),
        Some(HOST_IP6.to_string()),
        "IPv6 egress masqueraded"
    );
    let _web = probe::tcp_server(&a.path(), "[::]:80");
    assert_eq!(
        probe::tcp_seen_as(&w.lan_path(), &format!("[{HOST_IP6}]:8080")),
        Some(LAN_IP6.to_string()),
        "IPv6 published port"
    );
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn ports_published_on_a_running_endpoint_work_at_once_and_go_away() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.88.0.0/24"]);
    let c = container(&w, &net, "c", json!([]));
    let _srv = probe::tcp_server(&c.path(), "0.0.0.0:80");
    let target = format!("{HOST_IP}:8088");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &target), None);
    let add =
        json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [port_map(6, 8088, 80)]}});
    w.client().patch::<serde_json::Value>(&format!("/endpoints/{}", c.ep.id), &add).unwrap();
    assert!(probe::tcp_seen_as(&w.lan_path(), &target).is_some());
    let remove =
        json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [port_map(6, 8088, 80)]}});
    w.client().patch::<serde_json::Value>(&format!("/endpoints/{}", c.ep.id), &remove).unwrap();
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &target), None);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn sctp_port_mappings_follow_what_the_kernel_can_do() {
    cnet_testkit::require_root!();
    let w = World::new();
    network(&w, "nat", "NAT", &["10.89.0.0/24"]);
    let caps: serde_json::Value = w.client().get("/capabilities").unwrap();
    let result = w.client().post::<serde_json::Value>(
        "/endpoints",
        &json!({"HostComputeNetwork": "nat", "Policies": [port_map(132, 3868, 3868)]}),
    );
    if caps["Sctp"] == json!(true) {
        result.expect("SCTP mapping on a kernel with SCTP");
    } else {
        let err = result.unwrap_err();
        assert_eq!(err.code(), Some(cnet_model::ErrorCode::MappingNotSupported), "{err}");
        assert!(err.to_string().contains("SCTP"), "{err}");
    }
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn the_endpoint_mtu_and_mac_are_set_inside_the_namespace() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.90.0.0/24"]);
    let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("c")})).unwrap();
    let ep: cnet_model::Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id, "MacAddress": "0A-58-00-00-00-99",
                    "Policies": [{"Type": "InterfaceParameters", "Settings": {"Mtu": 1400}}]}),
        )
        .unwrap();
    let out = w.exec_in(ns.netns_path.as_deref().unwrap(), &["ip", "-o", "link", "show", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mtu 1400"), "{text}");
    assert!(text.contains("0a:58:00:00:00:99"), "{text}");
    assert_eq!(ep.mac_address.unwrap().to_string(), "0a:58:00:00:00:99");
    assert!(probe::ping(ns.netns_path.as_deref().unwrap(), "10.90.0.1"));
}

#[test]
fn two_nat_networks_both_reach_the_lan_and_stay_apart() {
    cnet_testkit::require_root!();
    let w = World::new();
    let one = network(&w, "one", "NAT", &["10.91.0.0/24"]);
    let two = network(&w, "two", "NAT", &["10.92.0.0/24"]);
    let a = container(&w, &one, "a", json!([]));
    let b = container(&w, &two, "b", json!([]));
    let _tcp = probe::tcp_server(&w.lan_path(), "0.0.0.0:7010");
    for c in [&a, &b] {
        assert_eq!(probe::tcp_seen_as(&c.path(), &format!("{LAN_IP}:7010")), Some(HOST_IP.to_string()), "{}", c.ip());
    }
    assert!(!probe::ping(&a.path(), &b.ip()), "NAT networks are isolated from each other");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
