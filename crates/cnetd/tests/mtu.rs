//! `InterfaceParameters` and `EncapOverhead`: an endpoint's MTU, set at
//! creation and changed at run time, with real packets.

mod common;
use common::*;
use serde_json::{json, Value};

fn mtu_of(w: &World, netns: &str, dev: &str) -> u32 {
    let out = w.exec_in(netns, &["ip", "-o", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|t| *t != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MTU for {dev}: {text}"))
}

/// Whether an unfragmentable echo of `size` bytes of payload leaves `c` and is answered.
fn ping_df(w: &World, c: &Container, size: u32, dst: &str) -> bool {
    let s = size.to_string();
    w.exec_in(&c.path(), &["ping", "-c", "1", "-W", "1", "-M", "do", "-s", &s, dst]).status.success()
}

fn params(mtu: u32) -> Value {
    json!({"Type": "InterfaceParameters", "Settings": {"Mtu": mtu}})
}

#[test]
fn an_endpoints_mtu_is_set_at_creation_and_changed_at_run_time_on_both_ends() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.125.0.0/24"]);
    let a = container(&w, &net, "a", json!([params(1400)]));
    let host_end = a.ep.host_interface_name.clone().unwrap();
    assert_eq!(mtu_of(&w, &a.path(), "eth0"), 1400);
    assert_eq!(mtu_of(&w, &w.host_path(), &host_end), 1400);
    assert!(ping_df(&w, &a, 1372, LAN_IP), "1,400 bytes leave whole");
    assert!(!ping_df(&w, &a, 1373, LAN_IP), "1,401 do not");

    // Changed while a connection is open: the connection goes on.
    let _srv = probe::tcp_server(&w.lan_path(), "0.0.0.0:7041");
    let mut conn = probe::tcp_connect(&a.path(), &format!("{LAN_IP}:7041")).expect("connect");
    patch(&w, &a.ep, "Update", json!([params(1300)])).unwrap();
    assert_eq!(mtu_of(&w, &a.path(), "eth0"), 1300);
    assert_eq!(mtu_of(&w, &w.host_path(), &host_end), 1300);
    assert!(ping_df(&w, &a, 1272, LAN_IP) && !ping_df(&w, &a, 1273, LAN_IP), "the new MTU holds");
    let long = "x".repeat(5000);
    assert_eq!(conn.echo(&long).expect("the open connection survives"), long);

    // EncapOverhead takes its bytes off.
    patch(&w, &a.ep, "Add", json!([{"Type": "EncapOverhead", "Settings": {"Overhead": 100}}])).unwrap();
    assert_eq!(mtu_of(&w, &a.path(), "eth0"), 1200);
    assert_eq!(mtu_of(&w, &w.host_path(), &host_end), 1200);

    // Bad values are refused and change nothing.
    for (bad, want) in [
        (json!([params(70000)]), "out of range"),
        (json!([params(1300), {"Type": "EncapOverhead", "Settings": {"Overhead": 1000}}]), "below 576"),
        (json!([{"Type": "EncapOverhead", "Settings": {"Bytes": 50}}]), "unknown field"),
    ] {
        let err = patch(&w, &a.ep, "Update", bad).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(mtu_of(&w, &a.path(), "eth0"), 1200, "unchanged");

    // Removed: back to the network's MTU.
    patch(&w, &a.ep, "Update", json!([])).unwrap();
    assert_eq!(mtu_of(&w, &a.path(), "eth0"), 1500);
    assert_eq!(mtu_of(&w, &w.host_path(), &host_end), 1500);
    assert_eq!(conn.echo("still here").expect("and survives that"), "still here");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn an_ipv6_network_keeps_the_endpoint_mtu_at_1280_at_least() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat6", "NAT", &["10.126.0.0/24", "fd00:126::/64"]);
    let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("a")})).unwrap();
    let err = w
        .client()
        .post::<Value>(
            "/endpoints",
            &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id,
                "Policies": [params(1300), {"Type": "EncapOverhead", "Settings": {"Overhead": 50}}]}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("IPv6's minimum"), "{err}");
}
