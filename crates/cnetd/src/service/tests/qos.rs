//! QoS against the fake: the caps follow the endpoint's policies through
//! attach, changes, restarts and detach; a failed change leaves the old
//! caps; an ifb nobody owns is removed at start.

use super::*;
use crate::dataplane::{QosSpec, Shaper};
use crate::policy::qos::ifb_name;

fn ep_id() -> Uuid {
    EP.parse().unwrap()
}

/// The caps the fake kernel has on the endpoint's host link.
fn caps(b: &Bed) -> Option<QosSpec> {
    let host = b.svc().get_endpoint(EP).unwrap().host_interface_name;
    b.fake.objects().qos.get(&(String::new(), host)).map(|q| q.spec)
}

fn has_ifb(b: &Bed) -> bool {
    b.fake.objects().links.contains_key(&ifb_name(&ep_id()))
}

fn qos(bytes: u64) -> EndpointPolicy {
    serde_json::from_value(json!({"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": bytes}})).unwrap()
}

fn drop_qos(s: &Service) -> crate::error::Result<()> {
    s.modify_endpoint(EP, PolicyChange::Remove(vec![qos(2_500_000)])).map(|_| ())
}

const EGRESS: Shaper = Shaper { rate: 2_500_000, burst: 65_536, limit: 128_036 };
const INGRESS: Shaper = Shaper { rate: 5_000_000, burst: 125_000, limit: 250_000 };

#[test]
fn an_attached_endpoint_has_its_caps_and_its_ifb_and_a_restart_restores_them() {
    let mut b = attached();
    assert_eq!(caps(&b), Some(QosSpec { egress: Some(EGRESS), ingress: Some(INGRESS) }));
    assert!(has_ifb(&b));
    assert!(b.drift().is_empty(), "{:?}", b.drift());
    let rec = b.svc().get_endpoint(EP).unwrap();
    let at = crate::policy::qos::adapter(&rec, cnet_model::NetworkType::Nat, None).unwrap();
    assert_eq!(crate::policy::qos::drops(b.fake.as_ref(), &rec, &at).unwrap(), (0, 0));
    // Someone deletes the qdiscs: diag says so, a restart puts them back.
    b.fake.tamper(|k| k.qos.clear());
    assert!(b.drift().iter().any(|d| d.contains("egress cap") && d.contains("missing")), "{:?}", b.drift());
    b.restart();
    assert_eq!(caps(&b), Some(QosSpec { egress: Some(EGRESS), ingress: Some(INGRESS) }));
    assert!(b.drift().is_empty(), "{:?}", b.drift());
    b.svc().detach(NS, EP).unwrap();
    assert_eq!(b.fake.objects().qos, Default::default());
    assert!(!has_ifb(&b), "the ifb goes with the detach");
}

#[test]
fn a_rate_change_replaces_the_bucket_and_removing_the_policy_removes_the_ifb() {
    let b = attached();
    let update: Vec<EndpointPolicy> = b
        .svc()
        .get_endpoint(EP)
        .unwrap()
        .policies
        .into_iter()
        .map(|p| if matches!(p, EndpointPolicy::Qos(_)) { qos(5_000_000) } else { p })
        .collect();
    b.svc().modify_endpoint(EP, PolicyChange::Update(update)).unwrap();
    assert_eq!(caps(&b).unwrap().egress.unwrap().rate, 5_000_000);
    // Named by type alone: one QOS per endpoint.
    b.svc().modify_endpoint(EP, PolicyChange::Remove(vec![qos(1)])).unwrap();
    assert_eq!(caps(&b), Some(QosSpec { egress: None, ingress: Some(INGRESS) }));
    assert!(!has_ifb(&b), "no egress cap, no ifb");
    assert!(b.drift().is_empty(), "{:?}", b.drift());
}

#[test]
fn a_policy_change_failing_at_any_step_leaves_the_old_caps_policies_and_firewall() {
    let n = steps_of(attached, drop_qos);
    let mut failed_qos = false;
    for step in 0..n {
        let b = attached();
        let before = b.snapshot();
        let calls = b.fake.calls().len();
        b.fake.fail_step(step);
        let err = drop_qos(b.svc()).unwrap_err();
        failed_qos |= err.message.contains("QoS");
        assert_eq!(b.snapshot(), before, "step {step} failed: {:?}", &b.fake.calls()[calls..]);
        assert_eq!(caps(&b).unwrap().egress, Some(EGRESS));
    }
    assert!(failed_qos, "one of the {n} steps is the QoS change");
}

#[test]
fn an_ifb_whose_endpoint_is_gone_is_an_orphan_removed_at_start() {
    let mut b = with_network(true);
    let stray = ifb_name(&Uuid::new_v4());
    b.fake.tamper(|k| drop(k.links.insert(stray.clone(), crate::dataplane::fake::FakeLink::new("ifb", None, 1500))));
    assert!(b.drift().iter().any(|d| d.contains(&stray) && d.contains("orphan")), "{:?}", b.drift());
    b.restart();
    assert!(!b.fake.objects().links.contains_key(&stray));
}

#[test]
fn endpoints_without_qos_make_no_tc_call() {
    let b = with_network(true);
    let mut req = ep_req(Some(NS));
    req.policies.retain(|p| !matches!(p, EndpointPolicy::Qos(_) | EndpointPolicy::Bandwidth(_)));
    b.svc().create_endpoint(req).unwrap();
    b.svc().detach(NS, EP).unwrap();
    assert!(!b.fake.calls().iter().any(|c| c.starts_with("qos_")), "{:?}", b.fake.calls());
}

#[test]
fn on_a_transparent_network_the_caps_are_mirrored_onto_the_containers_own_link_and_go_with_it() {
    on("Transparent", || {
        let mut b = with_network(true);
        let mut req = ep_req(Some(NS));
        let bandwidth =
            json!({"Type": "Bandwidth", "Settings": {"IngressRate": 40_000_000, "IngressBurst": 1_000_000}});
        req.policies.extend([qos(2_500_000), serde_json::from_value(bandwidth).unwrap()]);
        b.svc().create_endpoint(req).unwrap();
        let rec = b.svc().get_endpoint(EP).unwrap();
        assert_eq!(rec.host_interface_name, "", "a Transparent container has no host link");
        let path = b.svc().netns_path(rec.namespace).unwrap();
        let key = (path.clone(), rec.interface_name.to_string());
        // What the container sends leaves its own link: that link's root.
        let mirrored = QosSpec { egress: Some(INGRESS), ingress: Some(EGRESS) };
        assert_eq!(b.fake.objects().qos.get(&key).map(|q| q.spec), Some(mirrored));
        assert!(!has_ifb(&b), "the ifb is in the container's namespace, not the host's");
        let at = crate::policy::qos::adapter(&rec, cnet_model::NetworkType::Transparent, Some(&path)).unwrap();
        assert_eq!(crate::policy::qos::drops(b.fake.as_ref(), &rec, &at).unwrap(), (0, 0));
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        b.fake.tamper(|k| k.qos.clear());
        assert!(b.drift().iter().any(|d| d.contains("egress cap") && d.contains("missing")), "{:?}", b.drift());
        b.restart();
        assert_eq!(b.fake.objects().qos.get(&key).map(|q| q.spec), Some(mirrored));
        b.svc().modify_endpoint(EP, PolicyChange::Remove(vec![qos(1)])).unwrap();
        assert_eq!(
            b.fake.objects().qos.get(&key).map(|q| q.spec),
            Some(QosSpec { egress: Some(INGRESS), ingress: None })
        );
        b.svc().detach(NS, EP).unwrap();
        assert!(b.fake.objects().qos.is_empty(), "the caps and the ifb go before the macvlan");
    });
}

#[test]
fn a_crash_at_any_step_of_a_qos_change_is_resolved_at_start_with_the_caps_the_record_has() {
    let n = crashing_at_each_step_then_restarting_resolves_the_intent(attached, drop_qos);
    // The ACL program is unchanged (no nft step): QoS's own step at least.
    assert!(n >= 1, "QoS: {n} steps");
}

#[test]
fn a_detach_that_fails_at_the_qos_step_is_finished_by_a_retry_and_leaves_no_ifb() {
    failing_each_step_finishes_on_retry(attached, detach, |b| {
        assert!(b.fake.objects().qos.is_empty());
        assert!(!has_ifb(b));
    });
}

#[test]
fn a_transparent_container_whose_namespace_is_gone_detaches_and_diag_still_answers() {
    on("Transparent", || {
        let b = with_network(true);
        let mut req = ep_req(Some(NS));
        req.policies.push(qos(2_500_000));
        b.svc().create_endpoint(req).unwrap();
        let rec = b.svc().get_endpoint(EP).unwrap();
        let path = b.svc().netns_path(rec.namespace).unwrap();
        // The container exited before its runtime detached it: its namespace, link and ifb are gone.
        b.fake.tamper(|k| {
            k.namespaces.remove(&path);
            k.qos.clear();
        });
        assert!(b.drift().iter().any(|d| d.contains("is gone")), "{:?}", b.drift());
        b.svc().detach(NS, EP).unwrap();
        let drift = b.drift();
        assert!(drift.iter().all(|d| d.starts_with("namespace")), "only the namespace object is left: {drift:?}");
    });
}
