//! Restart and failure: the data plane outlives the daemon, start-up repairs
//! drift and finishes or rolls back unfinished intents, a flushed nftables
//! table comes back on its own.

mod common;
use cnet_model::{Endpoint, Network};
use cnetd::state::{EndpointRecord, Intent, NetworkRecord, Stored};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn ifindex(w: &World, name: &str) -> String {
    let out = w.exec_in(&w.host_path(), &["ip", "-o", "link", "show", "dev", name]);
    String::from_utf8_lossy(&out.stdout).split(':').next().unwrap_or("").to_string()
}

#[test]
fn killing_cnetd_never_interrupts_a_connection_through_a_port_mapping() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "nat", "NAT", &["10.121.0.0/24"]);
    let c = container(&w, &net, "c", json!([port_map(6, 8080, 80)]));
    let _srv = probe::tcp_server(&c.path(), "0.0.0.0:80");
    let mut conn = probe::tcp_connect(&w.lan_path(), &format!("{HOST_IP}:8080")).expect("connect through the mapping");
    assert_eq!(conn.echo("before").unwrap(), "before");
    let veth = c.ep.host_interface_name.clone().unwrap();
    let index_before = ifindex(&w, &veth);

    w.kill_daemon();
    for i in 0..20 {
        assert_eq!(
            conn.echo(&format!("down {i}")).unwrap(),
            format!("down {i}"),
            "traffic stopped while cnetd was down"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    // New connections work too while the daemon is down.
    assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8080")).is_some());

    w.start_daemon();
    assert_eq!(conn.echo("after").unwrap(), "after");
    assert_eq!(ifindex(&w, &veth), index_before, "restart must not re-create a working endpoint");
    let ep: Endpoint = w.client().get(&format!("/endpoints/{}", c.ep.id)).unwrap();
    assert_eq!(ep, c.ep, "the endpoint survives the restart unchanged");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // A clean stop behaves the same.
    w.stop_daemon();
    assert_eq!(conn.echo("stopped").unwrap(), "stopped");
    w.start_daemon();
    assert_eq!(conn.echo("again").unwrap(), "again");
}

#[test]
fn start_up_repairs_a_deleted_bridge_a_flushed_ruleset_and_removes_orphans() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "nat", "NAT", &["10.122.0.0/24"]);
    let c = container(&w, &net, "c", json!([port_map(6, 8080, 80)]));
    let _srv = probe::tcp_server(&c.path(), "0.0.0.0:80");
    w.stop_daemon();

    let bridge = net.bridge_name.clone().unwrap();
    assert!(w.exec_in(&w.host_path(), &["ip", "link", "del", &bridge]).status.success());
    assert!(w.exec_in(&w.host_path(), &["nft", "flush", "ruleset"]).status.success());
    // An orphan veth, as a crash between link creation and store commit leaves.
    let orphan = "cnv0123456789a";
    assert!(w
        .exec_in(&w.host_path(), &["ip", "link", "add", orphan, "type", "veth", "peer", "name", "cnvorphanpeer0"])
        .status
        .success());
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8080")), None, "the world is broken now");

    w.start_daemon();
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert!(probe::ping(&c.path(), "10.122.0.1"), "gateway back");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8080")), Some(LAN_IP.to_string()), "mapping back");
    let links = w.exec_in(&w.host_path(), &["ip", "-o", "link"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains(orphan), "orphan veth must be removed");
}

#[test]
fn diag_reports_drift_and_a_flushed_table_is_restored_while_running() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.123.0.0/24"]);
    let c = container(&w, &net, "c", json!([port_map(6, 8080, 80)]));
    let _srv = probe::tcp_server(&c.path(), "0.0.0.0:80");
    // Remove an address inside the container: diag must say so.
    let ip = format!("{}/24", c.ip());
    assert!(w.exec_in(&c.path(), &["ip", "addr", "del", &ip, "dev", "eth0"]).status.success());
    let drift = w.drift();
    assert!(drift.iter().any(|d| d.contains("address") && d.contains(&c.ip())), "{drift:?}");
    let out = w.cnet(&["diag"]);
    assert_eq!(out.status.code(), Some(1), "cnet diag exits non-zero on drift");
    assert!(w.exec_in(&c.path(), &["ip", "addr", "add", &ip, "dev", "eth0"]).status.success());
    assert!(w.exec_in(&c.path(), &["ip", "route", "add", "default", "via", "10.123.0.1"]).status.success());
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Someone flushes the firewall: cnetd restores its table on its own.
    assert!(w.exec_in(&w.host_path(), &["nft", "flush", "ruleset"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8080")).is_none() {
        assert!(Instant::now() < deadline, "table not restored within 10 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn unfinished_intents_are_rolled_back_or_finished_on_start() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "nat", "NAT", &["10.124.0.0/24"]);
    let c = container(&w, &net, "c", json!([port_map(6, 8080, 80)]));
    w.stop_daemon();

    // A crash mid-way: a network whose create never finished (its bridge was
    // already made), and an endpoint whose delete never finished.
    let half: Network = serde_json::from_value(json!({
        "ID": "6d0b3c1e-0000-4000-8000-000000000001", "Name": "half", "Type": "NAT",
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.125.0.0/24"}]}]
    }))
    .unwrap();
    let half_bridge = half.derived_bridge_name();
    assert!(w.exec_in(&w.host_path(), &["ip", "link", "add", &half_bridge, "type", "bridge"]).status.success());
    {
        let store = cnet_store::Store::open(&w.state_dir.join("cnet.redb")).unwrap();
        let mut b = cnet_store::Batch::new();
        let half_rec = NetworkRecord::from_wire(&half, half_bridge.clone()).unwrap();
        b.put(cnet_store::Kind::Network, &half.id.to_string(), &Stored::with(half_rec, Intent::Create));
        let stored: Vec<Stored<EndpointRecord>> = store.load(cnet_store::Kind::Endpoint).unwrap();
        let ep = stored.into_iter().find(|s| s.record.id == c.ep.id).expect("the endpoint is stored");
        b.put(cnet_store::Kind::Endpoint, &c.ep.id.to_string(), &Stored::with(ep.record, Intent::Delete));
        store.commit(b).unwrap();
    }

    w.start_daemon();
    let nets: Vec<Network> = w.client().get("/networks").unwrap();
    assert_eq!(
        nets.iter().map(|n| n.name.to_string()).collect::<Vec<_>>(),
        vec!["nat"],
        "the half-made network is rolled back"
    );
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "the half-deleted endpoint is finished off");
    let links = String::from_utf8_lossy(&w.exec_in(&w.host_path(), &["ip", "-o", "link"]).stdout).into_owned();
    assert!(!links.contains(&half_bridge), "bridge of the rolled-back network removed");
    assert!(!links.contains(c.ep.host_interface_name.as_deref().unwrap()), "veth of the deleted endpoint removed");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8080")), None, "its port mapping is gone");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    // Its address is free again.
    let again: Endpoint = w
        .client()
        .post("/endpoints", &json!({"HostComputeNetwork": "nat", "IpConfigurations": [{"IpAddress": c.ip()}]}))
        .unwrap();
    assert_eq!(again.ip_configurations[0].ip_address.to_string(), c.ip());
}

#[test]
fn cnetd_runs_without_glibcs_thread_cache_under_the_pid_it_was_started_with() {
    cnet_testkit::require_root!();
    let w = World::new();
    let pid = w.daemon_pid().expect("cnetd runs");
    // The PID the test started is the one answering, after the restart into itself.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("cnetd's environment");
    let vars: Vec<String> = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    let ours = std::env::var("GLIBC_TUNABLES").ok();
    if let Some(wanted) = cnetd::allocator::wanted_tunables(ours.as_deref()) {
        assert!(vars.contains(&format!("GLIBC_TUNABLES={wanted}")), "{vars:?}");
        assert!(vars.contains(&format!("CNET_GLIBC_TUNABLES_BEFORE={}", ours.as_deref().unwrap_or("-"))), "{vars:?}");
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("cnetd"), "{}", exe.display());
    // Named cnetd, not "exe" (the restart runs /proc/self/exe), for ps and pgrep.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "cnetd");
    w.client().get::<Vec<Network>>("/networks").expect("cnetd answers");
}
