//! cnetd as a cluster member, with a real etcd: three host namespaces on an
//! underlay, a cnetd on each (`--etcd`, lease TTL 10 s, the default). Hosts see each other;
//! a host that dies with its namespace is dropped by the others within its
//! TTL + 2 s; an etcd outage degrades the cluster without touching the
//! hosts, and it converges when etcd is back; a restarted cnetd rejoins at
//! once as the same host.

use std::time::Duration;

use cnet_model::cluster::ClusterStatus;
use cnet_testkit::cluster::ClusterWorld;

fn status(w: &ClusterWorld, i: usize) -> ClusterStatus {
    w.status(i)
}

fn within(secs: u64, what: &str, w: &ClusterWorld, f: impl FnMut() -> bool) -> Duration {
    w.within(secs, what, f)
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
    let err = w
        .client()
        .post::<cnet_model::Network>(
            "/networks",
            &serde_json::json!({"Name": "ov", "Type": "Overlay",
                "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.230.0.0/16", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 9}}]}]}]}),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("--etcd"), "an Overlay network needs a cluster: {err}");
}

/// `ip -d link show NAME` in host `i`'s namespace, or `None` when there is no such link.
fn link_details(w: &ClusterWorld, i: usize, name: &str) -> Option<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", w.hosts[i].netns))
        .args(["ip", "-d", "link", "show", name])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn an_overlay_network_made_on_one_host_is_on_every_host_and_goes_from_every_host() {
    cnet_testkit::require_root!();
    let mut w = ClusterWorld::new(3);
    for i in 0..3 {
        w.start_daemon(i);
    }
    within(10, "three healthy hosts", &w, || (0..3).all(|i| status(&w, i).hosts.len() == 3));
    let vsid = |id: u32| serde_json::json!([{"Type": "VSID", "Settings": {"IsolationId": id}}]);
    // Made with the CLI.
    let out = w.cnet(
        0,
        &["-o", "json", "network", "create", "ov", "--type", "Overlay", "--subnet", "10.230.0.0/16", "--vsid", "4100"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let net: cnet_model::Network = serde_json::from_slice(&out.stdout).unwrap();
    let vxlan = format!("cnx{}", &net.bridge_name.clone().unwrap()[3..]);
    within(5, "the network and its VXLAN device on every host", &w, || {
        (0..3).all(|i| {
            w.client(i).get::<cnet_model::Network>(&format!("/networks/{}", net.id)).is_ok()
                && link_details(&w, i, &vxlan).is_some_and(|d| {
                    d.contains("vxlan id 4100")
                        && d.contains(&format!("local 10.254.0.{}", i + 1))
                        && d.contains("dstport 4789")
                })
        })
    });
    let on_b = link_details(&w, 1, &vxlan).unwrap();
    assert!(on_b.contains("nolearning") && on_b.contains("mtu 1450"), "{on_b}");

    // A VNI is one network's: refused on another host, nothing left there.
    let again = serde_json::json!({"Name": "ov2", "Type": "Overlay",
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.231.0.0/16", "Policies": vsid(4100)}]}]});
    let err = w.client(1).post::<cnet_model::Network>("/networks", &again).unwrap_err().to_string();
    assert!(err.contains("VNI 4100") && err.contains(&net.id.to_string()), "{err}");
    assert!(w.client(1).get::<Vec<cnet_model::Network>>("/networks?name=ov2").unwrap().is_empty(), "rolled back");
    // Deleted on B: gone from every host, devices too.
    w.client(1).delete(&format!("/networks/{}", net.id)).unwrap();
    within(5, "the network gone from every host", &w, || {
        (0..3).all(|i| {
            w.client(i).get::<cnet_model::Network>(&format!("/networks/{}", net.id)).is_err()
                && link_details(&w, i, &vxlan).is_none()
        })
    });
}

/// Host `i`'s remote-host entries on `vxlan`: neighbours, FDB, overlay routes.
fn entries(w: &ClusterWorld, i: usize, vxlan: &str) -> (String, String, String) {
    (
        run_in(w, i, &["ip", "-6", "neigh", "show", "dev", vxlan, "nud", "permanent"]),
        run_in(w, i, &["bridge", "fdb", "show", "dev", vxlan]),
        run_in(w, i, &["ip", "route", "show", "proto", "73"]),
    )
}

/// `CMD...` run in host `i`'s namespace: its standard output.
fn run_in(w: &ClusterWorld, i: usize, cmd: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", w.hosts[i].netns))
        .args(cmd)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_remote_host_costs_one_neighbour_one_fdb_entry_and_a_route_per_block_and_a_dead_host_goes() {
    cnet_testkit::require_root!();
    let mut w = ClusterWorld::new(3);
    for i in 0..3 {
        w.start_daemon(i);
    }
    within(10, "three healthy hosts", &w, || (0..3).all(|i| status(&w, i).hosts.len() == 3));
    let def = serde_json::json!({"Name": "ov", "Type": "Overlay",
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.230.0.0/16", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 4200}}]}]}]});
    let net: cnet_model::Network = w.client(0).post("/networks", &def).unwrap();
    let vxlan = format!("cnx{}", &net.bridge_name.clone().unwrap()[3..]);
    within(5, "the network on every host", &w, || (0..3).all(|i| link_details(&w, i, &vxlan).is_some()));

    // B's endpoint takes a block; C's 70 endpoints take two (64 addresses each).
    let host = |i: usize| status(&w, i).host.unwrap();
    let (b, c) = (host(1), host(2));
    let ep = serde_json::json!({"HostComputeNetwork": net.id});
    let b_ep: cnet_model::Endpoint = w.client(1).post("/endpoints", &ep).unwrap();
    for _ in 0..70 {
        w.client(2).post::<cnet_model::Endpoint>("/endpoints", &ep).unwrap();
    }
    let ll = |h: &cnet_model::cluster::ClusterHost| {
        let mac: cnet_model::MacAddr = h.vtep_mac.parse().unwrap();
        cnet_dataplane::netlink::overlay::vtep_link_local(cnet_dataplane::Mac(mac.0)).to_string()
    };
    within(5, "A's entries for B and C", &w, || {
        let (neigh, fdb, routes) = entries(&w, 0, &vxlan);
        neigh.lines().count() == 2
            && neigh.contains(&ll(&b))
            && fdb.contains(&format!("{} dst 10.254.0.2", b.vtep_mac))
            && fdb.contains(&format!("{} dst 10.254.0.3", c.vtep_mac))
            && routes.lines().count() == 3
            && routes.contains(&format!("/26 via inet6 {}", ll(&b)))
    });
    // GET /networks/{id} shows them as RemoteSubnetRoute policies.
    let shown: cnet_model::Network = w.client(0).get(&format!("/networks/{}", net.id)).unwrap();
    let remote: Vec<&cnet_model::RemoteSubnetRoute> = shown
        .policies
        .iter()
        .filter_map(|p| match p {
            cnet_model::NetworkPolicy::RemoteSubnetRoute(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(remote.len(), 3, "{remote:?}");
    assert!(remote.iter().all(|r| r.isolation_id == 4200));
    assert_eq!(remote.iter().filter(|r| r.provider_address.to_string() == "10.254.0.3").count(), 2, "C's two blocks");
    let (_, _, on_b) = entries(&w, 1, &vxlan);
    assert!(!on_b.contains(&ll(&b)) && on_b.contains(&ll(&c)), "B routes to C and not to itself: {on_b}");

    // C dies with its namespace: within its TTL + 2 s A keeps only B's entries
    // (C's blocks wait in etcd to be reclaimed, but nothing routes to them).
    w.destroy_host(2);
    let took = within(w.ttl + 2, "A dropping C's entries", &w, || {
        let (neigh, fdb, routes) = entries(&w, 0, &vxlan);
        !neigh.contains(&ll(&c)) && !fdb.contains(&c.vtep_mac) && routes.lines().count() == 1
    });
    println!("a dead host's kernel entries were gone after {took:?} (lease TTL {} s)", w.ttl);
    let blocks =
        |w: &ClusterWorld| w.etcdctl(&["get", "--prefix", "--keys-only", &format!("/cnet/v1/blocks/{}/", net.id)]);
    assert_eq!(blocks(&w).lines().filter(|l| l.contains('_')).count(), 3, "C's blocks wait for the grace period");
    within(w.block_grace + 5, "C's blocks reclaimed after the grace period", &w, || {
        blocks(&w).lines().filter(|l| l.contains('_')).count() == 1
    });
    let (neigh, fdb, _) = entries(&w, 0, &vxlan);
    assert!(neigh.contains(&ll(&b)) && fdb.contains(&b.vtep_mac), "B's entries untouched");

    // B gives its block back when its endpoint goes: its entries go too.
    w.client(1).delete(&format!("/endpoints/{}", b_ep.id)).unwrap();
    within(5, "A dropping B's entries", &w, || {
        let (neigh, fdb, routes) = entries(&w, 0, &vxlan);
        neigh.trim().is_empty() && !fdb.contains(&b.vtep_mac) && routes.trim().is_empty()
    });
}

#[test]
fn hosts_join_an_etcd_that_demands_tls_client_certificates() {
    cnet_testkit::require_root!();
    let mut w = ClusterWorld::with_tls(2);
    assert!(w.etcd_endpoint().starts_with("https://"));
    for i in 0..2 {
        w.start_daemon(i);
    }
    within(10, "two healthy hosts over TLS", &w, || {
        (0..2).all(|i| {
            let s = status(&w, i);
            s.health == "Healthy" && s.hosts.len() == 2
        })
    });
    // Without its client certificate a host is refused, and says why.
    let plain = std::process::Command::new("nsenter")
        .arg(format!("--net={}", w.host_path(0)))
        .args(["etcdctl", "--endpoints", &w.etcd_endpoint(), "--command-timeout", "2s", "get", "x"])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "etcd answers a client without a certificate");
}

#[test]
fn hosts_join_an_etcd_with_authentication_and_outlive_its_tokens() {
    cnet_testkit::require_root!();
    let mut w = ClusterWorld::new(2);
    // A user that may use /cnet/ only; tokens that expire after 3 s.
    for args in [
        &["user", "add", "root", "--new-user-password", "rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "cnet"],
        &["role", "grant-permission", "cnet", "--prefix=true", "readwrite", "/cnet/"],
        &["user", "add", "cnet", "--new-user-password", "cnetpw"],
        &["user", "grant-role", "cnet", "cnet"],
        &["auth", "enable"],
    ] {
        w.etcdctl(args);
    }
    w.user = Some(("cnet".into(), "cnetpw".into()));
    w.kill_etcd();
    w.etcd_args = vec!["--auth-token-ttl".into(), "3".into()];
    w.start_etcd();
    for i in 0..2 {
        w.start_daemon(i);
    }
    within(10, "two healthy hosts as user cnet", &w, || {
        (0..2).all(|i| status(&w, i).health == "Healthy" && status(&w, i).hosts.len() == 2)
    });
    // Past several token lifetimes: still registered, and etcd operations still work.
    std::thread::sleep(Duration::from_secs(8));
    let def = serde_json::json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [
        {"IpAddressPrefix": "10.232.0.0/16", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 4400}}]}]}]});
    let net: cnet_model::Network = w.client(0).post("/networks", &def).unwrap();
    within(5, "the network on B", &w, || {
        w.client(1).get::<cnet_model::Network>(&format!("/networks/{}", net.id)).is_ok()
    });
    let ep: cnet_model::Endpoint =
        w.client(1).post("/endpoints", &serde_json::json!({"HostComputeNetwork": net.id})).unwrap();
    assert!(!ep.ip_configurations.is_empty());
    assert!((0..2).all(|i| status(&w, i).health == "Healthy"), "{:?}", status(&w, 0));
}
