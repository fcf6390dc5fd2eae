//! `SDNRoute` endpoint policies with real packets: a route through a peer,
//! and `NeedEncap` sending a prefix through the host instead of the switch.

mod common;
use common::*;
use serde_json::{json, Value};

fn sdn(settings: Value) -> Value {
    json!({"Type": "SDNRoute", "Settings": settings})
}

fn routes_of(w: &World, c: &Container) -> String {
    String::from_utf8_lossy(&w.exec_in(&c.path(), &["ip", "route", "show"]).stdout).into_owned()
}

#[test]
fn an_sdn_route_leads_through_its_next_hop_and_need_encap_through_the_host() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.127.0.0/24"]);
    // b answers for 192.0.2.9 (a service address behind it) and may send from it.
    let b = router(&w, &net, "b", "192.0.2.9");
    let _srv = probe::tcp_server(&b.path(), "192.0.2.9:7051");
    let service = "192.0.2.9:7051";

    let a = container(&w, &net, "a", json!([sdn(json!({"DestinationPrefix": "192.0.2.0/24", "NextHop": b.ip()}))]));
    assert!(routes_of(&w, &a).contains(&format!("192.0.2.0/24 via {}", b.ip())), "{}", routes_of(&w, &a));
    assert_eq!(probe::tcp_seen_as(&a.path(), service), Some(a.ip()), "reached through b");

    // Removed at run time: the service is out of reach (the host routes it to the LAN).
    patch(&w, &a.ep, "Update", json!([])).unwrap();
    assert!(!routes_of(&w, &a).contains("192.0.2.0/24"), "{}", routes_of(&w, &a));
    assert_eq!(probe::tcp_seen_as(&a.path(), service), None, "no route through b");

    // NeedEncap: b's own address goes through the host: an echo with a TTL
    // of 1 reaches b over the switch, and not through a router.
    let c = container(&w, &net, "c", json!([]));
    let ttl1 =
        |c: &Container| w.exec_in(&c.path(), &["ping", "-c", "1", "-W", "1", "-t", "1", &b.ip()]).status.success();
    assert!(ttl1(&c), "over the switch, TTL 1 is enough");
    patch(&w, &c.ep, "Add", json!([sdn(json!({"DestinationPrefix": format!("{}/32", b.ip()), "NeedEncap": true}))]))
        .unwrap();
    assert!(routes_of(&w, &c).contains(&format!("{} via 10.127.0.1", b.ip())), "{}", routes_of(&w, &c));
    assert!(probe::ping(&c.path(), &b.ip()), "c → b through the host");
    assert!(!ttl1(&c), "through the host, a TTL of 1 runs out");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Bad routes are refused and change nothing.
    for (bad, want) in [
        (sdn(json!({"DestinationPrefix": "192.0.2.0/24", "NextHop": "10.99.0.1"})), "must be on a subnet"),
        (sdn(json!({"DestinationPrefix": "192.0.2.0/40"})), "is not a prefix"),
        (sdn(json!({"DestinationPrefix": "192.0.2.0/24", "NextHop": "fd00::1"})), "not of the family"),
        (sdn(json!({"DestinationPrefix": "fd00:1::/64", "NeedEncap": true})), "none of that family"),
        (sdn(json!({"DestinationPrefix": "192.0.2.0/24", "Via": "x"})), "unknown field"),
    ] {
        let err = patch(&w, &c.ep, "Add", json!([bad])).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(w.client().get::<cnet_model::Endpoint>(&format!("/endpoints/{}", c.ep.id)).unwrap().policies.len(), 1);

    // A restart keeps what is in the namespace, and a new attach makes it again.
    w.exec_in(&c.path(), &["ip", "route", "del", &b.ip()]);
    let drift = w.drift();
    assert!(drift.iter().any(|d| d.contains("route")), "a missing SDN route is drift: {drift:?}");
}
