//! Name resolution, queried with `dig` from inside the compartments: names,
//! aliases, the network's domain, PTR, isolation between networks,
//! forwarding to an upstream dnsmasq on the LAN (and past a dead one), no
//! forwarding from Internal networks, names that appear and go with their
//! create and delete calls, TCP, `resolv.conf` of namespaces cnetd made,
//! and resolution across a `kill -9` of cnetd.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_model::{Endpoint, Namespace, Network};
use cnet_testkit::{World, LAN_IP};
use serde_json::json;

/// dnsmasq on the LAN as the upstream DNS server: it knows `upstream.test`.
struct Upstream(Child);

impl Upstream {
    fn start(w: &World) -> Upstream {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", w.lan_path()))
            .args(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .arg(format!("--listen-address={LAN_IP}"))
            .args(["--address=/upstream.test/198.18.0.77", "--port=53"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        let up = Upstream(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while dig_in(&w.lan_path(), LAN_IP, &["upstream.test"]).trim() != "198.18.0.77" {
            assert!(Instant::now() < deadline, "the upstream dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dig +short @server ARGS` in the namespace at `netns`.
fn dig_in(netns: &str, server: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["dig", "+short", "+tries=1", "+time=3", &format!("@{server}")])
        .args(args)
        .output()
        .expect("dig (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig @server ARGS` (full answer) in `netns`.
fn dig_full(netns: &str, server: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["dig", "+tries=1", "+time=4", &format!("@{server}")])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn network(w: &World, name: &str, ty: &str, subnet: &str, v6: &str, dns: serde_json::Value) -> Network {
    w.client()
        .post(
            "/networks",
            &json!({"Name": name, "Type": ty, "Dns": dns,
                "Ipams": [{"Subnets": [{"IpAddressPrefix": subnet}, {"IpAddressPrefix": v6}]}]}),
        )
        .unwrap()
}

/// A container: a namespace cnetd makes, and an endpoint named `name` in it.
fn container(w: &World, net: &Network, name: &str, aliases: &[&str]) -> (Endpoint, String, String) {
    let ns_name = w.name(name);
    let ns: Namespace = w.client().post("/namespaces", &json!({"Name": ns_name})).unwrap();
    let ep: Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"Name": name, "HostComputeNetwork": net.id, "HostComputeNamespace": ns.id, "Aliases": aliases}),
        )
        .unwrap();
    (ep, ns.netns_path.unwrap(), ns_name)
}

fn ip(ep: &Endpoint, v4: bool) -> String {
    ep.ip_configurations.iter().find(|c| c.ip_address.is_ipv4() == v4).unwrap().ip_address.to_string()
}

#[test]
fn containers_resolve_each_other_by_name_alias_and_address_and_nothing_of_other_networks() {
    cnet_testkit::require_root!();
    let w = World::new();
    let _up = Upstream::start(&w);
    let net = network(
        &w,
        "web",
        "NAT",
        "10.79.0.0/24",
        "fd00:79::/64",
        json!({"Domain": "cnet.test", "ServerList": [LAN_IP]}),
    );
    let other = network(&w, "other", "NAT", "10.80.0.0/24", "fd00:80::/64", json!({}));
    let (web, web_ns, web_ns_name) = container(&w, &net, "web", &["www"]);
    let (db, _db_ns, _) = container(&w, &net, "db", &["store", "shared"]);
    let (_cache, _, _) = container(&w, &net, "cache", &["shared"]);
    let (_secret, secret_ns, _) = container(&w, &other, "secret", &[]);
    let gw = "10.79.0.1";

    // The endpoint's resolver configuration: the gateway, the domain.
    let dns = web.dns.clone().expect("Dns");
    assert_eq!(dns.server_list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), vec![gw, "fd00:79::1"]);
    assert_eq!(dns.search, vec!["cnet.test"]);

    assert_eq!(dig_in(&web_ns, gw, &["db"]).trim(), ip(&db, true));
    assert_eq!(dig_in(&web_ns, gw, &["DB.Cnet.Test"]).trim(), ip(&db, true), "case-insensitive, with the domain");
    assert_eq!(dig_in(&web_ns, gw, &["db", "AAAA"]).trim(), ip(&db, false));
    assert_eq!(dig_in(&web_ns, gw, &["store"]).trim(), ip(&db, true), "an alias");
    let mut shared: Vec<String> = dig_in(&web_ns, gw, &["shared"]).lines().map(String::from).collect();
    shared.sort();
    assert_eq!(shared.len(), 2, "an alias of two endpoints answers with both: {shared:?}");
    assert_eq!(dig_in(&web_ns, gw, &["-x", &ip(&db, true)]).trim(), "db.cnet.test.");
    assert_eq!(dig_in(&web_ns, "fd00:79::1", &["-x", &ip(&db, false)]).trim(), "db.cnet.test.", "over IPv6 too");
    assert_eq!(dig_in(&web_ns, gw, &["+tcp", "db"]).trim(), ip(&db, true), "TCP");
    let full = dig_full(&web_ns, gw, &["db"]);
    assert!(full.contains("status: NOERROR") && full.contains("flags: qr aa"), "{full}");

    // Another network's names stay there; its client cannot ask this network's server.
    assert!(dig_in(&web_ns, gw, &["secret"]).trim().is_empty(), "a name of another network");
    let refused = dig_full(&secret_ns, gw, &["db"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
    assert!(dig_in(&secret_ns, "10.80.0.1", &["db"]).trim().is_empty());

    // Everything else goes upstream.
    assert_eq!(dig_in(&web_ns, gw, &["upstream.test"]).trim(), "198.18.0.77");
    assert_eq!(dig_in(&web_ns, gw, &["+tcp", "upstream.test"]).trim(), "198.18.0.77");

    // The namespace cnetd made has a resolv.conf where `ip netns exec` finds it.
    let conf = std::fs::read_to_string(format!("/etc/netns/{web_ns_name}/resolv.conf")).unwrap();
    assert!(conf.contains("nameserver 10.79.0.1") && conf.contains("search cnet.test"), "{conf}");
    let getent = Command::new("ip").args(["netns", "exec", &web_ns_name, "getent", "ahostsv4", "db"]).output().unwrap();
    assert!(String::from_utf8_lossy(&getent.stdout).contains(&ip(&db, true)), "getent through resolv.conf");

    // `cnet dns` lists the names.
    let out = w.cnet(&["dns", "web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("db.cnet.test") && text.contains("www") && text.contains(&ip(&web, true)), "{text}");
}

#[test]
fn a_name_answers_when_its_create_returns_and_is_gone_when_its_delete_returns() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "web", "NAT", "10.79.0.0/24", "fd00:79::/64", json!({}));
    let (_a, a_ns, _) = container(&w, &net, "a", &[]);
    for i in 0..5 {
        let (b, _, _) = container(&w, &net, &format!("b{i}"), &[]);
        assert_eq!(dig_in(&a_ns, "10.79.0.1", &[&format!("b{i}")]).trim(), ip(&b, true), "right after create");
        w.client().delete(&format!("/endpoints/{}", b.id)).unwrap();
        assert!(dig_in(&a_ns, "10.79.0.1", &[&format!("b{i}")]).trim().is_empty(), "right after delete");
    }
}

#[test]
fn a_dead_upstream_is_passed_over_quickly_and_internal_networks_never_forward() {
    cnet_testkit::require_root!();
    let w = World::new();
    let _up = Upstream::start(&w);
    // 198.18.0.250 answers nothing: the next server is asked.
    let net =
        network(&w, "web", "NAT", "10.79.0.0/24", "fd00:79::/64", json!({"ServerList": ["198.18.0.250", LAN_IP]}));
    let (_a, a_ns, _) = container(&w, &net, "a", &[]);
    let t = Instant::now();
    assert_eq!(dig_in(&a_ns, "10.79.0.1", &["upstream.test"]).trim(), "198.18.0.77");
    assert!(t.elapsed() < Duration::from_secs(3), "past the dead server in {:?}", t.elapsed());
    // Only dead servers: SERVFAIL, quickly, instead of a hang.
    let dead = network(&w, "dead", "NAT", "10.81.0.0/24", "fd00:81::/64", json!({"ServerList": ["198.18.0.250"]}));
    let (_d, d_ns, _) = container(&w, &dead, "d", &[]);
    let t = Instant::now();
    let out = dig_full(&d_ns, "10.81.0.1", &["upstream.test"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(3), "SERVFAIL after {:?}", t.elapsed());
    // Internal: its own names, nothing forwarded.
    let internal = network(&w, "inner", "Internal", "10.82.0.0/24", "fd00:82::/64", json!({"ServerList": [LAN_IP]}));
    let (_i, i_ns, _) = container(&w, &internal, "i", &[]);
    let (j, _, _) = container(&w, &internal, "j", &[]);
    assert_eq!(dig_in(&i_ns, "10.82.0.1", &["j"]).trim(), ip(&j, true));
    let out = dig_full(&i_ns, "10.82.0.1", &["upstream.test"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    // Private: no host address to serve from, so asking for it is refused.
    let err = w
        .client()
        .post::<Network>(
            "/networks",
            &json!({"Name": "priv", "Type": "Private", "Policies": [{"Type": "AutomaticDNS", "Settings": {"Enable": true}}],
                "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.83.0.0/24"}]}]}),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("AutomaticDNS"), "{err}");
}

#[test]
fn names_resolve_across_a_kill_and_restart_of_cnetd() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "web", "NAT", "10.79.0.0/24", "fd00:79::/64", json!({}));
    let (_a, a_ns, _) = container(&w, &net, "a", &[]);
    let (b, _, _) = container(&w, &net, "b", &[]);
    w.kill_daemon();
    w.start_daemon();
    // The server is back before the API answers.
    assert_eq!(dig_in(&a_ns, "10.79.0.1", &["b"]).trim(), ip(&b, true));
    // Malformed input does not take it down.
    let sock = cnet_dataplane::netns::run_in(&a_ns, || std::net::UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    for junk in [&b"\x00"[..], &[0xffu8; 12][..], &[0x41u8; 3000][..]] {
        let _ = sock.send_to(junk, "10.79.0.1:53");
    }
    assert_eq!(dig_in(&a_ns, "10.79.0.1", &["b"]).trim(), ip(&b, true), "still answering");
}
