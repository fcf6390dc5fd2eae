//! Real runtimes on a cnet network: Podman with its CNI backend, and
//! containerd's `ctr run --cni`. Each runs with private configuration and
//! state (never the machine's own), inside the test world's host namespace.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use cnet_model::{Endpoint, Namespace};
use cnet_testkit::podman::{conflist, nat, ok, Podman};
use cnet_testkit::{bin, probe, World, HOST_IP, LAN_IP};
use serde_json::json;

#[test]
fn podman_containers_on_a_cnet_network_talk_reach_the_lan_and_publish_ports() {
    cnet_testkit::require_root!();
    let w = World::new();
    let podman = Podman::cni(&w, &[("cnetpod", nat("10.151.0.0/24"))]);
    let _lan = probe::tcp_greeter(&w.lan_path(), "0.0.0.0:7070");

    // A web server with a published port.
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "18090:8080",
        "--network",
        "cnetpod",
        "localhost/bb",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let eps: Vec<Endpoint> = w.client().get("/endpoints?network=cnetpod").unwrap();
    assert_eq!(eps.len(), 1);
    let web_ip = eps[0].ip_configurations[0].ip_address.to_string();
    assert!(web_ip.starts_with("10.151.0."), "{web_ip}");
    let inside = podman.ok(&["exec", "web", "ip", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains(&web_ip), "the container sees its address: {inside}");

    // Another container reaches it by IP, and the LAN through NAT.
    let page = podman.ok(&[
        "run",
        "--rm",
        "--network",
        "cnetpod",
        "localhost/bb",
        "wget",
        "-qO-",
        &format!("http://{web_ip}:8080/"),
    ]);
    assert_eq!(page.trim(), "hello-from-cnet");
    let seen = podman.ok(&["run", "--rm", "--network", "cnetpod", "localhost/bb", "nc", "-w", "3", LAN_IP, "7070"]);
    assert_eq!(seen.lines().next().unwrap_or(""), HOST_IP, "the LAN sees the host's address");

    // A client on the LAN reaches the published port.
    let answer = probe::http_get_when_up(&w.lan_path(), &format!("{HOST_IP}:18090")).expect("LAN → published port");
    assert!(answer.contains("hello-from-cnet"), "{answer}");

    // Static IP and MAC, as Podman sends them (in CNI_ARGS).
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "pinned",
        "--ip",
        "10.151.0.77",
        "--mac-address",
        "0a:58:0a:97:00:4d",
        "--network",
        "cnetpod",
        "localhost/bb",
        "sleep",
        "60",
    ]);
    let pinned = podman.ok(&["exec", "pinned", "ip", "-o", "link", "show", "eth0"]);
    assert!(pinned.contains("0a:58:0a:97:00:4d"), "{pinned}");
    assert!(podman.ok(&["exec", "pinned", "ip", "-o", "addr"]).contains("10.151.0.77/24"));

    // Removing the containers leaves nothing behind.
    podman.ok(&["rm", "-f", "-t", "0", "web", "pinned"]);
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "{eps:?}");
    let nss: Vec<Namespace> = w.client().get("/namespaces").unwrap();
    assert!(nss.is_empty(), "{nss:?}");
    assert!(probe::http_get(&w.lan_path(), &format!("{HOST_IP}:18090")).is_none(), "the published port must be gone");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn a_podman_container_goes_on_the_lan_with_a_dhcp_lease_through_cnet() {
    cnet_testkit::require_root!();
    let w = World::new();
    let dhcp = cnet_testkit::lan::DhcpServer::start(&w, "198.18.0.100", "198.18.0.150", 60);
    let lan = json!({"Type": "Transparent", "Ipams": [{"Type": "Dhcp"}],
                     "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}]});
    let podman = Podman::cni(&w, &[("cnetlan", lan.clone())]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "onlan",
        "--network",
        "cnetlan",
        "localhost/bb",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let eps: Vec<Endpoint> = w.client().get("/endpoints?network=cnetlan").unwrap();
    assert_eq!(eps.len(), 1);
    let ip = eps[0].ip_configurations[0].ip_address.to_string();
    let mac = eps[0].mac_address.unwrap().to_string();
    assert!(dhcp.leases().iter().any(|l| l.contains(&ip) && l.contains(&mac)), "{:?}", dhcp.leases());
    let answer = probe::http_get_when_up(&w.lan_path(), &format!("{ip}:8080"))
        .expect("the LAN reaches the container at its lease");
    assert!(answer.contains("hello-from-cnet"), "{answer}");
    let resolv = podman.ok(&["exec", "onlan", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains(LAN_IP), "the lease's DNS server: {resolv}");
    podman.ok(&["rm", "-f", "-t", "0", "onlan"]);
    assert_eq!(dhcp.count("DHCPRELEASE", &mac), 1, "{}", dhcp.log_text());
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "{eps:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

/// containerd with private root, state and socket, for `ctr`.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: std::process::Child,
}

impl Containerd {
    fn start(w: &World) -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd-ttrpc.sock\"\n"
            ),
        )
        .unwrap();
        let daemon = Command::new("nsenter")
            .arg(format!("--net={}", w.host_path()))
            .arg("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .expect("containerd is missing: apt-get install containerd");
        let c = Containerd { dir, daemon };
        for _ in 0..200 {
            if c.ctr(&["version"]).status.success() {
                return c;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("containerd did not start");
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr").arg("-a").arg(self.sock()).args(["-n", "cnettest"]).args(args).output().unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // runc keeps per-namespace state under /run/containerd/runc whatever
        // containerd's root says; leave nothing there (only removed if empty).
        let _ = std::fs::remove_dir("/run/containerd/runc/cnettest");
    }
}

#[test]
fn containerd_ctr_runs_a_container_on_a_cnet_network_and_cleans_up() {
    cnet_testkit::require_root!();
    let w = World::new();
    let cd = Containerd::start(&w);
    // The image: the busybox root filesystem, through podman save.
    let podman = Podman::cni(&w, &[("unused", nat("10.152.0.0/24"))]);
    let archive = cd.dir.path().join("bb.tar");
    podman.ok(&["save", "--format", "docker-archive", "-o", archive.to_str().unwrap(), "localhost/bb"]);
    ok(cd.ctr(&["images", "import", archive.to_str().unwrap()]), "ctr images import");

    // ctr only reads /etc/cni/net.d and /opt/cni/bin: give it ours in a
    // private mount namespace, never the machine's.
    let netd = cd.dir.path().join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    std::fs::write(netd.join("10-cnetctr.conflist"), conflist(&w, "cnetctr", &nat("10.153.0.0/24"))).unwrap();
    let _lan = probe::tcp_greeter(&w.lan_path(), "0.0.0.0:7071");
    let script = format!(
        "set -e; mount --make-rprivate /; mkdir -p /etc/cni/net.d; mount --bind {netd} /etc/cni/net.d; \
         mount -t tmpfs tmpfs /opt; mkdir -p /opt/cni/bin; cp {plugin} /opt/cni/bin/cnet-cni; \
         ctr -a {sock} -n cnettest run --rm --cni localhost/bb:latest {id} sh -c 'ip -o addr show eth0; nc -w 3 {LAN_IP} 7071'",
        id = w.name("ctr"),
        netd = netd.display(),
        plugin = bin("cnet-cni").display(),
        sock = cd.sock().display(),
    );
    let out = Command::new("nsenter")
        .arg(format!("--net={}", w.host_path()))
        .args(["unshare", "-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = ok(out, "ctr run --cni");
    assert!(text.contains("inet 10.153.0."), "the container got its address: {text}");
    assert!(text.lines().any(|l| l.trim() == HOST_IP), "the LAN saw the host's address: {text}");
    // The task's exit and removal (DEL with an empty CNI_NETNS) leave nothing behind.
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "{eps:?}");
    // The network the plugin made went with its last endpoint.
    let nets: Vec<cnet_model::Network> = w.client().get("/networks").unwrap();
    assert!(nets.is_empty(), "{nets:?}");
    let nss: Vec<Namespace> = w.client().get("/namespaces").unwrap();
    assert!(nss.is_empty(), "{nss:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
