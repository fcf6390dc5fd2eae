//! `OutBoundNAT` with real packets: the LAN server reports the source it saw.

mod common;
use common::*;
use serde_json::{json, Value};

fn onat(settings: Value) -> Value {
    json!({"Type": "OutBoundNAT", "Settings": settings})
}

#[test]
fn outbound_nat_picks_the_source_the_lan_sees_with_exceptions_destinations_and_a_virtual_ip() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.123.0.0/24"]);
    // The LAN routes the endpoints' subnet back to the host, so that an
    // untranslated flow is answered.
    w.exec_in(&w.lan_path(), &["ip", "route", "add", "10.123.0.0/24", "via", HOST_IP]);
    w.exec_in(&w.host_path(), &["ip", "addr", "add", "198.18.0.77/24", "dev", "uplink0"]);
    let _tcp = probe::tcp_server(&w.lan_path(), "0.0.0.0:7031");
    let _udp = probe::udp_server(&w.lan_path(), "0.0.0.0:7032");
    let (tcp, udp) = (format!("{LAN_IP}:7031"), format!("{LAN_IP}:7032"));
    let a = container(&w, &net, "a", json!([onat(json!({"Exceptions": [format!("{LAN_IP}/32")]}))]));
    let seen = |what: &str, want: &str| {
        assert_eq!(probe::tcp_seen_as(&a.path(), &tcp).as_deref(), Some(want), "TCP: {what}");
        assert_eq!(probe::udp_seen_as(&a.path(), &udp).as_deref(), Some(want), "UDP: {what}");
    };
    seen("an exception is reached untranslated", &a.ip());

    patch(&w, &a.ep, "Update", json!([onat(json!({"VirtualIP": "198.18.0.77"}))])).unwrap();
    seen("translated to the VirtualIP", "198.18.0.77");

    patch(&w, &a.ep, "Update", json!([onat(json!({"Destinations": ["198.18.0.99"]}))])).unwrap();
    seen("only Destinations are translated: the LAN server is not one", &a.ip());

    patch(&w, &a.ep, "Update", json!([onat(json!({"Destinations": ["198.18.0.0/24"]}))])).unwrap();
    seen("a destination is translated to the host's address", HOST_IP);
    assert!(w.drift().is_empty(), "the kernel holds what cnet wrote: {:?}", w.drift());

    // Bad settings are refused and change nothing.
    for (bad, want) in [
        (json!([onat(json!({"VirtualIP": "the-host"}))]), "is not an address"),
        (json!([onat(json!({"Exceptions": ["10.0.0.0/33"]}))]), "Exceptions entry"),
        (json!([onat(json!({"VirtualIP": "fd00::77"}))]), "of a family"),
        (json!([onat(json!({})), onat(json!({}))]), "one OutBoundNAT"),
        (json!([onat(json!({"Exception": []}))]), "unknown field"),
    ] {
        let err = patch(&w, &a.ep, "Update", bad).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    seen("still as before", HOST_IP);

    // Removed: the network's own masquerade again.
    patch(&w, &a.ep, "Remove", json!([onat(json!({}))])).unwrap();
    patch(&w, &a.ep, "Add", json!([onat(json!({"Exceptions": ["198.18.0.0/24"]}))])).unwrap();
    seen("an exception prefix", &a.ip());
    patch(&w, &a.ep, "Remove", json!([onat(json!({}))])).unwrap();
    seen("the network's masquerade", HOST_IP);

    // Refused where the host does not route the traffic out.
    let internal = network(&w, "int", "Internal", &["10.124.0.0/24"]);
    let ns: cnet_model::Namespace = w.client().post("/namespaces", &json!({"Name": w.name("i")})).unwrap();
    let err = w
        .client()
        .post::<Value>(
            "/endpoints",
            &json!({"HostComputeNetwork": internal.id, "HostComputeNamespace": ns.id, "Policies": [onat(json!({}))]}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("OutBoundNAT needs a network"), "{err}");
}

#[test]
fn outbound_nat_translates_a_physical_network_endpoint_to_the_host() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = physical_network(&w, "l2", "L2Bridge");
    let _tcp = probe::tcp_server(&w.lan_path(), "0.0.0.0:7033");
    let tcp = format!("{LAN_IP}:7033");
    let a = container(&w, &net, "a", json!([]));
    assert_eq!(probe::tcp_seen_as(&a.path(), &tcp), Some(a.ip()), "an L2Bridge endpoint is seen as itself");
    patch(&w, &a.ep, "Add", json!([onat(json!({}))])).unwrap();
    assert_eq!(probe::tcp_seen_as(&a.path(), &tcp).as_deref(), Some(HOST_IP), "translated to the host");
    let b = container(&w, &net, "b", json!([]));
    let _local = probe::tcp_server(&b.path(), "0.0.0.0:7034");
    assert_eq!(
        probe::tcp_seen_as(&a.path(), &format!("{}:7034", b.ip())),
        Some(a.ip()),
        "never between endpoints of the switch"
    );
    patch(&w, &a.ep, "Update", json!([onat(json!({"Exceptions": [LAN_IP]}))])).unwrap();
    assert_eq!(probe::tcp_seen_as(&a.path(), &tcp), Some(a.ip()), "an exception");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
