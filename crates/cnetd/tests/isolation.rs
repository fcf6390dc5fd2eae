//! Internal and Private networks, and isolation between networks of every type.

mod common;
use common::*;
use serde_json::json;

#[test]
fn endpoints_of_two_nat_networks_cannot_reach_each_other_except_through_published_ports() {
    cnet_testkit::require_root!();
    let w = World::new();
    let n1 = network(&w, "n1", "NAT", &["10.91.0.0/24"]);
    let n2 = network(&w, "n2", "NAT", &["10.92.0.0/24"]);
    let a = container(&w, &n1, "a", json!([]));
    let b = container(&w, &n2, "b", json!([port_map(6, 8080, 80)]));
    let _srv = probe::tcp_server(&b.path(), "0.0.0.0:80");
    assert!(!probe::ping(&a.path(), &b.ip()), "n1 must not reach n2 directly");
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{}:80", b.ip())), None);
    assert!(probe::tcp_seen_as(&a.path(), &format!("{HOST_IP}:8080")).is_some(), "published port through the host");
}

#[test]
fn an_internal_network_reaches_the_host_but_has_no_egress() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "int", "Internal", &["10.93.0.0/24"]);
    let a = container(&w, &net, "a", json!([]));
    let b = container(&w, &net, "b", json!([]));
    assert!(probe::ping(&a.path(), &b.ip()), "endpoints of one internal network talk");
    assert!(probe::ping(&a.path(), "10.93.0.1"), "endpoint → host gateway");
    assert!(probe::ping(&w.host_path(), &a.ip()), "host → endpoint");
    let _lan = probe::tcp_server(&w.lan_path(), "0.0.0.0:7010");
    assert_eq!(probe::tcp_seen_as(&a.path(), &format!("{LAN_IP}:7010")), None, "no egress from Internal");
    assert!(!probe::ping(&a.path(), LAN_IP));
    let err = w
        .client()
        .post::<serde_json::Value>(
            "/endpoints",
            &json!({"HostComputeNetwork": "int", "Policies": [port_map(6, 8080, 80)]}),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(cnet_model::ErrorCode::MappingNotSupported), "{err}");
}

#[test]
fn a_private_network_has_no_host_address_and_endpoints_reach_only_each_other() {
    cnet_testkit::require_root!();
    let w = World::new();
    let private = network(&w, "priv", "Private", &["10.94.0.0/24"]);
    let nat = network(&w, "nat", "NAT", &["10.95.0.0/24"]);
    let a = container(&w, &private, "a", json!([]));
    let b = container(&w, &private, "b", json!([]));
    let c = container(&w, &nat, "c", json!([]));
    assert!(probe::ping(&a.path(), &b.ip()), "private endpoints talk");
    assert!(a.ep.routes.is_empty(), "no gateway on Private: {:?}", a.ep.routes);
    assert!(!probe::ping(&w.host_path(), &a.ip()), "host must not reach a private endpoint");
    assert!(!probe::ping(&c.path(), &a.ip()), "other networks must not reach a private endpoint");
    let addrs =
        w.exec_in(&w.host_path(), &["ip", "-o", "addr", "show", "dev", private.bridge_name.as_deref().unwrap()]);
    assert!(String::from_utf8_lossy(&addrs.stdout).trim().is_empty(), "the Private bridge has an address");
}

#[test]
fn internal_and_nat_networks_are_isolated_both_ways() {
    cnet_testkit::require_root!();
    let w = World::new();
    let int = network(&w, "int", "Internal", &["10.96.0.0/24"]);
    let nat = network(&w, "nat", "NAT", &["10.97.0.0/24"]);
    let a = container(&w, &int, "a", json!([]));
    let b = container(&w, &nat, "b", json!([]));
    assert!(!probe::ping(&a.path(), &b.ip()));
    assert!(!probe::ping(&b.path(), &a.ip()));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
