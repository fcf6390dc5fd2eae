//! The plugin protocol against the fake data plane: Docker's calls in the
//! order dockerd makes them, their JSON shapes, and the hand-off's rollback.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::dataplane::fake::FakeDataplane;
use crate::driver::bridge::OWN_NETNS;
use crate::driver::Registry;
use crate::service::{Capabilities, PolicyChange};
use crate::state::State;

const NID: &str = "9f1c0000000000000000000000000000000000000000000000000000000000aa";
const EID: &str = "e41d0000000000000000000000000000000000000000000000000000000000bb";

struct Bed {
    _dir: tempfile::TempDir,
    fake: Arc<FakeDataplane>,
    svc: Arc<Service>,
    plugin: Arc<Plugin>,
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeDataplane::new());
    fake.add_netns(OWN_NETNS);
    let store = cnet_store::Store::open(&dir.path().join("cnet.redb")).unwrap();
    let svc =
        Arc::new(Service::new(State::open(store).unwrap(), fake.clone(), Registry::builtin(), Capabilities::all()));
    let plugin = Plugin::new(svc.clone());
    Bed { _dir: dir, fake, svc, plugin }
}

impl Bed {
    fn ok(&self, method: &str, body: Value) -> Value {
        let (status, v) = self.plugin.call(method, body.to_string().as_bytes());
        assert_eq!(status, StatusCode::OK, "{method}: {v}");
        assert!(v.get("Err").is_none() && v.get("Error").is_none(), "{method}: {v}");
        v
    }
    fn err(&self, method: &str, body: Value) -> String {
        let (_, v) = self.plugin.call(method, body.to_string().as_bytes());
        let field = if method.starts_with("IpamDriver") { "Error" } else { "Err" };
        v[field].as_str().unwrap_or_else(|| panic!("{method} should fail: {v}")).to_string()
    }
    /// `docker network create --subnet 10.80.0.0/24 web`, as dockerd calls it.
    fn network(&self, generic: Value) -> Value {
        let pool = self.ok(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "CnetLocal", "Pool": "10.80.0.0/24", "Options": null, "V6": false}),
        );
        let pool_id = pool["PoolID"].as_str().unwrap().to_string();
        let gw = self.ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": ipam::GATEWAY_REQUEST}}),
        );
        assert_eq!(gw["Address"], "10.80.0.1/24");
        self.ok("NetworkDriver.CreateNetwork", json!({
            "NetworkID": NID, "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": generic},
            "IPv4Data": [{"AddressSpace": "CnetLocal", "Pool": "10.80.0.0/24", "Gateway": "10.80.0.1/24", "AuxAddresses": null}],
            "IPv6Data": []
        }));
        pool
    }
}

#[test]
fn the_handshake_answers_what_dockerd_expects() {
    let b = bed();
    assert_eq!(b.ok("Plugin.Activate", Value::Null), json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
    assert_eq!(
        b.ok("NetworkDriver.GetCapabilities", Value::Null),
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    assert_eq!(
        b.ok("IpamDriver.GetCapabilities", Value::Null),
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    assert_eq!(b.ok("IpamDriver.GetDefaultAddressSpaces", Value::Null)["LocalDefaultAddressSpace"], "CnetLocal");
    let (status, v) = b.plugin.call("NetworkDriver.AllocateNetwork", b"{}");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["Err"].as_str().unwrap().contains("not implemented"));
    // An empty body is an empty request.
    assert!(b.err("NetworkDriver.CreateNetwork", Value::Null).contains("not a Docker ID"));
}

#[test]
fn a_container_joins_publishes_leaves_and_leaves_nothing_behind() {
    let b = bed();
    let pool = b.network(json!({}));
    let pool_id = pool["PoolID"].as_str().unwrap();
    let net = b.svc.get_network(&stable_id("network", NID).to_string()).unwrap();
    assert_eq!(net.name.as_str(), "docker-9f1c00000000");

    let addr = b.ok("IpamDriver.RequestAddress", json!({"PoolID": pool_id, "Address": "", "Options": {}}));
    assert_eq!(addr["Address"], "10.80.0.2/24", "not the gateway");
    let ports = json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]);
    let created = b.ok(
        "NetworkDriver.CreateEndpoint",
        json!({
            "NetworkID": NID, "EndpointID": EID,
            "Interface": {"Address": "10.80.0.2/24", "AddressIPv6": "", "MacAddress": ""},
            "Options": {"com.docker.network.portmap": ports}
        }),
    );
    let mac = created["Interface"]["MacAddress"].as_str().unwrap().to_string();
    // The next address is another one, though the first is not attached yet.
    let next = b.ok("IpamDriver.RequestAddress", json!({"PoolID": pool_id, "Address": "", "Options": null}));
    assert_eq!(next["Address"], "10.80.0.3/24");
    b.ok("IpamDriver.ReleaseAddress", json!({"PoolID": pool_id, "Address": "10.80.0.3"}));
    assert!(b.err("IpamDriver.RequestAddress", json!({"PoolID": pool_id, "Address": "10.80.0.2"})).contains("in use"));

    let ids = json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/x/netns/1", "Options": {}});
    let join = b.ok("NetworkDriver.Join", ids.clone());
    let peer = format!("cnd{}", &EID[..12]);
    assert_eq!(join["InterfaceName"], json!({"SrcName": peer, "DstPrefix": "eth"}));
    assert_eq!(join["Gateway"], "10.80.0.1");
    let ep = b.svc.get_endpoint(&stable_id("endpoint", EID).to_string()).unwrap();
    assert_eq!(ep.handed_off.as_deref(), Some(peer.as_str()));
    assert_eq!(ep.mac.to_string(), mac);
    let inside = b.fake.objects().inside;
    let pair = inside.get(&(OWN_NETNS.to_string(), peer.clone())).expect("the container end in cnetd's namespace");
    assert!(pair.addrs.is_empty() && pair.routes.is_empty(), "Docker configures it, not cnet");
    b.ok("NetworkDriver.EndpointOperInfo", ids.clone());

    b.ok("NetworkDriver.ProgramExternalConnectivity", json!({"NetworkID": NID, "EndpointID": EID, "Options": {}}));
    let ep = b.svc.get_endpoint(&ep.id.to_string()).unwrap();
    assert_eq!(ep.port_mappings().map(|m| m.external_port).collect::<Vec<_>>(), vec![8080]);
    assert!(crate::diag::diag(&b.svc).unwrap().drift.is_empty(), "{:?}", crate::diag::diag(&b.svc).unwrap().drift);

    b.ok("NetworkDriver.RevokeExternalConnectivity", ids.clone());
    assert_eq!(b.svc.get_endpoint(&ep.id.to_string()).unwrap().port_mappings().count(), 0);
    b.ok("NetworkDriver.Leave", ids.clone());
    b.ok("NetworkDriver.DeleteEndpoint", ids.clone());
    b.ok("NetworkDriver.DeleteEndpoint", ids.clone());
    b.ok("IpamDriver.ReleaseAddress", json!({"PoolID": pool_id, "Address": "10.80.0.2"}));
    assert!(b.fake.objects().links.keys().all(|l| !l.starts_with("cnv")), "no veth left");
    assert!(b.fake.objects().inside.is_empty());

    b.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NID}));
    b.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NID}));
    b.ok("IpamDriver.ReleasePool", json!({"PoolID": pool_id}));
    assert!(b.svc.list_networks(&Default::default()).unwrap().is_empty());
}

#[test]
fn pools_never_overlap_networks_or_pools_in_flight() {
    let b = bed();
    b.network(json!({}));
    let err = b.err("IpamDriver.RequestPool", json!({"Pool": "10.80.0.0/16"}));
    assert!(err.contains("overlaps subnet 10.80.0.0/24 of cnet network docker-9f1c00000000"), "{err}");
    let first = b.ok("IpamDriver.RequestPool", json!({"Pool": ""}));
    assert_eq!(first["Pool"], "10.90.0.0/24");
    // Asked again while holding the first (libnetwork found it in use): another one.
    assert_eq!(b.ok("IpamDriver.RequestPool", json!({"Pool": ""}))["Pool"], "10.90.1.0/24");
    b.ok("IpamDriver.ReleasePool", json!({"PoolID": first["PoolID"]}));
    assert_eq!(b.ok("IpamDriver.RequestPool", json!({"Pool": ""}))["Pool"], "10.90.0.0/24");
    assert_eq!(b.ok("IpamDriver.RequestPool", json!({"Pool": "", "V6": true}))["Pool"], "fd00:90::/64");
    assert!(b.err("IpamDriver.RequestPool", json!({"SubPool": "10.1.0.0/24"})).contains("needs a pool"));
}

#[test]
fn unknown_options_are_refused_and_known_ones_honoured() {
    let b = bed();
    b.ok("IpamDriver.RequestPool", json!({"Pool": "10.80.0.0/24"}));
    let body = |generic: Value, internal: bool| {
        json!({"NetworkID": NID, "Options": {"com.docker.network.internal": internal, "com.docker.network.generic": generic},
               "IPv4Data": [{"Pool": "10.80.0.0/24", "Gateway": "10.80.0.1/24"}]})
    };
    let err = b.err("NetworkDriver.CreateNetwork", body(json!({"com.docker.network.foo": "x"}), false));
    assert!(err.contains("unknown option com.docker.network.foo"), "{err}");
    b.ok("NetworkDriver.CreateNetwork", body(json!({"com.docker.network.driver.mtu": "1400"}), true));
    let net = b.svc.get_network(&stable_id("network", NID).to_string()).unwrap();
    assert_eq!((net.kind, net.mtu), (cnet_model::NetworkType::Internal, Some(1400)));
    // Internal: Join gives no gateway, so the container has no way out.
    let pool_id = "CnetLocal/10.80.0.0/24";
    let addr = b.ok("IpamDriver.RequestAddress", json!({"PoolID": pool_id}))["Address"].clone();
    b.ok(
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": addr, "MacAddress": "02:42:0a:50:00:02"}}),
    );
    let join = b.ok("NetworkDriver.Join", json!({"NetworkID": NID, "EndpointID": EID}));
    assert_eq!((join["Gateway"].as_str(), join["GatewayIPv6"].as_str()), (Some(""), Some("")));
}

#[test]
fn a_failed_hand_off_leaves_the_endpoint_as_it_was_and_a_crash_is_rolled_back() {
    let id = stable_id("endpoint", EID).to_string();
    // An endpoint with a published port, so the hand-off programs the firewall too.
    let ready = || {
        let b = bed();
        b.network(json!({}));
        b.ok(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.80.0.2/24"}}),
        );
        let m = cnet_model::PortMapping {
            protocol: cnet_model::Protocol::Tcp,
            internal_port: 80,
            external_port: 8080,
            vip: None,
            flags: 0,
            port_count: 1,
        };
        b.svc.modify_endpoint(&id, PolicyChange::Add(vec![cnet_model::EndpointPolicy::PortMapping(m)])).unwrap();
        b
    };
    let probe = ready();
    let s0 = probe.fake.steps();
    probe.svc.hand_off_endpoint(&id, "cndpeer").unwrap();
    let steps = probe.fake.steps() - s0;
    assert!(steps >= 2, "a veth and the firewall: {steps} steps");

    // Every kernel step of the hand-off, failing in turn.
    let b = ready();
    let before = (b.svc.get_endpoint(&id).unwrap(), b.fake.objects());
    for n in 0..steps {
        b.fake.fail_step(n);
        assert!(b.svc.hand_off_endpoint(&id, "cndpeer").is_err(), "step {n} fails");
        assert_eq!((b.svc.get_endpoint(&id).unwrap(), b.fake.objects()), before, "after a failure of step {n}");
    }
    b.svc.hand_off_endpoint(&id, "cndpeer").unwrap();
    assert!(crate::diag::diag(&b.svc).unwrap().drift.is_empty());
    // A restart keeps it (no orphan, no repair); deleting it removes the pair.
    let report = crate::reconcile::startup(&b.svc).unwrap();
    assert!(report.removed_orphans.is_empty() && report.degraded.is_empty(), "{report:?}");
    assert!(crate::diag::diag(&b.svc).unwrap().drift.is_empty());
    b.svc.delete_endpoint(&id).unwrap();
    assert!(b.fake.objects().inside.is_empty() && !b.fake.objects().links.keys().any(|l| l.starts_with("cnv")));

    // A crash at each step leaves the intent; start-up rolls it back.
    for n in 0..steps {
        let c = ready();
        c.fake.crash_at_step(n);
        let crashed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.svc.hand_off_endpoint(&id, "cndpeer")));
        assert!(crashed.is_err(), "the fake crashes at step {n}");
        crate::reconcile::startup(&c.svc).unwrap();
        let ep = c.svc.get_endpoint(&id).unwrap();
        assert_eq!((ep.handed_off.as_deref(), ep.state), (None, cnet_model::EndpointState::Created), "crash at {n}");
        assert!(c.fake.objects().inside.is_empty(), "the pair is gone after a crash at step {n}");
        assert!(crate::diag::diag(&c.svc).unwrap().drift.is_empty(), "crash at {n}");
    }
}
