//! `HostComputeRoute` objects (`/routes`) with real packets: one object
//! gives several endpoints the same routes.

mod common;
use common::*;
use serde_json::{json, Value};

#[test]
fn a_route_object_routes_its_endpoints_and_only_them_until_it_is_deleted() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "nat", "NAT", &["10.130.0.0/24"]);
    // b answers for 192.0.2.9, a service address behind it.
    let b = router(&w, &net, "b", "192.0.2.9");
    let _srv = probe::tcp_server(&b.path(), "192.0.2.9:7071");
    let service = "192.0.2.9:7071";
    let (a, c, d) =
        (container(&w, &net, "a", json!([])), container(&w, &net, "c", json!([])), container(&w, &net, "d", json!([])));
    let via_b = json!([{"DestinationPrefix": "192.0.2.0/24", "NextHop": b.ip()}]);

    let route: cnet_model::route::HostComputeRoute = w
        .client()
        .post(
            "/routes",
            &json!({"HostComputeNetwork": "nat", "HostComputeEndpoints": [a.ep.id, w.name("c")], "Routes": via_b}),
        )
        .unwrap();
    assert_eq!(route.host_compute_endpoints, vec![a.ep.id.to_string(), c.ep.id.to_string()]);
    assert_eq!(probe::tcp_seen_as(&a.path(), service), Some(a.ip()), "a is routed through b");
    assert_eq!(probe::tcp_seen_as(&c.path(), service), Some(c.ip()), "so is c");
    assert_eq!(probe::tcp_seen_as(&d.path(), service), None, "d is not listed");
    let listed: Vec<cnet_model::route::HostComputeRoute> = w.client().get("/routes").unwrap();
    assert_eq!(listed, vec![route.clone()]);
    assert_eq!(w.client().get::<cnet_model::route::HostComputeRoute>(&format!("/routes/{}", route.id)).unwrap(), route);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    w.stop_daemon();
    w.start_daemon();
    assert!(w.drift().is_empty(), "after a restart: {:?}", w.drift());
    assert_eq!(probe::tcp_seen_as(&a.path(), service), Some(a.ip()), "still routed");

    // Bad objects are refused and change nothing.
    let other = network(&w, "other", "NAT", &["10.131.0.0/24"]);
    let e = container(&w, &other, "e", json!([]));
    for (bad, want) in [
        (json!({"HostComputeNetwork": "nat", "HostComputeEndpoints": [e.ep.id], "Routes": via_b}), "is not on network"),
        (json!({"HostComputeNetwork": "nat", "HostComputeEndpoints": ["nobody"], "Routes": via_b}), "does not exist"),
        (
            json!({"HostComputeNetwork": "nat", "HostComputeEndpoints": [d.ep.id],
                "Routes": [{"DestinationPrefix": "192.0.2.0/24", "NextHop": "10.99.0.1"}]}),
            "must be on a subnet",
        ),
        (json!({"HostComputeNetwork": "nat", "HostComputeEndpoints": [d.ep.id], "Routes": []}), "at least one route"),
        (json!({"HostComputeNetwork": "nat", "Routes": via_b, "Colour": 1}), "unknown field"),
    ] {
        let err = w.client().post::<Value>("/routes", &bad).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(probe::tcp_seen_as(&d.path(), service), None, "d still not routed");
    assert_eq!(w.client().get::<Vec<Value>>("/routes").unwrap().len(), 1);
    let missing = w.client().get::<Value>(&format!("/routes/{}", uuid::Uuid::new_v4())).unwrap_err().to_string();
    assert!(missing.contains("RouteNotFound"), "{missing}");

    // Deleted: its endpoints lose its routes.
    w.client().delete(&format!("/routes/{}", route.id)).unwrap();
    assert_eq!(probe::tcp_seen_as(&a.path(), service), None, "a no longer routed");
    assert_eq!(probe::tcp_seen_as(&c.path(), service), None, "c neither");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // A deleted endpoint leaves the objects that list it; a network's
    // route objects go with it.
    w.client()
        .post::<Value>(
            "/routes",
            &json!({"HostComputeNetwork": "other", "HostComputeEndpoints": [e.ep.id],
        "Routes": [{"DestinationPrefix": "192.0.2.0/24"}]}),
        )
        .unwrap();
    w.client().delete(&format!("/endpoints/{}", e.ep.id)).unwrap();
    let left: Vec<cnet_model::route::HostComputeRoute> = w.client().get("/routes").unwrap();
    assert!(left[0].host_compute_endpoints.is_empty(), "{left:?}");
    w.client().delete(&format!("/networks/{}", other.id)).unwrap();
    assert!(w.client().get::<Vec<Value>>("/routes").unwrap().is_empty());
}
