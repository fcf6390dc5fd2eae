//! Endpoint policies with real packets: ACLs.

mod common;
use common::*;
use serde_json::{json, Value};

/// Packets the endpoint's ACLs dropped, from its counter in the host's table.
fn acl_drops(w: &World, ep: &cnet_model::Endpoint) -> u64 {
    acl_drops_in(w, &w.host_path(), ep)
}

#[test]
fn acls_allow_and_block_tcp_udp_and_icmp_both_ways_in_priority_order() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.120.0.0/24"]);
    let b = container(&w, &net, "b", json!([]));
    let c = container(&w, &net, "c", json!([]));
    let a = container(
        &w,
        &net,
        "a",
        json!([
            acl(
                "Allow",
                "In",
                json!({"Protocols": "6", "LocalPorts": "80", "RemoteAddresses": b.ip(), "Priority": 100})
            ),
            acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "80,8000-8001", "Priority": 200})),
            acl("Block", "In", json!({"Protocols": "17", "LocalPorts": "53", "Priority": 100})),
            acl("Block", "In", json!({"Protocols": "1", "RemoteAddresses": c.ip(), "Priority": 100})),
            acl("Block", "Out", json!({"Protocols": "6", "RemotePorts": "7020", "Priority": 100})),
            acl("Block", "Out", json!({"Protocols": "1", "RemoteAddresses": LAN_IP, "Priority": 100})),
        ]),
    );
    let _tcp: Vec<_> = [80, 81, 8001].iter().map(|p| probe::tcp_server(&a.path(), &format!("0.0.0.0:{p}"))).collect();
    let _udp: Vec<_> = [53, 54].iter().map(|p| probe::udp_server(&a.path(), &format!("0.0.0.0:{p}"))).collect();
    let at = |port: u16| format!("{}:{port}", a.ip());

    // In: the allow at priority 100 goes before the block at 200.
    assert_eq!(probe::tcp_seen_as(&b.path(), &at(80)).as_deref(), Some(b.ip().as_str()), "b → a:80 allowed");
    assert_eq!(probe::tcp_seen_as(&c.path(), &at(80)), None, "c → a:80 blocked");
    assert_eq!(probe::tcp_seen_as(&b.path(), &at(8001)), None, "a port range is blocked");
    assert!(probe::tcp_seen_as(&c.path(), &at(81)).is_some(), "no rule: inbound TCP allowed by default");
    assert!(probe::tcp_seen_as(&w.host_path(), &at(81)).is_some(), "host → a:81 allowed");
    assert_eq!(probe::tcp_seen_as(&w.host_path(), &at(80)), None, "host → a:80 blocked too");
    assert_eq!(probe::udp_seen_as(&b.path(), &at(53)), None, "UDP 53 blocked");
    assert!(probe::udp_seen_as(&b.path(), &at(54)).is_some(), "UDP 54 allowed");
    assert!(probe::ping(&b.path(), &a.ip()), "b pings a");
    assert!(!probe::ping(&c.path(), &a.ip()), "c's ping blocked");

    // Out: replies of allowed flows pass back in (stateful).
    let _lan: Vec<_> = [7020, 7021].iter().map(|p| probe::tcp_server(&w.lan_path(), &format!("0.0.0.0:{p}"))).collect();
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{LAN_IP}:7020")), None, "a → LAN:7020 blocked");
    assert!(probe::tcp_seen_as(&a.path(), &format!("{LAN_IP}:7021")).is_some(), "a → LAN:7021 allowed");
    assert!(!probe::ping(&a.path(), LAN_IP), "a's ping to the LAN blocked");
    assert!(probe::ping(&a.path(), &b.ip()), "a pings b");
    assert!(acl_drops(&w, &a.ep) > 0, "drops are counted");
    // The other endpoints have no ACLs and nothing in the table.
    assert!(probe::tcp_seen_as(&a.path(), &format!("{}:9", b.ip())).is_none());
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Deleted: its chains go with it.
    w.client().delete(&format!("/endpoints/{}", a.ep.id)).unwrap();
    let table = w.exec_in(&w.host_path(), &["nft", "list", "table", "inet", "cnetpol"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains(&a.ep.id.simple().to_string()[..16]), "{table}");
}

#[test]
fn an_acl_change_at_run_time_keeps_open_connections_and_bad_policies_change_nothing() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "nat", "NAT", &["10.121.0.0/24"]);
    let a = container(&w, &net, "a", json!([]));
    let b = container(&w, &net, "b", json!([]));
    let _srv = probe::tcp_server(&a.path(), "0.0.0.0:80");
    let target = format!("{}:80", a.ip());
    let mut open = probe::tcp_connect(&b.path(), &target).expect("b → a before any ACL");

    let block = acl("Block", "In", json!({"Id": "no-web", "Protocols": "6", "LocalPorts": "80"}));
    patch(&w, &a.ep, "Add", json!([block.clone()])).unwrap();
    assert_eq!(probe::tcp_seen_as(&b.path(), &target), None, "a new connection is blocked");
    assert_eq!(open.echo("still here").unwrap(), "still here", "the open connection is not disturbed");

    // Bad policies are refused with what to fix, and change nothing.
    for (bad, want) in [
        (acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "90-80"})), "backwards"),
        (acl("Block", "In", json!({"LocalPorts": "80"})), "need Protocols"),
        (acl("Block", "In", json!({"RemoteAddresses": "some-set"})), "SetPolicy"),
        (acl("Block", "In", json!({"Protocols": "6", "Colour": "red"})), "unknown field"),
    ] {
        let err = patch(&w, &a.ep, "Add", json!([bad])).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    let now: cnet_model::Endpoint = w.client().get(&format!("/endpoints/{}", a.ep.id)).unwrap();
    assert_eq!(now.policies.len(), 1, "{:?}", now.policies);

    // The table survives a restart of cnetd and someone deleting it.
    w.stop_daemon();
    w.start_daemon();
    assert_eq!(probe::tcp_seen_as(&b.path(), &target), None, "still blocked after a restart");
    w.exec_in(&w.host_path(), &["nft", "delete", "table", "inet", "cnetpol"]);
    let restored = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        w.exec_in(&w.host_path(), &["nft", "list", "table", "inet", "cnetpol"]).status.success()
    });
    assert!(restored, "the policy table is restored");
    assert_eq!(probe::tcp_seen_as(&b.path(), &target), None, "still blocked after the repair");

    // Removed by its Id: open again.
    patch(&w, &a.ep, "Remove", json!([acl("Block", "In", json!({"Id": "no-web"}))])).unwrap();
    assert!(probe::tcp_seen_as(&b.path(), &target).is_some(), "open again");

    // The same from the command line.
    let ep = a.ep.id.to_string();
    let add = ["endpoint", "acl", "add", &ep, "--id", "cli", "--action", "Block", "--direction", "In"];
    let out =
        w.cnet(&[&add[..], &["--protocols", "6", "--local-ports", "79-81", "--remote-addresses", &b.ip()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(probe::tcp_seen_as(&b.path(), &target), None, "blocked from the command line");
    let out = w.cnet(&["endpoint", "acl", "add", &ep, "--action", "Block", "--direction", "In", "--local-ports", "80"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("need Protocols"));
    assert!(w.cnet(&["endpoint", "acl", "remove", &ep, "--id", "cli"]).status.success());
    assert!(probe::tcp_seen_as(&b.path(), &target).is_some(), "open again");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

/// Packets endpoint `ep`'s ACLs dropped, from its counter in the table of
/// the namespace at `netns` (the host's, or a Transparent container's).
fn acl_drops_in(w: &World, netns: &str, ep: &cnet_model::Endpoint) -> u64 {
    let counter = format!("acl_{}", tag(ep));
    let out = w.exec_in(netns, &["nft", "list", "counter", "inet", "cnetpol", &counter]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().skip_while(|t| *t != "packets").nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn on_a_transparent_network_a_containers_acls_hold_in_its_namespace_towards_the_lan_and_other_macvlans() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let Some(net) = transparent_lan(&w) else { return };
    // b is another macvlan of the same uplink: frames between a and b never pass the host.
    let b = container(&w, &net, "b", json!([]));
    let a = container(
        &w,
        &net,
        "a",
        json!([
            acl(
                "Allow",
                "In",
                json!({"Protocols": "6", "LocalPorts": "80", "RemoteAddresses": b.ip(), "Priority": 100})
            ),
            acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "80", "Priority": 200})),
            acl("Block", "In", json!({"Protocols": "17", "LocalPorts": "53"})),
            acl("Block", "Out", json!({"Protocols": "6", "RemotePorts": "7040"})),
            acl("Block", "Out", json!({"Protocols": "1", "RemoteAddresses": LAN_IP})),
        ]),
    );
    let _tcp: Vec<_> = [80, 81].iter().map(|p| probe::tcp_server(&a.path(), &format!("0.0.0.0:{p}"))).collect();
    let _udp: Vec<_> = [53, 54].iter().map(|p| probe::udp_server(&a.path(), &format!("0.0.0.0:{p}"))).collect();
    let at = |port: u16| format!("{}:{port}", a.ip());

    // In, from the LAN and from the other macvlan, in priority order.
    assert_eq!(probe::tcp_seen_as(&b.path(), &at(80)).as_deref(), Some(b.ip().as_str()), "b → a:80 allowed");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &at(80)), None, "LAN → a:80 blocked");
    assert!(probe::tcp_seen_as(&w.lan_path(), &at(81)).is_some(), "no rule: inbound TCP allowed by default");
    assert_eq!(probe::udp_seen_as(&b.path(), &at(53)), None, "UDP 53 blocked");
    assert!(probe::udp_seen_as(&w.lan_path(), &at(54)).is_some(), "UDP 54 allowed");
    assert!(probe::ping(&b.path(), &a.ip()), "b pings a");

    // Out, stateful: replies of allowed flows come back in.
    let _lan: Vec<_> = [7040, 7041].iter().map(|p| probe::tcp_server(&w.lan_path(), &format!("0.0.0.0:{p}"))).collect();
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{LAN_IP}:7040")), None, "a → LAN:7040 blocked");
    assert!(probe::tcp_seen_as(&a.path(), &format!("{LAN_IP}:7041")).is_some(), "a → LAN:7041 allowed");
    assert!(!probe::ping(&a.path(), LAN_IP), "a's ping to the LAN blocked");
    assert!(probe::ping(&a.path(), &b.ip()), "a pings b");

    // A packet socket sends past a namespace's IP hooks, and so past a's Out
    // ACLs: its frames are dropped on a's link. b has no ACLs: its frame
    // arrives, and so do a's datagrams from an ordinary socket.
    let to = std::net::SocketAddrV4::new(LAN_IP.parse().unwrap(), 7050);
    let sink = probe::udp_sink(&w.lan_path(), "0.0.0.0:7050");
    let raw = |c: &Container| {
        let link = c.ep.interface_name();
        let _ = probe::raw_udp(&c.path(), link.as_str(), c.ip().parse().unwrap(), to);
        sink.recv_from(&mut [0; 64]).is_ok()
    };
    assert!(raw(&b), "b's raw frame reaches the LAN");
    assert!(!raw(&a), "a's raw frame is dropped: it skipped a's Out ACLs");
    let sent = cnet_dataplane::netns::run_in(&a.path(), move || {
        std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"ok", to))
    });
    assert!(matches!(sent, Ok(Ok(_))) && sink.recv_from(&mut [0; 64]).is_ok(), "a's own UDP to the LAN passes");

    // The rules are in a's namespace, counted there; none on the host.
    let drops = acl_drops_in(&w, &a.path(), &a.ep);
    assert!(drops >= 4, "a's counter counts its drops: {drops}");
    let host = w.exec_in(&w.host_path(), &["nft", "list", "table", "inet", "cnetpol"]);
    assert!(!host.status.success(), "the host has no policy table for it");
    let stats: cnet_model::stats::EndpointStats = w.client().get(&format!("/endpoints/{}/stats", a.ep.id)).unwrap();
    assert!(stats.policy_drops.acl >= drops, "the statistics read it: {stats:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // A change at run time: an established connection the new rules block goes on, new ones are refused.
    let mut open = probe::tcp_connect(&a.path(), &format!("{LAN_IP}:7041")).expect("a → LAN:7041");
    patch(&w, &a.ep, "Add", json!([acl("Block", "Out", json!({"Protocols": "6", "RemotePorts": "7041"}))])).unwrap();
    assert_eq!(open.echo("still here").unwrap(), "still here", "the open connection is not disturbed");
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{LAN_IP}:7041")), None, "a new one is blocked");
    // A bad rule is refused and changes nothing.
    let err = patch(&w, &a.ep, "Add", json!([acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "90-80"}))]))
        .unwrap_err();
    assert_eq!(err.code(), Some(cnet_model::ErrorCode::InvalidParameter), "{err}");
    assert!(probe::tcp_seen_as(&w.lan_path(), &at(81)).is_some(), "unchanged");

    // The container deletes its table while cnetd is down: diag says so, a restart puts it back.
    w.exec_in(&a.path(), &["nft", "delete", "table", "inet", "cnetpol"]);
    assert!(w.drift().iter().any(|d| d.contains("ACL") && d.contains(a.ep.id.to_string().as_str())), "{:?}", w.drift());
    w.kill_daemon();
    w.start_daemon();
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &at(80)), None, "blocked again after the restart");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Removed with the endpoint; b's namespace never had a table.
    w.client().delete(&format!("/endpoints/{}", a.ep.id)).unwrap();
    assert!(!w.exec_in(&a.path(), &["nft", "list", "table", "inet", "cnetpol"]).status.success(), "gone with it");
    assert!(!w.exec_in(&b.path(), &["nft", "list", "table", "inet", "cnetpol"]).status.success());

    // A VM's macvtap frames pass no hook with connection tracking: its ACLs are refused, nothing is made.
    let vm: cnet_model::Namespace =
        w.client().post("/namespaces", &json!({"Name": w.name("vm"), "Type": "Guest"})).unwrap();
    let err = w
        .client()
        .post::<Value>(
            "/endpoints",
            &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": vm.id,
                    "Policies": [acl("Block", "In", json!({"Protocols": "6"}))]}),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(cnet_model::ErrorCode::MappingNotSupported), "{err}");
    assert!(err.to_string().contains("VM"), "{err}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn acls_hold_for_ipv6_too() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.122.0.0/24", "fd00:122::/64"]);
    let b = container(&w, &net, "b", json!([]));
    let c = container(&w, &net, "c", json!([]));
    let a = container(
        &w,
        &net,
        "a",
        json!([
            acl(
                "Block",
                "In",
                json!({"Protocols": "6", "LocalPorts": "80", "RemoteAddresses": format!("{}/128", c.ip6())})
            ),
            acl("Block", "In", json!({"Protocols": "58", "RemoteAddresses": c.ip6()})),
            acl("Block", "Out", json!({"Protocols": "6", "RemoteAddresses": LAN_IP6, "RemotePorts": "7030"})),
        ]),
    );
    let _srv = probe::tcp_server(&a.path(), "[::]:80");
    let at = format!("[{}]:80", a.ip6());
    assert!(probe::tcp_seen_as(&b.path(), &at).is_some(), "b → a:80 over IPv6");
    assert_eq!(probe::tcp_seen_as(&c.path(), &at), None, "c → a:80 over IPv6 blocked");
    assert!(probe::tcp_seen_as(&c.path(), &format!("{}:80", a.ip())).is_some(), "the IPv4 rule is not there");
    assert!(probe::ping(&b.path(), &a.ip6()), "b pings a over IPv6 (and neighbour discovery passes)");
    assert!(!probe::ping(&c.path(), &a.ip6()), "c's ICMPv6 echo blocked");
    let _lan: Vec<_> = [7030, 7031].iter().map(|p| probe::tcp_server(&w.lan_path(), &format!("[::]:{p}"))).collect();
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("[{LAN_IP6}]:7030")), None, "a → LAN:7030 over IPv6 blocked");
    assert!(probe::tcp_seen_as(&a.path(), &format!("[{LAN_IP6}]:7031")).is_some(), "a → LAN:7031 over IPv6");
}

#[test]
fn acls_hold_on_an_l2bridge_network() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = physical_network(&w, "l2", "L2Bridge");
    let a = container(&w, &net, "a", json!([acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "80"}))]));
    let _tcp: Vec<_> = [80, 81].iter().map(|p| probe::tcp_server(&a.path(), &format!("0.0.0.0:{p}"))).collect();
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{}:80", a.ip())), None, "LAN → a:80 blocked");
    assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{}:81", a.ip())).is_some(), "LAN → a:81 allowed");
}

#[test]
fn on_a_transparent_network_disable_icc_cuts_a_container_off_the_networks_other_endpoints_only() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let Some(net) = transparent_lan(&w) else { return };
    let b = container(&w, &net, "b", json!([]));
    let c = container(&w, &net, "c", json!([]));
    let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("a")})).unwrap();
    let ep: cnet_model::Endpoint = w
        .client()
        .post("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id, "Flags": 2}))
        .unwrap();
    let a = Container { ns, ep };
    let _srv = probe::tcp_server(&a.path(), "0.0.0.0:80");
    let _peer = probe::tcp_server(&b.path(), "0.0.0.0:80");
    let cut = |w: &World, a: &Container, b: &Container| {
        assert!(!probe::ping(&b.path(), &a.ip()), "b → a cut");
        assert!(!probe::ping(&a.path(), &b.ip()), "a → b cut");
        assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{}:80", b.ip())), None, "a → b:80 cut");
        assert_eq!(probe::tcp_seen_as(&b.path(), &format!("{}:80", a.ip())), None, "b → a:80 cut");
        assert!(probe::ping(&a.path(), LAN_IP), "a → LAN works");
        assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{}:80", a.ip())).is_some(), "LAN → a works");
        assert!(probe::ping(&w.host_path(), &a.ip()), "host → a works (the host is no endpoint)");
    };
    cut(&w, &a, &b);
    assert!(probe::ping(&b.path(), &c.ip()), "b ↔ c untouched");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // An endpoint that comes later is a peer too; one that leaves is not any more.
    let d = container(&w, &net, "d", json!([]));
    assert!(!probe::ping(&d.path(), &a.ip()), "d → a cut");
    w.client().delete(&format!("/endpoints/{}", c.ep.id)).unwrap();
    let set = w.exec_in(&a.path(), &["nft", "list", "set", "inet", "cnetpol", &format!("icc_{}_4", tag(&a.ep))]);
    let set = String::from_utf8_lossy(&set.stdout).to_string();
    assert!(set.contains(&b.ip()) && set.contains(&d.ip()) && !set.contains(&c.ip()), "{set}");

    // Across a restart of cnetd.
    w.kill_daemon();
    w.start_daemon();
    cut(&w, &a, &b);
    assert!(probe::ping(&b.path(), &d.ip()), "b ↔ d untouched");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // A VM's macvtap frames pass no hook: DisableICC is refused for it, nothing is made.
    let vm: cnet_model::Namespace =
        w.client().post("/namespaces", &json!({"Name": w.name("vm"), "Type": "Guest"})).unwrap();
    let err = w
        .client()
        .post::<Value>("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": vm.id, "Flags": 2}))
        .unwrap_err();
    assert_eq!(err.code(), Some(cnet_model::ErrorCode::MappingNotSupported), "{err}");
    assert!(err.to_string().contains("VM"), "{err}");

    // Gone with the endpoint.
    w.client().delete(&format!("/endpoints/{}", a.ep.id)).unwrap();
    assert!(!w.exec_in(&a.path(), &["nft", "list", "table", "inet", "cnetpol"]).status.success(), "gone with it");
}

/// A Transparent network on the test LAN, or `None` where the kernel has no macvlan.
fn transparent_lan(w: &World) -> Option<cnet_model::Network> {
    let caps: Value = w.client().get("/capabilities").unwrap();
    (caps["Macvlan"] == json!(true)).then(|| physical_network(w, "lan", "Transparent"))
}

/// The 16 hex digits that name an endpoint's chains and sets.
fn tag(ep: &cnet_model::Endpoint) -> String {
    ep.id.simple().to_string()[..16].to_string()
}

#[test]
fn disable_icc_cuts_an_endpoint_off_its_network_peers_only() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.123.0.0/24", "fd00:123::/64"]);
    let b = container(&w, &net, "b", json!([]));
    let c = container(&w, &net, "c", json!([]));
    let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("a")})).unwrap();
    let ep: cnet_model::Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id, "Flags": 2,
                "Policies": [port_map(6, 8095, 80)]}),
        )
        .unwrap();
    let a = Container { ns, ep };
    let _srv = probe::tcp_server(&a.path(), "[::]:80");
    let _peer = probe::tcp_server(&b.path(), "0.0.0.0:80");
    assert!(!probe::ping(&b.path(), &a.ip()), "b → a cut");
    assert!(!probe::ping(&a.path(), &b.ip()), "a → b cut");
    assert!(!probe::ping(&a.path(), &b.ip6()), "a → b cut over IPv6");
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{}:80", b.ip())), None);
    assert!(probe::ping(&b.path(), &c.ip()), "b ↔ c untouched");
    assert!(probe::ping(&a.path(), LAN_IP), "a → LAN works");
    assert!(probe::ping(&w.host_path(), &a.ip()), "host → a works");
    assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8095")).is_some(), "a's published port works");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
