//! What users hit through CNI, each a behaviour the reference plugins
//! (bridge + host-local + portmap) and netavark get right: a container's
//! ports sent with each of its networks, networks the runtime forgot, the
//! IPv4 broadcast address, cnetd restarting under a runtime, pod identity.

use std::time::Duration;

use cnet_model::{Endpoint, ErrorCode, Network};
use cnet_testkit::podman::{nat, Podman};
use cnet_testkit::{probe, World, HOST_IP, LAN_IP};
use serde_json::{json, Value};

mod common;
use common::*;

fn named(w: &World, name: &str, subnet: &str) -> Value {
    let mut c = conf(w, "1.1.0", subnet);
    c["name"] = json!(name);
    c
}

fn with_port(mut c: Value, host_port: u16) -> Value {
    c["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": host_port, "containerPort": 8080, "protocol": "tcp", "hostIP": ""}]});
    c
}

#[test]
fn a_container_on_two_networks_publishes_its_port_once_and_others_are_still_refused() {
    cnet_testkit::require_root!();
    let w = World::new();
    let (a, b) =
        (with_port(named(&w, "twoa", "10.161.0.0/24"), 18201), with_port(named(&w, "twob", "10.162.0.0/24"), 18201));
    let ns = netns(&w, "two");
    assert!(cni(&Call::new("ADD", "two", &ns), &a).0);
    let (ok, r) = cni(&Call { ifname: "eth1", ..Call::new("ADD", "two", &ns) }, &b);
    assert!(ok, "the same port of the same container on a second network: {r}");
    let _srv = probe::tcp_server(&ns, "0.0.0.0:8080");
    let url = format!("{HOST_IP}:18201");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &url), Some(LAN_IP.to_string()));
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Another container asking for the port is refused.
    let other = netns(&w, "other");
    let (ok, r) = cni(&Call::new("ADD", "other", &other), &a);
    assert!(!ok);
    assert!(r["msg"].as_str().unwrap().contains("already published"), "{r}");

    // The first network's attachment goes: the second one serves the port.
    assert!(cni(&Call::new("DEL", "two", &ns), &a).0);
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &url), Some(LAN_IP.to_string()));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert!(cni(&Call { ifname: "eth1", ..Call::new("DEL", "two", &ns) }, &b).0);
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &url), None);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn a_network_made_from_a_config_goes_with_its_last_endpoint_so_its_name_and_subnet_are_free_again() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "auto");
    let net = |name: &str| w.client().get::<Network>(&format!("/networks/{name}"));
    let first = named(&w, "autonet", "10.163.0.0/24");
    assert!(cni(&Call::new("ADD", "auto", &ns), &first).0);
    assert!(net("autonet").unwrap().auto_delete);
    assert!(cni(&Call::new("DEL", "auto", &ns), &first).0);
    assert_eq!(net("autonet").unwrap_err().code(), Some(ErrorCode::NetworkNotFound));
    // The name with a new subnet, then a new name with the old subnet.
    let renumbered = named(&w, "autonet", "10.164.0.0/24");
    let (ok, r) = cni(&Call::new("ADD", "auto", &ns), &renumbered);
    assert!(ok, "{r}");
    assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.164.0."), "{r}");
    assert!(cni(&Call::new("DEL", "auto", &ns), &renumbered).0);
    let renamed = named(&w, "autonet2", "10.164.0.0/24");
    assert!(cni(&Call::new("ADD", "auto", &ns), &renamed).0);
    assert!(cni(&Call::new("DEL", "auto", &ns), &renamed).0);
    // A network an operator made stays.
    let out = w.cnet(&["network", "create", "kept", "--subnet", "10.165.0.0/24"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept = named(&w, "kept", "10.165.0.0/24");
    assert!(cni(&Call::new("ADD", "auto", &ns), &kept).0);
    assert!(cni(&Call::new("DEL", "auto", &ns), &kept).0);
    assert!(!net("kept").unwrap().auto_delete);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn the_containers_ipv4_address_has_its_broadcast_address() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "brd");
    let (ok, r) = cni(&Call::new("ADD", "brd", &ns), &named(&w, "brdnet", "10.166.0.0/24"));
    assert!(ok, "{r}");
    let shown = addr_in(&w, &ns, "eth0");
    assert!(shown.contains("brd 10.166.0.255"), "{shown}");
}

#[test]
fn add_and_del_wait_for_a_restarting_cnetd_and_fail_clearly_when_it_stays_down() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let c = named(&w, "waitnet", "10.167.0.0/24");
    let ns = netns(&w, "wait");
    w.stop_daemon();
    let (c2, ns2) = (c.clone(), ns.clone());
    let add = std::thread::spawn(move || cni(&Call::new("ADD", "wait", &ns2), &c2));
    std::thread::sleep(Duration::from_millis(1500));
    w.start_daemon();
    let (ok, r) = add.join().unwrap();
    assert!(ok, "ADD while cnetd restarted: {r}");
    // Down for longer than the plugin waits: a clear error, soon.
    w.stop_daemon();
    let mut quick = c.clone();
    quick["socketWaitSeconds"] = json!(0.5);
    let started = std::time::Instant::now();
    let (ok, r) = cni(&Call::new("DEL", "wait", &ns), &quick);
    assert!(!ok);
    assert!(r["msg"].as_str().unwrap().contains("cannot reach cnetd"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
    w.start_daemon();
    assert!(cni(&Call::new("DEL", "wait", &ns), &c).0);
}

#[test]
fn pod_identity_from_cni_args_is_kept_and_listed() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "pod");
    let args = "K8S_POD_UID=5f1c7e2a-0d5e-4c8e-9f00-0123456789ab;IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop;K8S_POD_INFRA_CONTAINER_ID=abc";
    let (ok, r) = cni(&Call { args, ..Call::new("ADD", "pod", &ns) }, &named(&w, "podnet", "10.168.0.0/24"));
    assert!(ok, "{r}");
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    let a = &eps[0].annotations;
    assert_eq!(
        (a["K8S_POD_NAMESPACE"].as_str(), a["K8S_POD_NAME"].as_str(), a["K8S_POD_UID"].as_str()),
        ("shop", "web-0", "5f1c7e2a-0d5e-4c8e-9f00-0123456789ab")
    );
    let list = w.cnet(&["endpoint", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("pod shop/web-0"), "{list:?}");
}

#[test]
fn podman_cni_backend_publishes_a_port_of_a_container_on_two_networks_and_leaves_nothing() {
    cnet_testkit::require_root!();
    let w = World::new();
    let podman = Podman::cni(&w, &[("pa", nat("10.169.0.0/24")), ("pb", nat("10.170.0.0/24"))]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "two",
        "--network",
        "pa,pb",
        "-p",
        "18202:8080",
        "localhost/bb",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let answer = probe::http_get_when_up(&w.lan_path(), &format!("{HOST_IP}:18202")).expect("LAN → published port");
    assert!(answer.contains("hello-from-cnet"), "{answer}");
    let inside = podman.ok(&["exec", "two", "ip", "-o", "addr"]);
    assert!(inside.contains("10.169.0.") && inside.contains("10.170.0."), "{inside}");
    podman.ok(&["rm", "-f", "-t", "0", "two"]);
    let nets: Vec<Network> = w.client().get("/networks").unwrap();
    assert!(nets.is_empty(), "the runtime's networks go with their last container: {nets:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn the_bandwidth_capability_caps_the_container_both_ways_and_del_leaves_no_ifb_or_qdisc() {
    cnet_testkit::require_root!();
    let w = World::new();
    let mut c = named(&w, "bwnet", "10.171.0.0/24");
    c["runtimeConfig"] = json!({"bandwidth": {
        "ingressRate": 40_000_000, "ingressBurst": 1_000_000, "egressRate": 20_000_000, "egressBurst": 1_000_000}});
    let ns = netns(&w, "bw");
    let (ok, r) = cni(&Call::new("ADD", "bw", &ns), &c);
    assert!(ok, "{r}");
    let tc = w.host_tc();
    assert_eq!(tc.matches("qdisc tbf 1: dev").count(), 2, "{tc}");
    assert!(tc.contains("qdisc ingress ffff:") && tc.contains(": cnq"), "{tc}");
    // A quick check at the receiver, with one retry: within 10% of each cap.
    for (reverse, cap) in [(true, 40.0), (false, 20.0)] {
        let near = |r: f64| (r - cap).abs() <= cap * 0.1;
        let first = probe::iperf_mbit(&w.lan_path(), &ns, LAN_IP, reverse).expect("iperf3");
        let got = if near(first) { first } else { probe::iperf_mbit(&w.lan_path(), &ns, LAN_IP, reverse).unwrap() };
        eprintln!("bandwidth cap {cap} Mbit/s (reverse {reverse}): measured {first:.2}, {got:.2}");
        assert!(near(got), "cap {cap} Mbit/s, measured {first:.2} then {got:.2}");
    }
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert!(cni(&Call::new("DEL", "bw", &ns), &c).0);
    let tc = w.host_tc();
    assert!(!tc.contains("tbf") && !tc.contains("ingress") && !tc.contains("cnq"), "{tc}");

    // As the bandwidth plugin: a rate without its burst is refused, and nothing is made.
    c["runtimeConfig"] = json!({"bandwidth": {"egressRate": 20_000_000}});
    let (ok, r) = cni(&Call::new("ADD", "bw2", &ns), &c);
    assert!(!ok && r["code"] == 7, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("EgressBurst"), "{r}");
    assert!(w.client().get::<Vec<Endpoint>>("/endpoints").unwrap().is_empty());
}
