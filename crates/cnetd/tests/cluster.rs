//! cnetd as a cluster member, with a real etcd: three host namespaces on an
//! underlay, a cnetd on each (`--etcd`, lease TTL 3 s). Hosts see each other;
//! a host that dies with its namespace is dropped by the others within its
//! TTL + 2 s; an etcd outage degrades the cluster without touching the
//! hosts, and it converges when etcd is back; a restarted cnetd rejoins at
//! once as the same host.

use std::time::{Duration, Instant};

use cnet_model::cluster::ClusterStatus;
use cnet_testkit::cluster::ClusterWorld;

fn status(w: &ClusterWorld, i: usize) -> ClusterStatus {
    w.client(i).get("/cluster").unwrap_or_default()
}

/// Waits up to `secs` for `f`; answers how long it took.
fn within(secs: u64, what: &str, w: &ClusterWorld, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what} not within {secs} s; host 1's log:\n{}", w.log(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn hosts_see_each_other_drop_a_dead_host_within_its_ttl_and_ride_out_an_etcd_outage() {
    cnet_testkit::require_root!();
    let mut w = ClusterWorld::new(3);
    for i in 0..3 {
        w.start_daemon(i);
    }
    within(10, "every host seeing three healthy hosts", &w, || {
        (0..3).all(|i| {
            let s = status(&w, i);
            s.health == "Healthy" && s.hosts.len() == 3
        })
    });
    let a = status(&w, 0);
    let mut providers: Vec<String> = a.hosts.iter().map(|h| h.provider_address.clone()).collect();
    providers.sort();
    assert_eq!(providers, ["10.254.0.1", "10.254.0.2", "10.254.0.3"], "provider addresses: the source towards etcd");
    let c_id = status(&w, 2).host.unwrap().id;

    // Host C dies with its namespace: A and B drop it within TTL + 2 s.
    w.destroy_host(2);
    let took = within(w.ttl + 2, "A and B dropping host C", &w, || {
        (0..2).all(|i| !status(&w, i).hosts.iter().any(|h| h.id == c_id))
    });
    println!("a dead host was dropped after {took:?} (lease TTL {} s)", w.ttl);

    // An etcd outage: degraded, with the reason; the hosts keep running.
    w.kill_etcd();
    within(10, "A reporting the cluster degraded", &w, || {
        let s = status(&w, 0);
        s.health == "Degraded" && s.reason.contains("etcd")
    });
    w.start_etcd();
    within(15, "A and B healthy again with each other", &w, || {
        (0..2).all(|i| {
            let s = status(&w, i);
            s.health == "Healthy" && s.hosts.len() == 2
        })
    });

    // A restarted cnetd is the same host and rejoins at once (it revokes
    // its previous lease instead of waiting for it to expire).
    let a_id = status(&w, 0).host.unwrap().id;
    w.kill_daemon(0);
    w.start_daemon(0);
    within(w.ttl, "A registered again", &w, || {
        let s = status(&w, 0);
        s.health == "Healthy" && s.host.as_ref().map(|h| h.id) == Some(a_id) && s.hosts.len() == 2
    });
    let out = w.cnet(1, &["cluster"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("health: Healthy") && text.contains("(this host)"), "{text}");
    assert!(text.contains("10.254.0.1") && text.contains("10.254.0.2"), "{text}");
}

#[test]
fn without_etcd_cnetd_is_a_single_host() {
    cnet_testkit::require_root!();
    let w = cnet_testkit::World::new();
    let s: ClusterStatus = w.client().get("/cluster").unwrap();
    assert!(!s.enabled && s.hosts.is_empty(), "{s:?}");
    let out = w.cnet(&["cluster"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("single host"));
}
