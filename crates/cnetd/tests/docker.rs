//! Docker on cnet, end to end: a private dockerd (Debian's docker.io 20.10)
//! in a world's host namespace uses cnetd as its remote network and IPAM
//! driver. Containers reach each other, a published port answers from the
//! LAN, removals leave nothing in cnet, the network outlives a dockerd
//! restart, unknown options are refused and `--internal` has no way out.

mod common;
use common::*;

use std::time::{Duration, Instant};

use cnet_testkit::docker::{self, Docker};
use serde_json::Value;

/// Skips (one line on stderr) when not root or docker.io is missing.
macro_rules! require_docker {
    () => {
        cnet_testkit::require_root!();
        if let Some(why) = docker::missing() {
            docker::report_skip(module_path!(), &why);
            return;
        }
    };
}

/// A world whose cnetd answers the plugin protocol, and a private dockerd
/// beside it with a busybox image `bb`. Dropped in reverse: dockerd first.
fn world() -> (World, Docker) {
    let mut w = World::bare();
    let dk = Docker::new(&w.tag, &w.host_path());
    w.daemon_args = vec!["--docker-plugin-socket".into(), dk.plugin_socket.clone().into()];
    w.start_daemon();
    let mut dk = dk;
    dk.start();
    dk.import_busybox("bb");
    (w, dk)
}

fn ip_of(dk: &Docker, container: &str) -> String {
    dk.ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container])
}

/// Retries `f` for up to 10 s (a container's server needs a moment to listen).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn cnet_list(w: &World, what: &str) -> Vec<Value> {
    let v: Value = w.client().get(what).expect("cnet list");
    v.as_array().cloned().unwrap_or_default()
}

/// cnet's links for endpoints in the host namespace: host ends (`cnv…`) and handed-off ends (`cnd…`).
fn endpoint_links(w: &World) -> Vec<String> {
    let out = w.exec_in(&w.host_path(), &["ip", "-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("cnv") || n.starts_with("cnd"))
        .collect()
}

/// A container command that serves `hello-from-cnet` on port 80.
const PAGE: [&str; 3] = ["sh", "-c", "echo hello-from-cnet > /tmp/index.html && exec httpd -f -p 80 -h /tmp"];

/// A container command that fetches the page at `ip`:80 (busybox's nc:
/// the static busybox 1.35's wget crashes).
fn fetch(ip: &str) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80")
}

fn fetched(out: &std::process::Output) -> bool {
    String::from_utf8_lossy(&out.stdout).contains("hello-from-cnet")
}

#[test]
fn docker_containers_on_a_cnet_network_talk_publish_and_survive_a_dockerd_restart() {
    require_docker!();
    let (mut w, mut dk) = world();
    let p = dk.plugin.clone();
    dk.ok(&["network", "create", "-d", &p, "--ipam-driver", &p, "--subnet", "10.80.0.0/24", "web"]);
    let nets = cnet_list(&w, "/networks");
    assert_eq!(nets.len(), 1, "{nets:?}");
    assert!(nets[0]["Name"].as_str().unwrap().starts_with("docker-"));
    let docker_id = dk.ok(&["network", "inspect", "-f", "{{.Id}}", "web"]);
    assert_eq!(nets[0]["Annotations"]["com.docker.network.id"], docker_id.as_str(), "{nets:?}");

    // Two containers: one serves a page (published on 8080), the other fetches it.
    let web = ["run", "-d", "--name", "c1", "--network", "web", "-p", "8080:80", "bb"];
    dk.ok(&[&web[..], &PAGE[..]].concat());
    dk.ok(&["run", "-d", "--name", "c2", "--network", "web", "bb", "sleep", "1000"]);
    let ip1 = ip_of(&dk, "c1");
    assert!(ip1.starts_with("10.80.0."), "c1 has {ip1:?}");
    assert!(
        eventually(|| fetched(&dk.docker(&["exec", "c2", "sh", "-c", &fetch(&ip1)]))),
        "c2 cannot fetch c1's page at {ip1}"
    );
    // Docker added no second interface (docker_gwbridge): cnet gave the gateway.
    let links = dk.ok(&["exec", "c2", "ip", "-o", "link"]);
    assert!(!links.contains("eth1"), "{links}");
    assert!(dk.ok(&["exec", "c2", "ip", "route"]).contains("default via 10.80.0.1"));
    // The published port, from the LAN at the host's address.
    let page = probe::http_get(&w.lan_path(), &format!("{HOST_IP}:8080"));
    assert!(page.as_deref().unwrap_or_default().contains("hello-from-cnet"), "from the LAN: {page:?}");
    // A fixed address, and a port Docker leaves to the driver (`-p 80`):
    // cnet picks a free host port; `docker port` shows nothing for remote
    // drivers (Docker's limitation), cnet's endpoint has the mapping.
    dk.ok(&[&["run", "-d", "--name", "c4", "--network", "web", "--ip", "10.80.0.77", "-p", "80", "bb"][..], &PAGE[..]]
        .concat());
    assert_eq!(ip_of(&dk, "c4"), "10.80.0.77");
    assert_eq!(dk.ok(&["port", "c4"]), "", "Docker 20.10 shows no ports of remote drivers");
    let eps = cnet_list(&w, "/endpoints");
    let c4 = eps.iter().find(|e| e["IpConfigurations"][0]["IpAddress"] == "10.80.0.77").expect("c4's endpoint");
    let port = c4["Policies"][0]["Settings"]["ExternalPort"].as_u64().expect("a chosen host port");
    assert!((49153..=65535).contains(&port), "{c4}");
    let page = probe::http_get(&w.lan_path(), &format!("{HOST_IP}:{port}"));
    assert!(page.as_deref().unwrap_or_default().contains("hello-from-cnet"), "chosen port {port}: {page:?}");
    dk.ok(&["rm", "-f", "c4"]);

    let eps = cnet_list(&w, "/endpoints");
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert!(eps.iter().all(|e| e["State"] == "Attached"), "{eps:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    for e in &eps {
        let check: Value = w.client().get(&format!("/endpoints/{}/check", e["ID"].as_str().unwrap())).unwrap();
        assert_eq!(check["Drift"], serde_json::json!([]), "a handed-off endpoint checks clean: {check}");
    }

    // cnetd restarts under running containers: it keeps their veths (no
    // orphans) and their published port.
    w.stop_daemon();
    w.start_daemon();
    assert!(eventually(|| fetched(&dk.docker(&["exec", "c2", "sh", "-c", &fetch(&ip1)]))), "after a cnetd restart");
    let page = probe::http_get(&w.lan_path(), &format!("{HOST_IP}:8080"));
    assert!(page.as_deref().unwrap_or_default().contains("hello-from-cnet"), "after a cnetd restart: {page:?}");
    assert!(!w.log().contains("removed_orphans: [\"cnv"), "{}", w.log());
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // Removing the containers removes their endpoints and veths in cnet.
    dk.ok(&["rm", "-f", "c1", "c2"]);
    assert!(cnet_list(&w, "/endpoints").is_empty(), "{:?}", cnet_list(&w, "/endpoints"));
    assert!(eventually(|| endpoint_links(&w).is_empty()), "veths left: {:?}", endpoint_links(&w));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert_eq!(probe::http_get(&w.lan_path(), &format!("{HOST_IP}:8080")), None, "the port is gone");

    // dockerd restarts (it never replays CreateNetwork): the network still works.
    dk.stop();
    dk.start();
    dk.ok(&[&["run", "-d", "--name", "c3", "--network", "web", "bb"][..], &PAGE[..]].concat());
    let ip3 = ip_of(&dk, "c3");
    assert!(
        eventually(|| fetched(&dk.docker(&["run", "--rm", "--network", "web", "bb", "sh", "-c", &fetch(&ip3)]))),
        "after a dockerd restart a new container cannot fetch c3's page at {ip3}"
    );
    dk.ok(&["rm", "-f", "c3"]);
    assert!(cnet_list(&w, "/endpoints").is_empty());

    // `docker network rm` removes the cnet network.
    dk.ok(&["network", "rm", "web"]);
    assert!(cnet_list(&w, "/networks").is_empty(), "{:?}", cnet_list(&w, "/networks"));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn docker_network_options_are_honoured_or_refused_and_internal_networks_have_no_way_out() {
    require_docker!();
    let (w, dk) = world();
    let p = dk.plugin.clone();
    let create =
        |extra: &[&str]| dk.docker(&[&["network", "create", "-d", &p, "--ipam-driver", &p][..], extra].concat());

    let out = create(&["-o", "com.docker.network.foo=1", "--subnet", "10.81.0.0/24", "bad"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown option com.docker.network.foo"), "{err}");
    assert!(cnet_list(&w, "/networks").is_empty());

    // The same subnet is free again, with an option cnet knows; and --internal.
    let out = create(&["--internal", "-o", "com.docker.network.driver.mtu=1400", "--subnet", "10.81.0.0/24", "int"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _lan = probe::tcp_server(&w.lan_path(), "0.0.0.0:7000");
    let inside = dk.ok(&["run", "--rm", "--network", "int", "bb", "sh", "-c", "ip route; cat /sys/class/net/eth0/mtu"]);
    assert!(!inside.contains("default"), "an internal network has no default route: {inside}");
    assert!(inside.contains("10.81.0.0/24") && inside.ends_with("1400"), "{inside}");
    let out = dk.docker(&["run", "--rm", "--network", "int", "bb", "nc", "-w", "2", LAN_IP, "7000"]);
    assert!(!out.status.success(), "an internal network's container reached the LAN");

    // --ipv6: the IPv6 subnet too; the container reaches its gateway over IPv6.
    let out = create(&["--ipv6", "--subnet", "10.83.0.0/24", "--subnet", "fd00:83::/64", "v6"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inside = dk.ok(&[
        "run",
        "--rm",
        "--network",
        "v6",
        "bb",
        "sh",
        "-c",
        "ip -6 addr; ip -6 route; ping -6 -c 1 -W 2 fd00:83::1",
    ]);
    assert!(inside.contains("fd00:83::2/64") && inside.contains("default via fd00:83::1"), "{inside}");
    assert!(inside.contains("1 packets received"), "no IPv6 to the gateway: {inside}");

    // Without --subnet: a pool from cnet's default range.
    let out = create(&["auto"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nets = cnet_list(&w, "/networks");
    let subnets = serde_json::to_string(&nets).unwrap();
    assert!(subnets.contains("10.90.0.0/24"), "{subnets}");
    dk.ok(&["network", "rm", "int", "auto", "v6"]);
    assert!(cnet_list(&w, "/networks").is_empty());
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
