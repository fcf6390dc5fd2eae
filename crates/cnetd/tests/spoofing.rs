//! Anti-spoofing, on by default, and endpoint statistics, with real packets.

mod common;
use cnet_model::stats::EndpointStats;
use common::*;
use serde_json::json;

fn stats(w: &World, c: &Container) -> EndpointStats {
    w.client().get(&format!("/endpoints/{}/stats", c.ep.id)).expect("stats")
}

fn sh(w: &World, c: &Container, cmd: &str) -> std::process::Output {
    w.exec_in(&c.path(), &["bash", "-c", cmd])
}

/// Whether an echo from `c`, sent from address `src`, to `dst` is answered.
fn ping_from(w: &World, c: &Container, src: &str, dst: &str) -> bool {
    sh(w, c, &format!("ping -c 2 -i 0.2 -W 1 -q -I {src} {dst}")).status.success()
}

#[test]
fn an_endpoint_sends_only_from_its_own_mac_and_addresses_and_drops_are_counted() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "nat", "NAT", &["10.121.0.0/24", "fd00:121::/64"]);
    let a = container(&w, &net, "a", json!([]));
    let b = container(&w, &net, "b", json!([]));
    assert!(probe::ping(&a.path(), &b.ip()), "a → b from its own address");
    assert!(probe::ping(&a.path(), LAN_IP), "a → LAN through NAT");
    assert!(probe::ping(&a.path(), &b.ip6()), "a → b over IPv6");
    assert_eq!(stats(&w, &a).policy_drops.spoofing, 0, "nothing dropped yet");

    // Another IPv4 address: its packets and its ARP never leave the port.
    assert!(sh(&w, &a, "ip addr add 10.121.0.200/24 dev eth0").status.success());
    assert!(!ping_from(&w, &a, "10.121.0.200", &b.ip()), "a spoofed source on the switch");
    assert!(!ping_from(&w, &a, "10.121.0.200", LAN_IP), "a spoofed source through NAT");
    let after_v4 = stats(&w, &a).policy_drops.spoofing;
    assert!(after_v4 >= 4, "spoofed packets are counted: {after_v4}");
    assert_eq!(stats(&w, &b).policy_drops.spoofing, 0, "b's counter is its own");
    assert!(probe::ping(&a.path(), &b.ip()), "its own address still works");

    // Another IPv6 address (not link-local).
    assert!(sh(&w, &a, "ip addr add fd00:121::200/64 dev eth0 nodad").status.success());
    assert!(!ping_from(&w, &a, "fd00:121::200", &b.ip6()), "a spoofed IPv6 source");
    assert!(stats(&w, &a).policy_drops.spoofing > after_v4, "IPv6 drops are counted");

    // Another MAC: even from its own address, nothing passes.
    let mac = a.ep.mac_address.unwrap().to_string();
    assert!(sh(&w, &a, "ip link set eth0 address 02:aa:bb:cc:dd:ee").status.success());
    let before_mac = stats(&w, &a).policy_drops.spoofing;
    assert!(!probe::ping(&a.path(), &b.ip()), "a spoofed MAC");
    assert!(stats(&w, &a).policy_drops.spoofing > before_mac, "MAC drops are counted");
    assert!(sh(&w, &a, &format!("ip link set eth0 address {mac}")).status.success());
    assert!(probe::ping(&a.path(), &b.ip()), "its own MAC again");

    // A second endpoint in a's namespace: a reply may leave by either of
    // its interfaces with either of its addresses, and nothing else.
    let net2 = network(&w, "nat2", "NAT", &["10.129.0.0/24"]);
    let second: cnet_model::Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"HostComputeNetwork": net2.id, "HostComputeNamespace": a.ns.id, "InterfaceName": "eth1"}),
        )
        .unwrap();
    let second_ip = second.ip_configurations[0].ip_address.to_string();
    assert!(ping_from(&w, &a, &a.ip(), "10.129.0.1"), "out eth1 from eth0's address");
    assert!(ping_from(&w, &a, &second_ip, &b.ip()), "out eth0 from eth1's address");
    assert!(!ping_from(&w, &a, "10.121.0.200", "10.129.0.1"), "but not from an address of no endpoint there");

    // An endpoint with AllowSpoofing (a router, a VPN) may.
    let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("r")})).unwrap();
    let ep: cnet_model::Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"Name": w.name("r"), "HostComputeNetwork": net.id, "HostComputeNamespace": ns.id,
                "Flags": cnet_model::endpoint::ALLOW_SPOOFING}),
        )
        .unwrap();
    let r = Container { ns, ep };
    assert!(sh(&w, &r, "ip addr add 10.121.0.201/24 dev eth0").status.success());
    assert!(ping_from(&w, &r, "10.121.0.201", &b.ip()), "AllowSpoofing lets it send from any address");

    // The guard survives someone deleting its table, and a restart.
    w.exec_in(&w.host_path(), &["nft", "delete", "table", "bridge", "cnetpol"]);
    let restored = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        w.exec_in(&w.host_path(), &["nft", "list", "table", "bridge", "cnetpol"]).status.success()
    });
    assert!(restored, "the anti-spoofing table is restored");
    assert!(!ping_from(&w, &a, "10.121.0.200", &b.ip()), "still guarded after the repair");
    w.stop_daemon();
    w.start_daemon();
    assert!(!ping_from(&w, &a, "10.121.0.200", &b.ip()), "still guarded after a restart");
    assert!(probe::ping(&a.path(), &b.ip()), "and its own address works");

    // Gone with the endpoints: the table goes with the last guarded one.
    for id in [a.ep.id, b.ep.id, r.ep.id, second.id] {
        w.client().delete(&format!("/endpoints/{id}")).unwrap();
    }
    let listed = w.exec_in(&w.host_path(), &["nft", "list", "table", "bridge", "cnetpol"]);
    assert!(!listed.status.success(), "no table left: {}", String::from_utf8_lossy(&listed.stdout));
}

#[test]
fn a_physical_network_endpoint_is_guarded_too() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = physical_network(&w, "l2", "L2Bridge");
    let a = container(&w, &net, "a", json!([]));
    assert!(probe::ping(&a.path(), LAN_IP), "a → LAN");
    assert!(sh(&w, &a, "ip addr add 198.18.0.222/24 dev eth0").status.success());
    assert!(!ping_from(&w, &a, "198.18.0.222", LAN_IP), "a spoofed source to the LAN");
    assert!(stats(&w, &a).policy_drops.spoofing > 0, "counted");
}

#[test]
fn a_transparent_endpoint_is_guarded_in_its_namespace_also_towards_another_macvlan() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = physical_network(&w, "lan", "Transparent");
    let a = container(&w, &net, "a", json!([]));
    let b = container(&w, &net, "b", json!([]));
    assert!(probe::ping(&a.path(), LAN_IP), "a → LAN");
    assert!(probe::ping(&a.path(), &b.ip()), "a → b, macvlan to macvlan");
    assert_eq!(stats(&w, &a).policy_drops.spoofing, 0, "nothing dropped yet");

    // Another address: neither towards the LAN nor towards b, whose frames
    // from a never pass the host.
    assert!(sh(&w, &a, "ip addr add 198.18.0.222/24 dev eth0").status.success());
    assert!(!ping_from(&w, &a, "198.18.0.222", LAN_IP), "a spoofed source to the LAN");
    assert!(!ping_from(&w, &a, "198.18.0.222", &b.ip()), "a spoofed source to another macvlan");
    let after_ip = stats(&w, &a).policy_drops.spoofing;
    assert!(after_ip >= 4, "spoofed frames are counted: {after_ip}");
    assert_eq!(stats(&w, &b).policy_drops.spoofing, 0, "b's counter is its own");
    assert!(probe::ping(&a.path(), LAN_IP), "its own address still works");

    // Another MAC: even from its own address, nothing passes.
    let mac = a.ep.mac_address.unwrap().to_string();
    assert!(sh(&w, &a, "ip link set eth0 address 02:aa:bb:cc:dd:ee").status.success());
    assert!(!probe::ping(&a.path(), LAN_IP), "a spoofed MAC");
    assert!(stats(&w, &a).policy_drops.spoofing > after_ip, "MAC drops are counted");
    assert!(sh(&w, &a, &format!("ip link set eth0 address {mac}")).status.success());
    assert!(probe::ping(&a.path(), LAN_IP), "its own MAC again");

    // A container with CAP_NET_ADMIN can delete its guard: diag says so,
    // and a restart loads the guard again.
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert!(sh(&w, &a, "nft delete table netdev cnetguard").status.success());
    let drift = w.drift();
    assert!(drift.iter().any(|d| d.contains("anti-spoofing guard is missing")), "{drift:?}");
    assert_eq!(drift.len(), 1, "only a's guard: {drift:?}");
    w.stop_daemon();
    w.start_daemon();
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert!(!ping_from(&w, &a, "198.18.0.222", LAN_IP), "still guarded after a restart");
    assert!(probe::ping(&a.path(), LAN_IP), "and its own address works");

    // The guard's table goes with the namespace's last guarded endpoint.
    let listed = |c: &Container| w.exec_in(&c.path(), &["nft", "list", "table", "netdev", "cnetguard"]);
    assert!(listed(&a).status.success(), "a's namespace has its guard's table");
    w.client().delete(&format!("/endpoints/{}", a.ep.id)).unwrap();
    assert!(!listed(&a).status.success(), "no table left in a's namespace");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn statistics_count_what_the_endpoint_sent_and_received_and_what_acls_dropped() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.122.0.0/24"]);
    let block = json!({"Type": "ACL", "Settings": {"Action": "Block", "Direction": "Out", "Protocols": "17",
        "RemotePorts": "9999"}});
    let a = container(&w, &net, "a", json!([block]));
    assert!(probe::ping(&a.path(), LAN_IP), "warm up: neighbours resolved");
    let before = stats(&w, &a);
    // 50 echoes of 1,000 bytes: frames of 1,042 bytes (Ethernet, IPv4, ICMP) each way.
    let out = sh(&w, &a, &format!("ping -c 50 -i 0.01 -s 1000 -q {LAN_IP}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let after = stats(&w, &a);
    let (sent, received) = (after.packets_sent - before.packets_sent, after.packets_received - before.packets_received);
    assert!((50..=56).contains(&sent), "packets sent: {sent}");
    assert!((50..=56).contains(&received), "packets received: {received}");
    let bytes = after.bytes_sent - before.bytes_sent;
    assert!((50 * 1042..50 * 1042 + 6 * 100).contains(&bytes), "bytes sent: {bytes}");
    let bytes = after.bytes_received - before.bytes_received;
    assert!((50 * 1042..50 * 1042 + 6 * 100).contains(&bytes), "bytes received: {bytes}");

    // Three datagrams the ACL blocks: three ACL drops, no spoofing drop.
    sh(&w, &a, &format!("for i in 1 2 3; do echo x > /dev/udp/{LAN_IP}/9999; done"));
    let after = stats(&w, &a);
    assert_eq!(after.policy_drops.acl, 3, "{after:?}");
    assert_eq!(after.policy_drops.spoofing, 0);

    // The command line shows the same, and `show` carries them.
    let text = String::from_utf8_lossy(&w.cnet(&["endpoint", "stats", &a.ep.id.to_string()]).stdout).into_owned();
    assert!(text.contains("policy drops: acl 3, spoofing 0"), "{text}");
    let shown: serde_json::Value =
        serde_json::from_slice(&w.cnet(&["endpoint", "show", &a.ep.id.to_string()]).stdout).unwrap();
    assert_eq!(shown["Statistics"]["PolicyDrops"]["Acl"], 3, "{shown}");

    // A detached endpoint has nothing to count on.
    let detached = container(&w, &net, "d", json!([]));
    w.client()
        .patch::<serde_json::Value>(
            &format!("/namespaces/{}", detached.ns.id),
            &json!({"ResourceType": "Endpoint", "RequestType": "Remove", "Settings": {"EndpointId": detached.ep.id}}),
        )
        .unwrap();
    let err = w.client().get::<EndpointStats>(&format!("/endpoints/{}/stats", detached.ep.id)).unwrap_err();
    assert!(err.to_string().contains("attach it first"), "{err}");
}
