//! IP sets, NetworkACLs and tiers against the fake dataplane: what reaches
//! the policy table, in how many transactions, and that refusals and
//! failures change nothing.

use super::*;
use crate::dataplane::fake::nft::PolicyTable;
use crate::service::NetworkPolicyChange;
use cnet_model::{ErrorCode, NetworkPolicy};

const NS2: &str = "6d0b3c1e-0000-4000-8000-0000000000c2";

fn net_policy(v: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(v).unwrap()
}

fn set(id: &str, ty: &str, values: &str) -> NetworkPolicy {
    net_policy(json!({"Type": "SetPolicy", "Settings": {"Id": id, "Name": id, "PolicyType": ty, "Values": values}}))
}

fn modify(b: &Bed, change: NetworkPolicyChange) -> crate::error::Result<NetworkRecord> {
    b.svc().modify_network("web", NetworkChange::Policies(change))
}

/// A NAT network with sets `lan` (10.1.0.0/16) and `both` (`lan` and 192.0.2.0/24 through `extra`).
fn with_sets() -> Bed {
    let b = Bed::new();
    let mut net = net_req();
    net.policies = vec![
        set("lan", "IPSET", "10.1.0.0/16, 10.1.2.0/24"),
        set("extra", "IPSET", "192.0.2.0/24,fd00:9::/64"),
        set("both", "NESTEDIPSET", "lan,extra"),
    ];
    b.svc().create_network(net).unwrap();
    b.svc().create_namespace(ns_req()).unwrap();
    b
}

/// An endpoint in namespace `ns` with `policies`.
fn endpoint(b: &Bed, id: &str, name: &str, ns: &str, policies: serde_json::Value) {
    let ep =
        json!({"ID": id, "Name": name, "HostComputeNetwork": "web", "HostComputeNamespace": ns, "Policies": policies});
    b.svc().create_endpoint(serde_json::from_value(ep).unwrap()).unwrap();
}

fn table(b: &Bed) -> PolicyTable {
    b.fake.objects().policy.expect("the policy table is loaded")
}

fn pol_applies(b: &Bed) -> usize {
    b.fake.calls().iter().filter(|c| c.starts_with("pol_apply")).count()
}

fn set_elems(t: &PolicyTable) -> Vec<(String, Vec<String>)> {
    t.sets.iter().map(|(n, e)| (n.clone(), e.iter().map(|x| x.to_string()).collect())).collect()
}

#[test]
fn a_set_membership_change_changes_elements_only_in_one_transaction_and_a_failed_one_nothing() {
    let b = with_sets();
    endpoint(
        &b,
        EP,
        "web1",
        NS,
        json!([{"Type": "ACL", "Settings": {"Action": "Allow", "Direction": "In",
        "RemoteAddresses": "both", "Priority": 1}}, {"Type": "ACL", "Settings": {"Action": "Block", "Direction": "In",
        "Priority": 2}}]),
    );
    let before = table(&b);
    let names: Vec<_> = before.sets.keys().cloned().collect();
    assert_eq!(names.len(), 2, "only the set the ACL names is in the kernel, both halves: {names:?}");
    assert!(names.iter().all(|n| n.starts_with("ips_") && n.len() <= 32), "{names:?}");
    assert_eq!(
        set_elems(&before).into_iter().flat_map(|(_, e)| e).collect::<Vec<_>>(),
        vec!["10.1.0.0/16", "192.0.2.0/24", "fd00:9::/64"],
        "the nested set is the normalised union of its leaves"
    );
    let rules = |t: &PolicyTable| t.chains.values().flatten().filter(|r| r.contains('@')).count();
    assert_eq!(rules(&before), 2, "one rule per family names the set");

    let n = pol_applies(&b);
    modify(&b, NetworkPolicyChange::Update(vec![set("lan", "IPSET", "10.1.0.0/16,10.7.0.9")])).unwrap();
    let after = table(&b);
    assert_eq!(pol_applies(&b), n + 1, "one transaction");
    assert_eq!(
        b.fake.calls().last().unwrap(),
        "pol_apply 1 lines",
        "one element added to the nested set, nothing else"
    );
    assert_eq!(after.chains, before.chains, "no rule changed");
    assert!(set_elems(&after).iter().any(|(_, e)| e.contains(&"10.7.0.9/32".to_string())), "{:?}", set_elems(&after));

    // An endpoint change that read the network before the set changed does not undo it.
    let mut stale = b.svc().get_network("web").unwrap();
    stale.sets[0].values = "10.1.0.0/16".into();
    let stored = b.svc().get_endpoint(EP).unwrap();
    let mut ep = stored.clone();
    ep.policies.pop();
    b.svc().policies.set(&ep, &stale, None).unwrap();
    assert_eq!(set_elems(&table(&b)), set_elems(&after), "the members stay the network's");
    b.svc().policies.set(&stored, &b.svc().get_network("web").unwrap(), None).unwrap();

    b.fake.fail_step(0);
    let before = (b.svc().get_network("web").unwrap(), table(&b));
    assert!(modify(&b, NetworkPolicyChange::Update(vec![set("lan", "IPSET", "10.9.0.0/16")])).is_err());
    assert_eq!((b.svc().get_network("web").unwrap(), table(&b)), before, "a failed change leaves store and kernel");
    assert!(b.drift().is_empty(), "{:?}", b.drift());
}

#[test]
fn bad_sets_and_references_are_refused_before_the_kernel_is_touched() {
    let b = with_sets();
    endpoint(
        &b,
        EP,
        "web1",
        NS,
        json!([{"Type": "ACL", "Settings": {"Action": "Block", "Direction": "In",
        "RemoteAddresses": "lan"}}]),
    );
    let steps = b.fake.steps();
    let stored = b.svc().get_network("web").unwrap();
    let err = |r: crate::error::Result<NetworkRecord>| r.unwrap_err();
    let e = err(modify(&b, NetworkPolicyChange::Remove(vec![set("lan", "IPSET", "")])));
    assert_eq!(e.code, ErrorCode::EntityHasReferences);
    assert!(e.message.contains("web1") && e.message.contains("nested set \"both\""), "{}", e.message);
    let e = err(modify(&b, NetworkPolicyChange::Update(vec![set("extra", "NESTEDIPSET", "both")])));
    assert!(e.message.contains("cycle"), "{}", e.message);
    let e = err(modify(&b, NetworkPolicyChange::Add(vec![set("lan", "IPSET", "10.0.0.1")])));
    assert!(e.message.contains("use Update"), "{}", e.message);
    let e = err(modify(&b, NetworkPolicyChange::Add(vec![set("x", "IPSET", "10.0.0.300")])));
    assert!(e.message.contains("not an address"), "{}", e.message);
    let acl = net_policy(json!({"Type": "NetworkACL", "Settings": {"Action": "Block", "Direction": "In",
        "RemoteAddresses": "nope"}}));
    let e = err(modify(&b, NetworkPolicyChange::Add(vec![acl])));
    assert!(e.message.contains("add a SetPolicy with Id \"nope\""), "{}", e.message);
    let vx = net_policy(json!({"Type": "VxlanPort", "Settings": {"Port": 4790}}));
    assert!(err(modify(&b, NetworkPolicyChange::Add(vec![vx]))).message.contains("only SetPolicy and NetworkACL"));
    let p: EndpointPolicy = serde_json::from_value(json!({"Type": "ACL", "Settings": {"Action": "Block",
        "Direction": "Out", "LocalAddresses": "missing"}}))
    .unwrap();
    let e = b.svc().modify_endpoint(EP, PolicyChange::Add(vec![p])).unwrap_err();
    assert!(e.message.contains("\"missing\"") && e.message.contains("SetPolicy"), "{}", e.message);
    assert_eq!(b.fake.steps(), steps, "no kernel step");
    assert_eq!(b.svc().get_network("web").unwrap(), stored);
}

#[test]
fn a_network_acl_reprograms_every_endpoint_of_the_network_in_one_transaction() {
    let b = with_sets();
    b.svc().create_namespace(serde_json::from_value(json!({"ID": NS2, "Name": "cnet-unit-test-c2"})).unwrap()).unwrap();
    const EP2: &str = "6d0b3c1e-0000-4000-8000-0000000000e2";
    endpoint(&b, EP, "web1", NS, json!([]));
    endpoint(
        &b,
        EP2,
        "web2",
        NS2,
        json!([{"Type": "ACL", "Settings": {"Action": "Allow", "Direction": "Out",
        "Protocols": "6", "Priority": 500}}]),
    );
    let n = pol_applies(&b);
    let acl = net_policy(json!({"Type": "NetworkACL", "Settings": {"Id": "no-lan", "Action": "Block",
        "Direction": "Out", "RemoteAddresses": "lan", "Priority": 100}}));
    modify(&b, NetworkPolicyChange::Add(vec![acl.clone()])).unwrap();
    assert_eq!(pol_applies(&b), n + 1, "one transaction for both endpoints");
    let t = table(&b);
    for ep in [EP, EP2] {
        let out = &t.chains[&format!("ep_{}_out", &ep.replace('-', "")[..16])];
        assert!(out[0].starts_with("ip daddr @ips_") && out[0].ends_with("drop"), "{out:?}");
    }
    let out2 = &t.chains[&format!("ep_{}_out", &EP2.replace('-', "")[..16])];
    assert!(out2[2].ends_with("return"), "the endpoint's own ACL after, by priority: {out2:?}");
    let e = modify(&b, NetworkPolicyChange::Remove(vec![set("lan", "IPSET", "")])).unwrap_err();
    assert!(e.message.contains("a NetworkACL"), "{}", e.message);

    modify(&b, NetworkPolicyChange::Remove(vec![acl])).unwrap();
    let t = table(&b);
    assert!(t.sets.is_empty(), "a set nobody names leaves the kernel: {:?}", t.sets);
    assert_eq!(t.chains.len(), 2, "web1 has no policies left, web2 its own: {:?}", t.chains.keys());
    assert_eq!(b.svc().get_network("web").unwrap().sets.len(), 3, "the sets stay in the store");
}

#[test]
fn tiers_add_and_delete_their_chains_and_a_restart_or_repair_restores_the_sets() {
    let mut b = with_sets();
    let tier = |order: u16, action: &str| {
        json!({"Type": "TierAcl", "Settings": {"Name": format!("t{order}"), "Direction": "In", "Order": order,
            "TierAclRules": [{"TierAclRuleAction": action, "RemoteAddresses": "extra", "Priority": 1}]}})
    };
    endpoint(&b, EP, "web1", NS, json!([tier(2, "Block"), tier(1, "Pass")]));
    let tag = &EP.replace('-', "")[..16];
    let t = table(&b);
    let t0 = &t.chains[&format!("ep_{tag}_in_t0")];
    assert!(t0[0].ends_with(&format!("goto ep_{tag}_in_t1")), "Order 1 first, Pass to the next: {t0:?}");
    assert!(t.chains[&format!("ep_{tag}_in_t1")].last().unwrap().ends_with(&format!("goto ep_{tag}_in")));
    let p: Vec<EndpointPolicy> = serde_json::from_value(json!([tier(2, "Allow")])).unwrap();
    b.svc().modify_endpoint(EP, PolicyChange::Remove(p)).unwrap();
    let t = table(&b);
    assert!(!t.chains.contains_key(&format!("ep_{tag}_in_t1")), "the tier removed by its name: its chain is deleted");
    assert!(t.chains.contains_key(&format!("ep_{tag}_in_t0")));

    b.restart();
    assert_eq!(table(&b), t, "loaded again at start, sets included");
    b.fake.tamper(|k| k.policy = None);
    assert!(b.svc().policies.check_and_repair().unwrap());
    assert_eq!(table(&b), t, "and restored after a deletion");
    assert_eq!(set_elems(&t).into_iter().flat_map(|(_, e)| e).collect::<Vec<_>>(), ["192.0.2.0/24", "fd00:9::/64"]);
    b.svc().modify_endpoint(EP, PolicyChange::Update(vec![])).unwrap();
    assert_eq!(b.fake.objects().policy, None, "no policies left: the table goes");
}

fn transparent_with_acl() -> Bed {
    let b = with_network(true);
    let mut req = ep_req(Some(NS));
    req.policies.push(
        serde_json::from_value(json!({"Type": "ACL", "Settings": {"Action": "Block", "Direction": "In",
            "Protocols": "6", "LocalPorts": "22"}}))
        .unwrap(),
    );
    b.svc().create_endpoint(req).unwrap();
    b
}

fn block_out(s: &Service) -> crate::error::Result<()> {
    let p: EndpointPolicy = serde_json::from_value(json!({"Type": "ACL", "Settings": {"Action": "Block",
        "Direction": "Out", "Protocols": "17", "RemotePorts": "53"}}))
    .unwrap();
    s.modify_endpoint(EP, PolicyChange::Add(vec![p])).map(|_| ())
}

#[test]
fn on_a_transparent_network_a_containers_acls_are_a_table_of_its_namespace_restored_at_start_and_gone_with_it() {
    on("Transparent", || {
        let mut b = transparent_with_acl();
        let rec = b.svc().get_endpoint(EP).unwrap();
        let path = b.svc().netns_path(rec.namespace).unwrap();
        let table = |b: &Bed| b.fake.objects().acls_inside.get(&path).cloned();
        let t = table(&b).expect("the container's namespace has its table");
        assert!(t.contains(&format!("\"{}\" . {}", rec.interface_name, rec.ips().next().unwrap())), "{t}");
        assert!(t.contains("th dport 22 counter name"), "{t}");
        assert!(b.fake.objects().policy.is_none(), "nothing in the host's table");
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        // Deleted from inside: diag says so, a restart puts it back.
        b.fake.tamper(|k| k.acls_inside.clear());
        assert!(b.drift().iter().any(|d| d.contains("ACL table")), "{:?}", b.drift());
        b.restart();
        assert_eq!(table(&b).as_deref(), Some(t.as_str()));
        b.svc().detach(NS, EP).unwrap();
        assert!(b.fake.objects().acls_inside.is_empty(), "gone with the endpoint");
        // A crash between the kernel's change and the store's left a table
        // no endpoint has: start-up removes it.
        b.fake.tamper(|k| drop(k.acls_inside.insert(path.clone(), t.clone())));
        b.restart();
        assert!(b.fake.objects().acls_inside.is_empty(), "a stale table is swept at start");
    });
}

#[test]
fn on_a_transparent_network_a_failed_acl_change_leaves_the_old_table_and_a_crash_is_resolved_at_start() {
    on("Transparent", || {
        let n = steps_of(transparent_with_acl, block_out);
        assert!(n >= 1, "the change is a step");
        let done = transparent_with_acl();
        block_out(done.svc()).unwrap();
        let tables = |b: &Bed| -> Vec<String> { b.fake.objects().acls_inside.values().cloned().collect() };
        let after = done.snapshot();
        // A rules-only change whose batch fails is made again as a whole table.
        for step in 0..=n {
            let b = transparent_with_acl();
            b.fake.fail_step(step);
            block_out(b.svc()).unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(b.snapshot().0, after.0, "step {step}: the same change");
            assert!(tables(&b).concat().contains("th dport 53"), "step {step}: {:?}", tables(&b));
        }
        // The table deleted from inside: the rules-only change fails, the whole table restores it.
        let b = transparent_with_acl();
        b.fake.tamper(|k| k.acls_inside.clear());
        block_out(b.svc()).unwrap();
        assert!(tables(&b).concat().contains("th dport 53"), "{:?}", tables(&b));
        // And when the whole table fails too, nothing changed.
        let b = transparent_with_acl();
        b.fake.tamper(|k| k.acls_inside.clear());
        let before = (b.snapshot(), tables(&b));
        b.fake.fail_step(1);
        assert!(block_out(b.svc()).is_err(), "both ways failed");
        assert_eq!((b.snapshot(), tables(&b)), before);
        let m = crashing_at_each_step_then_restarting_resolves_the_intent(transparent_with_acl, block_out);
        assert!(m >= 1);
    });
}

#[test]
fn on_a_transparent_network_a_network_acl_change_skips_a_namespace_that_is_gone() {
    on("Transparent", || {
        let b = transparent_with_acl();
        let rec = b.svc().get_endpoint(EP).unwrap();
        let path = b.svc().netns_path(rec.namespace).unwrap();
        b.fake.tamper(|k| {
            k.namespaces.remove(&path);
        });
        let block = net_policy(json!({"Type": "NetworkACL", "Settings": {"Id": "x", "Action": "Block",
            "Direction": "Out", "Protocols": "6", "RemotePorts": "25"}}));
        modify(&b, NetworkPolicyChange::Add(vec![block])).expect("the gone namespace does not hold the network back");
    });
}
