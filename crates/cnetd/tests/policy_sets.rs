//! Tiers, IP sets and NetworkACLs with real packets.

mod common;
use common::*;
use serde_json::{json, Value};

fn set(id: &str, ty: &str, values: &str) -> Value {
    json!({"Type": "SetPolicy", "Settings": {"Id": id, "Name": id, "PolicyType": ty, "Values": values}})
}

fn tier(order: u16, dir: &str, rules: Value) -> Value {
    json!({"Type": "TierAcl", "Settings": {"Name": format!("tier{order}"), "Direction": dir, "Order": order,
        "TierAclRules": rules}})
}

fn network_with(w: &World, subnet: &str, policies: Value) -> cnet_model::Network {
    w.client()
        .post(
            "/networks",
            &json!({"Name": "nat", "Type": "NAT", "Policies": policies,
                "Ipams": [{"Type": "Static", "Subnets": [{"IpAddressPrefix": subnet}]}]}),
        )
        .unwrap_or_else(|e| panic!("create network: {e}"))
}

/// A network modify request with `Policies`.
fn patch_net(
    w: &World,
    net: &cnet_model::Network,
    kind: &str,
    policies: Value,
) -> Result<Value, cnet_client::ClientError> {
    let body = json!({"ResourceType": "Policy", "RequestType": kind, "Settings": {"Policies": policies}});
    w.client().patch::<Value>(&format!("/networks/{}", net.id), &body)
}

fn nft(w: &World, args: &[&str]) -> String {
    let out = w.exec_in(&w.host_path(), &[&["nft"][..], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of endpoint `ep`'s In chain in the kernel.
fn in_chain(w: &World, ep: &cnet_model::Endpoint) -> String {
    let chain = format!("ep_{}_in", &ep.id.simple().to_string()[..16]);
    let text = nft(w, &["list", "chain", "inet", "cnetpol", &chain]);
    assert!(text.contains(&chain), "{chain} is in the kernel: {text}");
    text
}

#[test]
fn tiers_run_by_order_pass_hands_over_a_block_in_the_first_wins_and_no_match_falls_through() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.124.0.0/24"]);
    let b = container(&w, &net, "b", json!([]));
    let c = container(&w, &net, "c", json!([]));
    let d = container(&w, &net, "d", json!([]));
    let a = container(
        &w,
        &net,
        "a",
        json!([
            // Given second, runs second (Order 20).
            tier(
                20,
                "In",
                json!([
                {"TierAclRuleAction": "Block", "Protocols": "6", "LocalPorts": "80", "Priority": 10},
                {"TierAclRuleAction": "Allow", "Protocols": "6", "LocalPorts": "81", "Priority": 10}])
            ),
            tier(
                10,
                "In",
                json!([
                {"TierAclRuleAction": "Block", "RemoteAddresses": c.ip(), "Priority": 10},
                {"TierAclRuleAction": "Pass", "RemoteAddresses": b.ip(), "Priority": 10},
                {"TierAclRuleAction": "Allow", "Protocols": "6", "LocalPorts": "84", "Priority": 20}])
            ),
            acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "82,84"})),
        ]),
    );
    let _srv: Vec<_> =
        [80, 81, 82, 83, 84].iter().map(|p| probe::tcp_server(&a.path(), &format!("0.0.0.0:{p}"))).collect();
    let at = |port: u16| format!("{}:{port}", a.ip());
    assert_eq!(probe::tcp_seen_as(&b.path(), &at(80)), None, "b passed by tier 10, blocked by tier 20");
    assert!(probe::tcp_seen_as(&b.path(), &at(81)).is_some(), "b passed by tier 10, allowed by tier 20");
    assert_eq!(probe::tcp_seen_as(&c.path(), &at(81)), None, "c blocked by tier 10: tier 20's Allow never runs");
    assert_eq!(probe::tcp_seen_as(&d.path(), &at(80)), None, "no match in tier 10: tier 20 decides");
    assert_eq!(probe::tcp_seen_as(&d.path(), &at(82)), None, "no match in either tier: the ACL decides");
    assert!(probe::tcp_seen_as(&d.path(), &at(83)).is_some(), "no match anywhere: the default allows TCP");
    assert!(probe::tcp_seen_as(&d.path(), &at(84)).is_some(), "tier 10's Allow decides before the ACL");
    assert!(probe::ping(&b.path(), &a.ip()), "b's ping passes both tiers");
    assert!(!probe::ping(&c.path(), &a.ip()), "c's ping blocked in tier 10");

    // One tier fewer at run time: its chain goes, and b's port 80 opens.
    let only: Value = json!([tier(10, "In", json!([{"TierAclRuleAction": "Block", "RemoteAddresses": c.ip()}]))]);
    patch(&w, &a.ep, "Update", only).unwrap();
    let table = nft(&w, &["list", "table", "inet", "cnetpol"]);
    let tag = &a.ep.id.simple().to_string()[..16];
    assert!(table.contains(&format!("ep_{tag}_in_t0")) && !table.contains(&format!("ep_{tag}_in_t1")), "{table}");
    assert!(probe::tcp_seen_as(&b.path(), &at(80)).is_some(), "b → a:80 open");
    assert_eq!(probe::tcp_seen_as(&c.path(), &at(80)), None, "c still blocked");

    // No tiers left: the dispatch goes straight to the ACL chain again.
    patch(&w, &a.ep, "Update", json!([acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "82"}))])).unwrap();
    let table = nft(&w, &["list", "table", "inet", "cnetpol"]);
    assert!(!table.contains(&format!("ep_{tag}_in_t0")) && table.contains(&format!("jump ep_{tag}_in")), "{table}");
    assert!(probe::tcp_seen_as(&c.path(), &at(80)).is_some(), "c → a:80 open");
    assert_eq!(probe::tcp_seen_as(&c.path(), &at(82)), None, "the ACL still holds");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn an_ip_set_membership_change_at_run_time_opens_and_closes_a_flow_without_changing_a_rule() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network_with(&w, "10.125.0.0/24", json!([set("peers", "IPSET", "10.125.0.250")]));
    let b = container(&w, &net, "b", json!([]));
    let c = container(&w, &net, "c", json!([]));
    let a = container(
        &w,
        &net,
        "a",
        json!([
            acl(
                "Allow",
                "In",
                json!({"Protocols": "6", "LocalPorts": "80", "RemoteAddresses": "peers", "Priority": 100})
            ),
            acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "80", "Priority": 200})),
        ]),
    );
    let _srv = probe::tcp_server(&a.path(), "0.0.0.0:80");
    let target = format!("{}:80", a.ip());
    assert_eq!(probe::tcp_seen_as(&b.path(), &target), None, "b is not in the set");
    let chain = in_chain(&w, &a.ep);
    assert!(chain.contains("@ips_"), "{chain}");

    patch_net(&w, &net, "Update", json!([set("peers", "IPSET", &format!("10.125.0.250,{}", b.ip()))])).unwrap();
    assert_eq!(probe::tcp_seen_as(&b.path(), &target).as_deref(), Some(b.ip().as_str()), "b added: allowed");
    assert_eq!(probe::tcp_seen_as(&c.path(), &target), None, "c is still outside");
    assert_eq!(in_chain(&w, &a.ep), chain, "the chain did not change");
    let stored: cnet_model::Network = w.client().get(&format!("/networks/{}", net.id)).unwrap();
    assert!(serde_json::to_string(&stored.policies).unwrap().contains(&b.ip()), "{:?}", stored.policies);

    // A restart (and a table deleted while cnetd was down) restores the set.
    w.stop_daemon();
    w.exec_in(&w.host_path(), &["nft", "delete", "table", "inet", "cnetpol"]);
    w.start_daemon();
    assert!(probe::tcp_seen_as(&b.path(), &target).is_some(), "b still allowed after a restart");
    assert_eq!(probe::tcp_seen_as(&c.path(), &target), None, "c still blocked after a restart");
    assert_eq!(in_chain(&w, &a.ep), chain);

    patch_net(&w, &net, "Update", json!([set("peers", "IPSET", "10.125.0.250")])).unwrap();
    assert_eq!(probe::tcp_seen_as(&b.path(), &target), None, "b removed: blocked again");
    assert_eq!(in_chain(&w, &a.ep), chain, "the chain did not change");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn a_nested_set_is_the_union_of_its_members_and_follows_their_changes() {
    cnet_testkit::require_root!();
    let w = World::new();
    let sets = json!([
        set("left", "IPSET", ""),
        set("right", "IPSET", "10.126.0.200/30"),
        set("both", "NESTEDIPSET", "left,right")
    ]);
    let net = network_with(&w, "10.126.0.0/24", sets);
    let b = container(&w, &net, "b", json!([]));
    let c = container(&w, &net, "c", json!([]));
    let a = container(&w, &net, "a", json!([acl("Block", "In", json!({"Protocols": "1", "RemoteAddresses": "both"}))]));
    assert!(probe::ping(&b.path(), &a.ip()) && probe::ping(&c.path(), &a.ip()), "neither is in a member set");
    let chain = in_chain(&w, &a.ep);

    let out = w.cnet(&["network", "set", "update", &net.id.to_string(), "left", &b.ip()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!probe::ping(&b.path(), &a.ip()), "b joined left (from the command line), so both: blocked");
    assert!(probe::ping(&c.path(), &a.ip()), "c is in neither");
    patch_net(&w, &net, "Add", json!([set("more", "IPSET", &c.ip())])).unwrap();
    patch_net(&w, &net, "Update", json!([set("both", "NESTEDIPSET", "left,right,more")])).unwrap();
    assert!(!probe::ping(&c.path(), &a.ip()), "a new member set of the nested set: c blocked");
    patch_net(&w, &net, "Update", json!([set("left", "IPSET", "")])).unwrap();
    assert!(probe::ping(&b.path(), &a.ip()), "b left: allowed again");
    assert_eq!(in_chain(&w, &a.ep), chain, "no rule changed through all of it");
    let sets = nft(&w, &["list", "sets", "table", "inet", "cnetpol"]);
    let b_in = [" ", ",", "\n"].iter().any(|end| sets.contains(&format!(" {}{end}", b.ip())));
    assert!(sets.contains(&c.ip()) && !b_in, "{sets}");
}

#[test]
fn a_network_acl_blocks_a_flow_for_every_endpoint_of_the_network_added_and_removed_at_run_time() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.127.0.0/24"]);
    let a = container(&w, &net, "a", json!([]));
    let b = container(&w, &net, "b", json!([acl("Allow", "Out", json!({"Protocols": "6", "Priority": 500}))]));
    let _lan: Vec<_> = [7040, 7041].iter().map(|p| probe::tcp_server(&w.lan_path(), &format!("0.0.0.0:{p}"))).collect();
    let lan = |p: u16| format!("{LAN_IP}:{p}");
    assert!(probe::tcp_seen_as(&a.path(), &lan(7040)).is_some());

    let block = json!({"Type": "NetworkACL", "Settings": {"Id": "no-7040", "Action": "Block", "Direction": "Out",
        "Protocols": "6", "RemotePorts": "7040", "Priority": 100}});
    patch_net(&w, &net, "Add", json!([block.clone()])).unwrap();
    let c = container(&w, &net, "c", json!([]));
    for (ep, name) in [(&a, "a"), (&b, "b"), (&c, "c (created after)")] {
        assert_eq!(probe::tcp_seen_as(&ep.path(), &lan(7040)), None, "{name} → LAN:7040 blocked");
        assert!(probe::tcp_seen_as(&ep.path(), &lan(7041)).is_some(), "{name} → LAN:7041 allowed");
    }
    let shown: cnet_model::Network = w.client().get(&format!("/networks/{}", net.id)).unwrap();
    assert!(serde_json::to_string(&shown.policies).unwrap().contains("no-7040"));

    patch_net(&w, &net, "Remove", json!([block])).unwrap();
    for (ep, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert!(probe::tcp_seen_as(&ep.path(), &lan(7040)).is_some(), "{name} → LAN:7040 open again");
    }

    // The same from the command line, naming a set.
    let id = net.id.to_string();
    let ok = |args: &[&str]| {
        let out = w.cnet(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&["network", "set", "add", &id, "lan", LAN_IP]);
    let add = ["network", "acl", "add", &id, "--id", "cli", "--action", "Block", "--direction", "Out"];
    ok(&[&add[..], &["--protocols", "6", "--remote-addresses", "lan", "--remote-ports", "7041"]].concat());
    assert_eq!(probe::tcp_seen_as(&a.path(), &lan(7041)), None, "a → LAN:7041 blocked from the command line");
    let out = w.cnet(&["network", "set", "remove", &id, "lan"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("still named by a NetworkACL"));
    ok(&["network", "acl", "remove", &id, "--id", "cli"]);
    ok(&["network", "set", "remove", &id, "lan"]);
    assert!(probe::tcp_seen_as(&a.path(), &lan(7041)).is_some(), "open again");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn bad_sets_and_references_are_refused_with_what_to_fix_and_change_nothing_in_the_kernel() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network_with(
        &w,
        "10.128.0.0/24",
        json!([set("web", "IPSET", "10.128.0.200/29"), set("all", "NESTEDIPSET", "web")]),
    );
    let b = container(&w, &net, "b", json!([]));
    let a = container(&w, &net, "a", json!([acl("Block", "In", json!({"RemoteAddresses": "web"}))]));
    let table = nft(&w, &["list", "table", "inet", "cnetpol"]);
    let bad_acl = |s: &str| json!([{"Type": "NetworkACL", "Settings": {"Action": "Block", "Direction": "In", "RemoteAddresses": s}}]);
    for (kind, policies, status, want) in [
        ("Add", bad_acl("nope"), 400, "add a SetPolicy with Id \"nope\""),
        ("Add", json!([set("x", "IPSET", "10.0.0.1,10.0.0.999")]), 400, "not an address"),
        ("Add", json!([set("x", "NESTEDIPSET", "10.0.0.1")]), 400, "addresses go in an IPSET"),
        ("Add", json!([set("web", "IPSET", "10.0.0.1")]), 400, "use Update"),
        ("Update", json!([set("web", "NESTEDIPSET", "all")]), 400, "cycle"),
        ("Update", json!([set("gone", "IPSET", "")]), 400, "use Add"),
        (
            "Add",
            json!([{"Type": "SetPolicy", "Settings": {"Id": "x", "PolicyType": "IPSET", "Colour": 1}}]),
            400,
            "unknown field",
        ),
        ("Remove", json!([set("web", "IPSET", "")]), 409, "still named by endpoint"),
    ] {
        let err = patch_net(&w, &net, kind, policies.clone()).unwrap_err();
        assert_eq!(err.code().map(|c| c.http_status()), Some(status), "{policies}: {err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    let err = patch(&w, &a.ep, "Add", json!([acl("Block", "Out", json!({"LocalAddresses": "missing"}))])).unwrap_err();
    assert_eq!(err.code().map(|c| c.http_status()), Some(400), "{err}");
    assert!(err.to_string().contains("\"missing\""), "{err}");
    let err = w
        .client()
        .post::<Value>("/endpoints", &json!({"HostComputeNetwork": net.id, "Policies": [acl("Block", "In", json!({"RemoteAddresses": "nope"}))]}))
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.http_status()), Some(400), "{err}");
    assert_eq!(nft(&w, &["list", "table", "inet", "cnetpol"]), table, "the kernel table is unchanged");
    assert!(probe::ping(&b.path(), &a.ip()), "b is outside web: its ping passes");
}

#[test]
fn on_a_transparent_network_network_acls_ip_sets_and_tiers_hold_in_every_containers_namespace() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = physical_network(&w, "lan", "Transparent");
    let a = container(&w, &net, "a", json!([]));
    let b = container(
        &w,
        &net,
        "b",
        // Out: tier 1 passes TCP 7052 on to tier 2, which blocks it; tier 1 allows the rest.
        json!([
            tier(
                1,
                "Out",
                json!([{"Id": "p", "TierAclRuleAction": "Pass", "Protocols": "6", "RemotePorts": "7052", "Priority": 10}])
            ),
            tier(
                2,
                "Out",
                json!([{"Id": "b", "TierAclRuleAction": "Block", "Protocols": "6", "RemotePorts": "7052", "Priority": 10}])
            ),
        ]),
    );
    let _lan: Vec<_> =
        [7050, 7051, 7052].iter().map(|p| probe::tcp_server(&w.lan_path(), &format!("0.0.0.0:{p}"))).collect();
    let lan = |p: u16| format!("{LAN_IP}:{p}");
    assert_eq!(probe::tcp_seen_as(&b.path(), &lan(7052)), None, "b → LAN:7052 passed on by tier 1, blocked by tier 2");
    assert!(probe::tcp_seen_as(&b.path(), &lan(7051)).is_some(), "b → LAN:7051 allowed");

    // A NetworkACL naming an IP set: every container's namespace gets it, one added later too.
    patch_net(&w, &net, "Add", json!([set("lan", "IPSET", LAN_IP)])).unwrap();
    let block = json!({"Type": "NetworkACL", "Settings": {"Id": "no-7050", "Action": "Block", "Direction": "Out",
        "Protocols": "6", "RemoteAddresses": "lan", "RemotePorts": "7050", "Priority": 100}});
    patch_net(&w, &net, "Add", json!([block.clone()])).unwrap();
    let c = container(&w, &net, "c", json!([]));
    for (ep, name) in [(&a, "a"), (&b, "b"), (&c, "c (created after)")] {
        assert_eq!(probe::tcp_seen_as(&ep.path(), &lan(7050)), None, "{name} → LAN:7050 blocked");
        assert!(probe::tcp_seen_as(&ep.path(), &lan(7051)).is_some(), "{name} → LAN:7051 allowed");
        let t = w.exec_in(&ep.path(), &["nft", "list", "table", "inet", "cnetpol"]);
        assert!(String::from_utf8_lossy(&t.stdout).contains(LAN_IP), "{name}'s table has the set's member");
    }
    // The set's members change: the flow opens for every container.
    patch_net(&w, &net, "Update", json!([set("lan", "IPSET", "192.0.2.1"), block.clone()])).unwrap();
    for (ep, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert!(probe::tcp_seen_as(&ep.path(), &lan(7050)).is_some(), "{name} → LAN:7050 open: the set moved");
    }
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    // Removed: a's and c's tables go (they have no ACLs of their own), b keeps its tiers.
    patch_net(&w, &net, "Remove", json!([block, set("lan", "IPSET", "192.0.2.1")])).unwrap();
    assert!(!w.exec_in(&a.path(), &["nft", "list", "table", "inet", "cnetpol"]).status.success());
    assert!(!w.exec_in(&c.path(), &["nft", "list", "table", "inet", "cnetpol"]).status.success());
    assert_eq!(probe::tcp_seen_as(&b.path(), &lan(7052)), None, "b's tiers stay");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
