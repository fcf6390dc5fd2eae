//! `L4Proxy` with real packets: a test proxy on the host receives the
//! endpoint's redirected TCP flows and reads where they were going.

mod common;
use common::*;
use serde_json::{json, Value};

fn proxy(settings: Value) -> Value {
    json!({"Type": "L4Proxy", "Settings": settings})
}

#[test]
fn an_endpoints_tcp_flows_reach_the_proxy_which_reads_their_original_destination() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "nat", "NAT", &["10.128.0.0/24"]);
    let _proxy = probe::original_destination_server(&w.host_path(), "0.0.0.0:15001");
    let _lan = probe::tcp_server(&w.lan_path(), "0.0.0.0:7061");
    let _lan_udp = probe::udp_server(&w.lan_path(), "0.0.0.0:7063");
    let _host = probe::tcp_server(&w.host_path(), "0.0.0.0:7062");
    let lan = format!("{LAN_IP}:7061");
    let a = container(&w, &net, "a", json!([proxy(json!({"Port": "15001"}))]));
    let b = container(&w, &net, "b", json!([]));

    let proxied = format!("proxied {lan}");
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan), Some(proxied.clone()), "a's flow went to the proxy");
    assert_eq!(probe::tcp_seen_as(&b.path(), &lan).as_deref(), Some(HOST_IP), "b has no proxy");
    assert_eq!(probe::tcp_seen_as(&w.host_path(), &lan).as_deref(), Some(HOST_IP), "the proxy's own upstream goes out");
    assert_eq!(
        probe::tcp_seen_as(&a.path(), "10.128.0.1:7062"),
        Some(a.ip()),
        "the host's own services are reached, not proxied"
    );
    assert_eq!(
        probe::udp_seen_as(&a.path(), &format!("{LAN_IP}:7063")).as_deref(),
        Some(HOST_IP),
        "UDP is not proxied"
    );

    // Exceptions, a Destination, and the proxy named by address.
    patch(&w, &a.ep, "Update", json!([proxy(json!({"Port": "15001", "ExceptionList": [LAN_IP]}))])).unwrap();
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan).as_deref(), Some(HOST_IP), "an exception goes straight out");
    patch(&w, &a.ep, "Update", json!([proxy(json!({"Port": "15001", "Destination": "192.0.2.0/24"}))])).unwrap();
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan).as_deref(), Some(HOST_IP), "only the Destination is proxied");
    patch(&w, &a.ep, "Update", json!([proxy(json!({"Port": "15001", "IP": HOST_IP, "Exceptions": []}))])).unwrap();
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan), Some(proxied.clone()), "to the proxy by its address");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Bad settings are refused and change nothing.
    for (bad, want) in [
        (proxy(json!({"Port": "0"})), "is not a port"),
        (proxy(json!({"Port": "53", "Protocol": 17})), "only TCP"),
        (proxy(json!({"Port": "15001", "IP": a.ip()})), "the endpoint's own address"),
        (proxy(json!({"Port": "15001", "ExceptionList": ["10.0.0.0/40"]})), "ExceptionList entry"),
    ] {
        let err = patch(&w, &a.ep, "Update", json!([bad])).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan), Some(proxied.clone()), "still proxied");
    w.stop_daemon();
    w.start_daemon();
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan), Some(proxied), "proxied after a restart of cnetd");

    // Removed (an endpoint has one L4Proxy: any names it): straight out again.
    patch(&w, &a.ep, "Remove", json!([proxy(json!({"Port": "1"}))])).unwrap();
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan).as_deref(), Some(HOST_IP), "no proxy any more");
}
