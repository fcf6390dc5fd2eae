//! Real Podman 4.3 with its netavark backend, `cnet-netavark` installed as
//! its netavark, private configuration and state, inside a test world's
//! host namespace: every container network goes through cnet.

use cnet_model::{Endpoint, Namespace, Network};
use cnet_testkit::podman::Podman;
use cnet_testkit::{probe, World, HOST_IP, LAN_IP};

fn nothing_left(w: &World) {
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "{eps:?}");
    let nss: Vec<Namespace> = w.client().get("/namespaces").unwrap();
    assert!(nss.is_empty(), "{nss:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn podman_containers_on_a_podman_network_reach_each_other_by_ip_and_name_and_publish_ports() {
    cnet_testkit::require_root!();
    let w = World::new();
    let podman = Podman::netavark(&w);
    podman.ok(&["network", "create", "--subnet", "10.171.0.0/24", "web"]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "web",
        "--network-alias",
        "www",
        "-p",
        "18301:8080",
        "localhost/bb",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let eps: Vec<Endpoint> = w.client().get("/endpoints?network=web").unwrap();
    assert_eq!(eps.len(), 1, "{eps:?}");
    let ip = eps[0].ip_configurations[0].ip_address.to_string();
    assert!(ip.starts_with("10.171.0."), "{ip}");
    let inside = podman.ok(&["exec", "srv", "ip", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains(&format!("{ip}/24")), "{inside}");
    // By address, by name and by alias, from another container.
    for target in [ip.as_str(), "srv", "www", "srv.dns.podman"] {
        let page = podman.ok(&[
            "run",
            "--rm",
            "--network",
            "web",
            "localhost/bb",
            "wget",
            "-qO-",
            &format!("http://{target}:8080/"),
        ]);
        assert_eq!(page.trim(), "hello-from-cnet", "{target}");
    }
    // The LAN reaches the published port; containers reach the LAN through NAT.
    let answer = probe::http_get_when_up(&w.lan_path(), &format!("{HOST_IP}:18301")).expect("LAN → published port");
    assert!(answer.contains("hello-from-cnet"), "{answer}");
    let _lan = probe::tcp_greeter(&w.lan_path(), "0.0.0.0:7071");
    let seen = podman.ok(&["run", "--rm", "--network", "web", "localhost/bb", "nc", "-w", "3", LAN_IP, "7071"]);
    assert_eq!(seen.lines().next().unwrap_or(""), HOST_IP);

    // Static address and MAC.
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "pinned",
        "--network",
        "web",
        "--ip",
        "10.171.0.50",
        "--mac-address",
        "02:42:0a:ab:00:32",
        "localhost/bb",
        "sleep",
        "600",
    ]);
    let link = podman.ok(&["exec", "pinned", "ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("02:42:0a:ab:00:32"), "{link}");
    assert!(podman.ok(&["exec", "pinned", "ip", "-o", "addr"]).contains("10.171.0.50/24"));

    // podman network reload succeeds and the port still works.
    podman.ok(&["network", "reload", "--all"]);
    assert!(probe::http_get(&w.lan_path(), &format!("{HOST_IP}:18301")).is_some());

    podman.ok(&["rm", "-f", "-t", "0", "srv", "pinned"]);
    assert!(probe::http_get(&w.lan_path(), &format!("{HOST_IP}:18301")).is_none());
    nothing_left(&w);
    // The network goes with its last container; Podman still has it, and
    // the next container makes it again.
    let nets: Vec<Network> = w.client().get("/networks").unwrap();
    assert!(nets.is_empty(), "{nets:?}");
    podman.ok(&["run", "--rm", "--network", "web", "localhost/bb", "true"]);
    podman.ok(&["network", "rm", "web"]);
    nothing_left(&w);
}

#[test]
fn podman_network_connect_and_disconnect_a_running_container_and_internal_networks_have_no_egress() {
    cnet_testkit::require_root!();
    let w = World::new();
    let podman = Podman::netavark(&w);
    podman.ok(&["network", "create", "--subnet", "10.172.0.0/24", "front"]);
    podman.ok(&["network", "create", "--subnet", "10.173.0.0/24", "--internal", "back"]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--network",
        "front",
        "-p",
        "18302:8080",
        "localhost/bb",
        "sleep",
        "600",
    ]);
    podman.ok(&["network", "connect", "back", "app"]);
    let addrs = podman.ok(&["exec", "app", "ip", "-o", "addr"]);
    assert!(addrs.contains("10.172.0.") && addrs.contains("10.173.0."), "{addrs}");
    assert_eq!(w.client().get::<Vec<Endpoint>>("/endpoints").unwrap().len(), 2);
    podman.ok(&["network", "disconnect", "back", "app"]);
    let addrs = podman.ok(&["exec", "app", "ip", "-o", "addr"]);
    assert!(!addrs.contains("10.173.0."), "{addrs}");
    assert_eq!(w.client().get::<Vec<Endpoint>>("/endpoints").unwrap().len(), 1);

    // Only the internal network: no way out.
    let _lan = probe::tcp_greeter(&w.lan_path(), "0.0.0.0:7072");
    let out = podman.cmd(&["run", "--rm", "--network", "back", "localhost/bb", "nc", "-w", "2", LAN_IP, "7072"]);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "an internal network reached the LAN: {out:?}");
    podman.ok(&["rm", "-f", "-t", "0", "app"]);
    nothing_left(&w);
}

#[test]
fn a_container_on_two_networks_publishes_once_and_rm_after_a_killed_conmon_leaves_nothing() {
    cnet_testkit::require_root!();
    let w = World::new();
    let podman = Podman::netavark(&w);
    podman.ok(&["network", "create", "--subnet", "10.176.0.0/24", "na"]);
    podman.ok(&["network", "create", "--subnet", "10.177.0.0/24", "--subnet", "fd00:177::/64", "nb"]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "multi",
        "--network",
        "na,nb",
        "-p",
        "18303:8080",
        "-p",
        "18304:8080/udp",
        "localhost/bb",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let answer = probe::http_get_when_up(&w.lan_path(), &format!("{HOST_IP}:18303")).expect("LAN → published port");
    assert!(answer.contains("hello-from-cnet"), "{answer}");
    let addrs = podman.ok(&["exec", "multi", "ip", "-o", "addr"]);
    assert!(addrs.contains("10.176.0.") && addrs.contains("10.177.0.") && addrs.contains("fd00:177::"), "{addrs}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    let sandbox = podman.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "multi"]);
    assert!(std::path::Path::new(sandbox.trim()).exists(), "{sandbox}");
    let conmon = podman.ok(&["inspect", "-f", "{{.State.ConmonPid}}", "multi"]);
    assert!(std::process::Command::new("kill").args(["-9", conmon.trim()]).status().unwrap().success());
    podman.ok(&["rm", "-f", "-t", "0", "multi"]);
    nothing_left(&w);
    assert!(!std::path::Path::new(sandbox.trim()).exists(), "Podman's netns {sandbox} is left");
    assert!(probe::http_get(&w.lan_path(), &format!("{HOST_IP}:18303")).is_none());
}

#[test]
fn a_podman_macvlan_network_puts_the_container_on_the_lan_through_cnets_transparent_driver() {
    cnet_testkit::require_root!();
    let w = World::new();
    let podman = Podman::netavark(&w);
    podman.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=uplink0",
        "--subnet",
        "198.18.0.0/24",
        "--gateway",
        LAN_IP,
        "--ip-range",
        "198.18.0.64/26",
        "lanmv",
    ]);
    podman.ok(&["run", "-d", "--name", "onlan", "--network", "lanmv", "localhost/bb", "sleep", "600"]);
    let nets: Vec<Network> = w.client().get("/networks").unwrap();
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0].r#type, cnet_model::NetworkType::Transparent);
    let ep: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    let ip = ep[0].ip_configurations[0].ip_address.to_string();
    assert!(ip.starts_with("198.18.0.") && ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() >= 64, "{ip}");
    // The container is on the LAN: the LAN reaches it directly.
    assert!(probe::ping(&w.lan_path(), &ip), "LAN → container {ip}");
    podman.ok(&["rm", "-f", "-t", "0", "onlan"]);
    nothing_left(&w);
}
