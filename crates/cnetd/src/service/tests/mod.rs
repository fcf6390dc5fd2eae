//! Lifecycle tests against the fake dataplane: no root needed.
//!
//! Each lifecycle runs once to count its kernel steps; then, for every
//! step, on a fresh service: once with that step failing (a create or
//! attach must leave the store and the kernel as they were; a detach or
//! delete must report it and finish on retry), and once with the process
//! "crashing" at that step (a restart must roll back or finish the intent,
//! leave no intent and no drift).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cnet_model::{Endpoint, Namespace, Network};
use serde_json::json;

use super::*;
use crate::dataplane::fake::{FakeDataplane, Objects as Kernel};
use crate::driver::Registry;
use crate::state::{Objects, State};

const NET: &str = "6d0b3c1e-0000-4000-8000-0000000000a1";
const EP: &str = "6d0b3c1e-0000-4000-8000-0000000000e1";
const NS: &str = "6d0b3c1e-0000-4000-8000-0000000000c1";

struct Bed {
    dir: tempfile::TempDir,
    fake: Arc<FakeDataplane>,
    svc: Option<Service>,
}

fn service(dir: &tempfile::TempDir, fake: &Arc<FakeDataplane>) -> Service {
    let store = cnet_store::Store::open(&dir.path().join("cnet.redb")).unwrap();
    let svc = Service::new(
        State::open(store).unwrap(),
        fake.clone(),
        Registry::builtin(),
        Capabilities { sctp: false, ..Capabilities::all() },
    );
    // Overlay lifecycles: this bed's cluster (the same across restarts).
    if let Some(m) = overlay::MEMBER.with(|m| m.borrow().clone()) {
        let _ = svc.cluster.set(m);
    }
    svc
}

thread_local! {
    /// The network type this test's lifecycles run on (tests run on threads of their own).
    static KIND: std::cell::Cell<&'static str> = const { std::cell::Cell::new("NAT") };
}

fn kind() -> &'static str {
    KIND.with(|k| k.get())
}

/// Runs `f` with the lifecycles on networks of type `t`.
fn on(t: &'static str, f: impl FnOnce()) {
    KIND.with(|k| k.set(t));
    f();
    KIND.with(|k| k.set("NAT"));
}

const PHYSICAL: [&str; 3] = ["Transparent", "L2Bridge", "L2Tunnel"];

impl Bed {
    fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeDataplane::new());
        // The host's LAN interface, as physical networks find it.
        fake.tamper(|k| {
            let mut up = crate::dataplane::fake::FakeLink::new("veth", None, 1500);
            up.up = true;
            up.addrs.push(cnet_dataplane::Addr { ip: "198.18.0.2".parse().unwrap(), prefix_len: 24 });
            k.links.insert("uplink0".into(), up);
        });
        overlay::MEMBER.with(|m| *m.borrow_mut() = (kind() == "Overlay").then(overlay::FakeMember::new));
        let svc = Some(service(&dir, &fake));
        Bed { dir, fake, svc }
    }
    fn svc(&self) -> &Service {
        self.svc.as_ref().unwrap()
    }
    /// A new process on the same store and the same kernel, after start-up repair.
    fn restart(&mut self) {
        self.svc = None;
        self.svc = Some(service(&self.dir, &self.fake));
        crate::reconcile::startup(self.svc()).expect("start-up");
    }
    /// The store's objects (without allocation cursors, which move on even
    /// when a create is rolled back, as host-local's do) and the kernel's.
    fn snapshot(&self) -> (Objects, Kernel) {
        let mut o = self.svc().state.read().clone();
        for n in o.networks.values_mut() {
            n.record.last_allocated.clear();
        }
        (o, self.fake.objects())
    }
    fn drift(&self) -> Vec<String> {
        crate::diag::diag(self.svc()).unwrap().drift.into_iter().map(|f| f.message).collect()
    }
}

fn net_req() -> Network {
    let req = match kind() {
        "NAT" => json!({
            "ID": NET, "Name": "web", "Type": "NAT",
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.79.0.0/24"}, {"IpAddressPrefix": "fd00:79::/64"}]}]
        }),
        "Overlay" => json!({
            "ID": NET, "Name": "web", "Type": "Overlay",
            "Ipams": [{"Subnets": [
                {"IpAddressPrefix": "10.80.0.0/16", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 4096}}]},
                {"IpAddressPrefix": "fd00:80::/64", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 4096}}]}]}]
        }),
        t => json!({
            "ID": NET, "Name": "web", "Type": t,
            "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}],
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "198.18.0.0/24"}]}]
        }),
    };
    serde_json::from_value(req).unwrap()
}

fn ns_req() -> Namespace {
    serde_json::from_value(json!({"ID": NS, "Name": "cnet-unit-test-c1"})).unwrap()
}

fn ep_req(ns: Option<&str>) -> Endpoint {
    if kind() == "Transparent" || kind() == "Overlay" {
        // No port mappings there (the endpoint has its own LAN address).
        return serde_json::from_value(json!({
            "ID": EP, "Name": "web1", "HostComputeNetwork": "web", "HostComputeNamespace": ns,
        }))
        .unwrap();
    }
    serde_json::from_value(json!({
        "ID": EP, "Name": "web1", "HostComputeNetwork": "web", "HostComputeNamespace": ns,
        "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 17, "InternalPort": 53, "ExternalPort": 5353}},
                     {"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080}},
                     {"Type": "ACL", "Settings": {"Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "22"}},
                     {"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": 2500000}},
                     {"Type": "Bandwidth", "Settings": {"IngressRate": 40000000, "IngressBurst": 1000000}}]
    }))
    .unwrap()
}

/// A bed with the network, and the namespace when `with_ns`.
fn with_network(with_ns: bool) -> Bed {
    let b = Bed::new();
    b.svc().create_network(net_req()).unwrap();
    if with_ns {
        b.svc().create_namespace(ns_req()).unwrap();
    }
    b
}

fn attached() -> Bed {
    let b = with_network(true);
    b.svc().create_endpoint(ep_req(Some(NS))).unwrap();
    b
}

type Op = fn(&Service) -> crate::error::Result<()>;

fn create_network(s: &Service) -> crate::error::Result<()> {
    s.create_network(net_req()).map(|_| ())
}
fn create_attached_endpoint(s: &Service) -> crate::error::Result<()> {
    s.create_endpoint(ep_req(Some(NS))).map(|_| ())
}
fn attach(s: &Service) -> crate::error::Result<()> {
    s.attach(NS, EP)
}
fn detach(s: &Service) -> crate::error::Result<()> {
    s.detach(NS, EP)
}
fn delete_endpoint(s: &Service) -> crate::error::Result<()> {
    s.delete_endpoint(EP)
}
fn create_namespace(s: &Service) -> crate::error::Result<()> {
    s.create_namespace(ns_req()).map(|_| ())
}
fn delete_network(s: &Service) -> crate::error::Result<()> {
    s.delete_network(NET)
}

/// The kernel steps `op` takes on a bed made by `setup`.
fn steps_of(setup: fn() -> Bed, op: Op) -> usize {
    let b = setup();
    let before = b.fake.steps();
    op(b.svc()).expect("the lifecycle works without failures");
    let n = b.fake.steps() - before;
    assert!(n > 0, "the lifecycle made no kernel step");
    n
}

/// A create or attach that fails at any step leaves everything as it was.
/// The only step whose failure is not fatal is forgetting conntrack entries.
fn failing_each_step_rolls_back(setup: fn() -> Bed, op: Op) -> usize {
    let n = steps_of(setup, op);
    for step in 0..n {
        let b = setup();
        let before = b.snapshot();
        b.fake.fail_step(step);
        let calls_before = b.fake.calls().len();
        match op(b.svc()) {
            Err(_) => assert_eq!(b.snapshot(), before, "step {step} failed: {:?}", &b.fake.calls()[calls_before..]),
            Ok(()) => {
                let failed = b.fake.calls()[calls_before..].iter().find(|c| c.starts_with("forget_flows")).cloned();
                assert!(
                    failed.is_some(),
                    "step {step} failed but the lifecycle went on: {:?}",
                    &b.fake.calls()[calls_before..]
                );
            }
        }
        assert!(b.svc().state.read().intents().is_empty(), "step {step}: an intent is left");
    }
    n
}

/// A detach or delete that fails at any step says so, and a retry finishes it.
fn failing_each_step_finishes_on_retry(setup: fn() -> Bed, op: Op, done: fn(&Bed)) -> usize {
    let n = steps_of(setup, op);
    for step in 0..n {
        let b = setup();
        b.fake.fail_step(step);
        if op(b.svc()).is_err() {
            op(b.svc()).unwrap_or_else(|e| panic!("step {step}: the retry failed: {e}"));
        }
        done(&b);
        assert!(b.svc().state.read().intents().is_empty(), "step {step}: an intent is left");
        assert!(b.drift().is_empty(), "step {step}: {:?}", b.drift());
    }
    n
}

/// A crash at any step, then a restart: the intent is rolled back or
/// finished, the state is the one before or the one after, and the kernel
/// matches it.
fn crashing_at_each_step_then_restarting_resolves_the_intent(setup: fn() -> Bed, op: Op) -> usize {
    let n = steps_of(setup, op);
    let after = {
        let b = setup();
        op(b.svc()).unwrap();
        b.snapshot().0
    };
    for step in 0..n {
        let mut b = setup();
        let before = b.snapshot().0;
        b.fake.crash_at_step(step);
        let svc = b.svc.take().unwrap();
        assert!(catch_unwind(AssertUnwindSafe(|| op(&svc))).is_err(), "step {step}: no crash");
        drop(svc);
        b.svc = Some(service(&b.dir, &b.fake));
        b.restart();
        let now = b.snapshot().0;
        assert!(
            now == before || now == after,
            "step {step}: state is neither before nor after:\n{now:?}\nbefore {before:?}\nafter {after:?}"
        );
        assert!(b.svc().state.read().intents().is_empty(), "step {step}: an intent is left");
        assert!(b.drift().is_empty(), "step {step}: {:?}", b.drift());
    }
    n
}

fn nothing_of_the_endpoint_is_left(b: &Bed) {
    let k = b.fake.objects();
    assert!(k.proxies.is_empty(), "proxy entries left: {:?}", k.proxies);
    let main: Vec<_> = k.routes.iter().filter(|r| r.table == cnet_dataplane::HostRoute::MAIN).collect();
    assert!(main.is_empty(), "endpoint routes left: {main:?}");
    assert!(k.links.keys().all(|l| !l.starts_with("cnv")), "{:?}", k.links.keys());
    assert!(k.inside.is_empty(), "{:?}", k.inside);
    assert_eq!(k.policy, None, "the policy table is left");
    assert!(k.egress_guards.is_empty(), "egress guards left: {:?}", k.egress_guards);
    assert!(k.qos.is_empty(), "QoS buckets left: {:?}", k.qos);
    assert!(k.links.keys().all(|l| !l.starts_with("cnq")), "an ifb is left: {:?}", k.links.keys());
    let pm = k.table.unwrap_or_default().into_iter().filter(|e| e.set.starts_with("pm")).count();
    assert_eq!(pm, 0, "port mapping elements left");
}

#[test]
fn network_create_failing_at_any_step_leaves_nothing() {
    let n = failing_each_step_rolls_back(Bed::new, create_network);
    assert!(n >= 4, "bridge, sysctls and the table: {n} steps");
}

#[test]
fn endpoint_create_and_attach_failing_at_any_step_leaves_nothing() {
    failing_each_step_rolls_back(|| with_network(true), create_attached_endpoint);
}

#[test]
fn attach_failing_at_any_step_leaves_the_endpoint_detached() {
    let setup = || {
        let b = with_network(true);
        b.svc().create_endpoint(ep_req(None)).unwrap();
        b
    };
    failing_each_step_rolls_back(setup, attach);
}

#[test]
fn namespace_create_failing_leaves_no_namespace() {
    failing_each_step_rolls_back(Bed::new, create_namespace);
}

#[test]
fn detach_failing_at_any_step_is_reported_and_a_retry_finishes_it() {
    failing_each_step_finishes_on_retry(attached, detach, |b| {
        nothing_of_the_endpoint_is_left(b);
        let ep = b.svc().get_endpoint(EP).unwrap();
        assert_eq!(ep.namespace, None);
    });
}

#[test]
fn endpoint_delete_failing_at_any_step_is_reported_and_a_retry_finishes_it() {
    failing_each_step_finishes_on_retry(attached, delete_endpoint, |b| {
        nothing_of_the_endpoint_is_left(b);
        assert!(b.svc().get_endpoint(EP).is_err());
    });
}

#[test]
fn network_delete_failing_at_any_step_is_reported_and_a_retry_finishes_it() {
    failing_each_step_finishes_on_retry(
        || with_network(false),
        delete_network,
        |b| {
            let k = b.fake.objects();
            assert!(k.links.keys().all(|l| l == "uplink0"), "{:?}", k.links.keys());
            assert!(k.routes.is_empty() && k.rules.is_empty(), "{:?} {:?}", k.routes, k.rules);
            // The table goes with the last network (when deleting it fails, the
            // next start does it); what is left is never an element.
            assert!(b.fake.objects().table.unwrap_or_default().is_empty());
        },
    );
}

#[test]
fn a_crash_at_any_step_of_network_create_is_rolled_back_at_start() {
    crashing_at_each_step_then_restarting_resolves_the_intent(Bed::new, create_network);
}

#[test]
fn a_crash_at_any_step_of_endpoint_create_is_rolled_back_at_start() {
    crashing_at_each_step_then_restarting_resolves_the_intent(|| with_network(true), create_attached_endpoint);
}

#[test]
fn a_crash_at_any_step_of_detach_or_delete_is_finished_at_start() {
    crashing_at_each_step_then_restarting_resolves_the_intent(attached, detach);
    crashing_at_each_step_then_restarting_resolves_the_intent(attached, delete_endpoint);
    crashing_at_each_step_then_restarting_resolves_the_intent(|| with_network(false), delete_network);
}

#[test]
fn a_crash_at_namespace_create_is_rolled_back_at_start() {
    crashing_at_each_step_then_restarting_resolves_the_intent(Bed::new, create_namespace);
}

#[test]
fn a_freed_address_is_not_handed_out_again_at_once() {
    let b = with_network(false);
    let make = |name: &str| -> EndpointRecord {
        b.svc()
            .create_endpoint(serde_json::from_value(json!({"Name": name, "HostComputeNetwork": "web"})).unwrap())
            .unwrap()
    };
    let first = make("a");
    let second = make("b");
    assert_eq!(first.ip_configurations[0].ip_address.to_string(), "10.79.0.2");
    assert_eq!(second.ip_configurations[0].ip_address.to_string(), "10.79.0.3");
    b.svc().delete_endpoint("a").unwrap();
    let third = make("c");
    assert_eq!(third.ip_configurations[0].ip_address.to_string(), "10.79.0.4", "not the freed .2");
    assert_ne!(third.mac, first.mac, "nor its MAC");
    assert_eq!(third.ip_configurations[1].ip_address.to_string(), "fd00:79::4");
}

#[test]
fn the_allocation_cursor_survives_a_restart() {
    let mut b = with_network(false);
    let req = |name: &str| serde_json::from_value(json!({"Name": name, "HostComputeNetwork": "web"})).unwrap();
    b.svc().create_endpoint(req("a")).unwrap();
    b.svc().delete_endpoint("a").unwrap();
    b.restart();
    let next = b.svc().create_endpoint(req("b")).unwrap();
    assert_eq!(next.ip_configurations[0].ip_address.to_string(), "10.79.0.3");
}

#[test]
fn detaching_forgets_the_flows_that_lead_to_the_endpoint() {
    let b = attached();
    let ep = b.svc().get_endpoint(EP).unwrap();
    let v4 = ep.ip_configurations[0].ip_address;
    dnat_traffic_to(&b, v4);
    b.svc().detach(NS, EP).unwrap();
    let forgotten = b.fake.forgotten();
    assert!(forgotten.contains(&flows_to(v4)), "{v4}: {forgotten:?}");
    let v6 = ep.ip_configurations[1].ip_address;
    assert!(!forgotten.contains(&flows_to(v6)), "no flow was DNAT'd to {v6}, so no walk: {forgotten:?}");
    assert!(!b.fake.objects().table.unwrap().iter().any(|e| e.set == "dnat4"), "the record of the flow goes too");
}

/// What the data path does for the first packet of a port-mapped flow.
fn dnat_traffic_to(b: &Bed, ip: std::net::IpAddr) {
    let set = if ip.is_ipv4() { "dnat4" } else { "dnat6" };
    b.fake.tamper(|k| {
        k.table.as_mut().unwrap().insert(crate::dataplane::FwElem { set, key: ip.to_string(), value: None });
    });
}

#[test]
fn publishing_a_udp_port_forgets_old_flows_to_it_and_removing_a_mapping_forgets_its_flows() {
    let b = attached();
    let udp_5353 = FlowMatch { protocol: Some(17), orig_dst_port: Some(5353), ..FlowMatch::default() };
    assert!(b.fake.forgotten().contains(&udp_5353), "{:?}", b.fake.forgotten());
    let ep = b.svc().get_endpoint(EP).unwrap();
    for ip in ep.ips() {
        dnat_traffic_to(&b, ip);
    }
    let udp = ep.policies[0].clone();
    b.svc().modify_endpoint(EP, PolicyChange::Remove(vec![udp])).unwrap();
    for ip in ep.ips() {
        let to_it =
            FlowMatch { protocol: Some(17), reply_src: Some(ip), reply_src_port: Some(53), ..FlowMatch::default() };
        assert!(b.fake.forgotten().contains(&to_it), "{ip}: {:?}", b.fake.forgotten());
    }
    let pm: Vec<_> = b.fake.objects().table.unwrap().into_iter().filter(|e| e.set.starts_with("pm")).collect();
    assert_eq!(pm.len(), 2, "only the TCP mapping is left, in both families: {pm:?}");
}

#[test]
fn a_network_type_this_build_lacks_is_refused_by_the_registry() {
    let b = Bed::new();
    let mut net = net_req();
    net.r#type = cnet_model::NetworkType::Ics;
    let err = b.svc().create_network(net).unwrap_err();
    assert_eq!(err.code, cnet_model::ErrorCode::MappingNotSupported);
    assert!(err.message.contains("NAT, Internal, Private"), "{}", err.message);
    assert!(b.fake.calls().is_empty(), "no kernel call for a refused type");
}

#[test]
fn start_up_repairs_a_deleted_bridge_and_diag_finds_what_is_missing() {
    let mut b = attached();
    assert!(b.drift().is_empty(), "{:?}", b.drift());
    let bridge = b.svc().get_network("web").unwrap().bridge;
    b.fake.tamper(|k| {
        k.links.remove(&bridge);
        for l in k.links.values_mut() {
            l.master = None;
        }
    });
    let drift = crate::diag::diag(b.svc()).unwrap().drift;
    assert!(
        drift
            .iter()
            .any(|f| f.kind == cnet_model::FindingKind::Missing && f.subject.kind == cnet_model::SubjectKind::Network),
        "{drift:?}"
    );
    assert!(drift.iter().any(|f| f.kind == cnet_model::FindingKind::Mismatch && f.subject.kind == cnet_model::SubjectKind::Endpoint), "{drift:?}");
    b.restart();
    assert!(b.drift().is_empty(), "{:?}", b.drift());
}

#[test]
fn a_bridge_with_as_many_ports_as_the_backlog_is_reported() {
    let b = with_network(false);
    let bridge = b.svc().get_network("web").unwrap().bridge;
    let port = |_: usize| crate::dataplane::fake::FakeLink {
        master: Some(bridge.clone()),
        up: true,
        ..crate::dataplane::fake::FakeLink::new("veth", None, 1500)
    };
    b.fake.tamper(|k| {
        for i in 0..999 {
            k.links.insert(format!("p{i}"), port(i));
        }
    });
    let crowded = |b: &Bed| {
        crate::diag::diag(b.svc())
            .unwrap()
            .warnings
            .into_iter()
            .filter(|f| f.kind == cnet_model::FindingKind::Crowded)
            .count()
    };
    assert_eq!(crowded(&b), 0, "999 ports are fine");
    b.fake.tamper(|k| drop(k.links.insert("p999".into(), port(999))));
    assert_eq!(crowded(&b), 1);
}

mod overlay;
mod physical;
mod policy;
mod qos;
mod vm;

#[test]
fn an_overlay_network_without_a_cluster_is_refused_with_the_fix() {
    let b = Bed::new();
    let net: Network = serde_json::from_value(json!({"Name": "ov", "Type": "Overlay",
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.230.0.0/16", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 9}}]}]}]}))
    .unwrap();
    let err = b.svc().create_network(net).unwrap_err();
    assert!(err.message.contains("--etcd"), "{}", err.message);
    assert!(b.fake.calls().is_empty(), "no kernel call");
}

#[test]
fn an_endpoints_acls_are_in_the_policy_table_while_it_is_attached_and_after_a_restart() {
    let mut b = attached();
    let tag = &EP.replace('-', "")[..16];
    let chains = |b: &Bed| b.fake.objects().policy.map(|t| t.chains.into_keys().collect::<Vec<_>>());
    let want = Some(vec![format!("ep_{tag}_in"), format!("ep_{tag}_out")]);
    assert_eq!(chains(&b), want);
    b.fake.tamper(|k| k.policy = None);
    assert!(b.svc().policies.check_and_repair().unwrap(), "a deleted table is noticed");
    assert_eq!(chains(&b), want, "and restored");
    b.restart();
    assert_eq!(chains(&b), want, "loaded again at start");
    let no_acl = json!({"Type": "ACL", "Settings": {"Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "22"}});
    let p: EndpointPolicy = serde_json::from_value(no_acl).unwrap();
    b.fake.fail_step(0);
    assert!(b.svc().modify_endpoint(EP, PolicyChange::Remove(vec![p.clone()])).is_err(), "a failed change is reported");
    assert_eq!(chains(&b), want, "and changes nothing");
    assert_eq!(b.svc().get_endpoint(EP).unwrap().policies.len(), 5);
    b.svc().modify_endpoint(EP, PolicyChange::Remove(vec![p])).unwrap();
    assert_eq!(chains(&b), None, "the last endpoint's ACLs gone: the table goes");
}

#[test]
fn an_attached_endpoint_is_guarded_until_it_is_detached_and_the_guard_survives_a_restart() {
    let mut b = attached();
    let port = b.svc().get_endpoint(EP).unwrap().host_interface_name;
    let guarded = |b: &Bed| b.fake.objects().guarded;
    assert_eq!(guarded(&b), Some([port.clone()].into()));
    b.fake.tamper(|k| k.guarded = None);
    assert!(b.svc().guards.check_and_repair().unwrap(), "a deleted table is noticed");
    assert_eq!(guarded(&b), Some([port.clone()].into()), "and restored");
    b.restart();
    assert_eq!(guarded(&b), Some([port].into()), "loaded again at start");
    b.svc().detach(NS, EP).unwrap();
    assert_eq!(guarded(&b), None, "the last guarded endpoint detached: the table goes");
}

#[test]
fn a_route_object_whose_namespace_change_fails_leaves_no_object_and_no_routes() {
    let b = attached();
    let req: cnet_model::route::HostComputeRoute = serde_json::from_value(json!({"HostComputeNetwork": NET,
        "HostComputeEndpoints": [EP], "Routes": [{"DestinationPrefix": "192.0.2.0/24"}]}))
    .unwrap();
    let shared = |b: &Bed| b.svc().get_endpoint(EP).unwrap().shared_routes.len();
    b.fake.fail_step(0);
    assert!(b.svc().create_route(req.clone()).is_err(), "the namespace change failed");
    assert!(b.svc().list_routes().is_empty(), "no object");
    assert_eq!(shared(&b), 0, "no routes in the record");
    let r = b.svc().create_route(req).unwrap();
    assert_eq!(shared(&b), 1);
    assert!(b.fake.calls().iter().any(|c| c.starts_with("change_routes_inside eth0 -0 +1")), "{:?}", b.fake.calls());
    b.svc().delete_route(&r.id.to_string()).unwrap();
    assert_eq!(shared(&b), 0, "gone with the object");
}
