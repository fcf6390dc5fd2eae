//! `cnet-netavark` driven as Podman drives it (argv, stdin, stdout, exit
//! code) against a private cnetd: the error JSON, teardown of what is
//! already gone, cnetd down, rootless refused, version.

use std::io::Write;
use std::process::{Command, Stdio};

use cnet_model::Endpoint;
use cnet_testkit::{bin, World};
use serde_json::{json, Value};

/// Runs cnet-netavark with Podman 4.3's flags; its exit status and stdout as JSON.
fn netavark(socket: &str, args: &[&str], stdin: &Value) -> (bool, Value) {
    let mut child = Command::new(bin("cnet-netavark"))
        .args(["--config", "/tmp", "--rootless=false", "--aardvark-binary=/usr/lib/podman/aardvark-dns"])
        .args(args)
        .env("CNET_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A call refused before its options are read (rootless, version) may
    // exit first: Podman's Go exec ignores that EPIPE, and so do we.
    match child.stdin.take().unwrap().write_all(stdin.to_string().as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("stdout is one JSON value")
    };
    (out.status.success(), v)
}

fn options(subnet: &str, ip: &str) -> Value {
    json!({"container_id": "c0ffee0000000000000000000000000000000000000000000000000000000001", "container_name": "p1",
      "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 18311, "range": 1, "protocol": "tcp"}],
      "networks": {"pnet": {"static_ips": [ip], "aliases": ["c0ffee000000"], "interface_name": "eth0"}},
      "network_info": {"pnet": {"name": "pnet", "id": "1111111111111111111111111111111111111111111111111111111111111111",
        "driver": "bridge", "network_interface": "podman9", "subnets": [{"subnet": subnet, "gateway": "10.174.0.1"}],
        "ipv6_enabled": false, "internal": false, "dns_enabled": true, "ipam_options": {"driver": "host-local"}}}})
}

#[test]
fn setup_answers_the_status_and_teardown_succeeds_after_the_netns_is_gone() {
    cnet_testkit::require_root!();
    let w = World::new();
    let sock = w.socket.display().to_string();
    let name = w.name("pn");
    assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    let netns = format!("/run/netns/{name}");
    let o = options("10.174.0.0/24", "10.174.0.7");
    let (ok, st) = netavark(&sock, &["setup", &netns], &o);
    assert!(ok, "{st}");
    assert_eq!(
        st["pnet"]["interfaces"]["eth0"]["subnets"][0],
        json!({"gateway": "10.174.0.1", "ipnet": "10.174.0.7/24"})
    );
    assert_eq!(st["pnet"]["dns_server_ips"], json!(["10.174.0.1"]));
    assert_eq!(st["pnet"]["dns_search_domains"], json!(["dns.podman"]));
    // A second setup of the same container (a stale one) replaces it.
    assert!(netavark(&sock, &["setup", &netns], &o).0);
    assert_eq!(w.client().get::<Vec<Endpoint>>("/endpoints").unwrap().len(), 1);
    // The namespace goes first; teardown still cleans up.
    assert!(Command::new("ip").args(["netns", "del", &name]).status().unwrap().success());
    let (ok, out) = netavark(&sock, &["teardown", &netns], &o);
    assert!(ok, "{out}");
    assert!(w.client().get::<Vec<Endpoint>>("/endpoints").unwrap().is_empty());
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    // Teardown of what never was succeeds too.
    assert!(netavark(&sock, &["teardown", "/run/netns/never-was"], &o).0);
}

#[test]
fn errors_are_one_json_object_with_what_to_do() {
    let (ok, out) =
        netavark("/nonexistent/cnetd.sock", &["setup", "/proc/self/ns/net"], &options("10.175.0.0/24", "10.175.0.7"));
    assert!(!ok);
    let msg = out["error"].as_str().unwrap();
    assert!(msg.contains("cannot reach cnetd at /nonexistent/cnetd.sock") && msg.contains("is cnetd running"), "{msg}");
    assert_eq!(out.as_object().unwrap().len(), 1, "Podman decodes only {{\"error\"}}: {out}");
    let (ok, out) =
        netavark("/nonexistent/cnetd.sock", &["setup", "/run/netns/no-such"], &options("10.175.0.0/24", "10.175.0.7"));
    assert!(!ok && out["error"].as_str().unwrap().contains("invalid namespace path"), "{out}");
    let (ok, out) = netavark("/nonexistent/cnetd.sock", &["--rootless=true", "setup", "/proc/self/ns/net"], &json!({}));
    assert!(!ok && out["error"].as_str().unwrap().contains("rootless"), "{out}");
    let (ok, out) = netavark("/x", &["setup", "/proc/self/ns/net"], &json!({"container_id": "a"}));
    assert!(!ok && out["error"].as_str().unwrap().contains("container_name"), "{out}");
    let (ok, out) = netavark("/x", &["version"], &Value::Null);
    assert!(ok && out["version"].is_string(), "{out}");
}
