//! VM endpoints with real frames: a Guest namespace's endpoint is a TAP on
//! the network's bridge, opened by the test guest (`cnet-guest`, smoltcp)
//! as a VMM would, configured from what the API answers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cnet_model::{Endpoint, Namespace};
use cnet_testkit::bin;
use common::*;
use serde_json::json;

struct Guest(Child);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The guest on `ep`'s TAP, configured from the API's answer.
fn guest(w: &World, ep: &Endpoint, extra: &[&str]) -> (Guest, mpsc::Receiver<String>) {
    let c = &ep.ip_configurations[0];
    let gw = ep.routes[0].next_hop.expect("a gateway").to_string();
    let addr = format!("{}/{}", c.ip_address, c.prefix_length);
    let mut args = vec!["--static", &addr, "--gateway", &gw];
    args.extend_from_slice(extra);
    run_guest(w, ep, &ep.mac_address.unwrap().to_string(), &args)
}

/// The guest on `ep`'s VM NIC (its TAP by name, or its device path) with
/// `mac` and `extra` arguments (none: DHCP).
fn run_guest(w: &World, ep: &Endpoint, mac: &str, extra: &[&str]) -> (Guest, mpsc::Receiver<String>) {
    let tap = ep.vm_device.clone().or_else(|| ep.host_interface_name.clone()).expect("the VM NIC");
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", w.host_path()))
        .arg(bin("cnet-guest"))
        .arg(&tap)
        .arg(mac)
        .args(["--port", "80"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cnet-guest");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Guest(child), rx)
}

fn next_event(lines: &mpsc::Receiver<String>, event: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("no {event} event within {secs} s"));
        if line.contains(&format!("\"{event}\"")) {
            return line;
        }
    }
}

/// Retries `f` for a few seconds: a guest's first frames can race its TAP's carrier.
fn soon(mut f: impl FnMut() -> bool) -> bool {
    (0..10).any(|_| {
        f() || {
            std::thread::sleep(Duration::from_millis(300));
            false
        }
    })
}

#[test]
fn a_vm_endpoint_is_a_tap_a_guest_opens_reachable_through_its_port_mapping_and_its_delete_is_clean() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let net = network(&w, "vms", "NAT", &["10.160.0.0/24"]);
    let vm: Namespace = w.client().post("/namespaces", &json!({"Name": w.name("vm1"), "Type": "Guest"})).unwrap();
    assert!(vm.netns_path.as_deref().unwrap_or_default().is_empty(), "a VM has no netns on the host: {vm:?}");
    let ep: Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"Name": "vm1", "HostComputeNetwork": net.id, "HostComputeNamespace": vm.id,
                    "Policies": [port_map(6, 8088, 80)]}),
        )
        .unwrap();
    let _lan = probe::tcp_greeter(&w.lan_path(), "0.0.0.0:7171");
    let (mut g, lines) = guest(&w, &ep, &["--connect", &format!("{LAN_IP}:7171")]);
    next_event(&lines, "configured", 5);
    let connected = next_event(&lines, "connected", 10);
    assert!(
        connected.contains(&format!("\"greeting\":\"{HOST_IP}\"")),
        "the guest reaches the LAN through NAT: {connected}"
    );
    let ip = ep.ip_configurations[0].ip_address.to_string();

    assert!(soon(|| probe::ping(&w.host_path(), &ip)), "the host reaches the guest");
    let c = container(&w, &net, "peer", json!([]));
    assert!(soon(|| probe::tcp_seen_as(&c.path(), &format!("{ip}:80")).is_some()), "a veth endpoint reaches the guest");
    let seen = probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8088"));
    assert_eq!(seen.as_deref(), Some(LAN_IP), "the LAN reaches the guest through its port mapping");
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // A restart of cnetd keeps the guest's traffic.
    w.kill_daemon();
    w.start_daemon();
    assert!(probe::ping(&w.host_path(), &ip), "after a restart");

    // Deleted while the guest holds the TAP: the guest gets a clean error, nothing leaks.
    w.client().delete(&format!("/endpoints/{}", ep.id)).unwrap();
    next_event(&lines, "device-error", 5);
    assert_eq!(g.0.wait().unwrap().code(), Some(3));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8088")).is_none(), "the mapping is gone");
}

#[test]
fn an_unmodified_guest_configures_itself_by_dhcp_from_cnetd_and_a_spoofed_mac_gets_nothing() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net: cnet_model::Network = w
        .client()
        .post(
            "/networks",
            &json!({"Name": "vmdhcp", "Type": "NAT", "Flags": 2,
                    "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.161.0.0/24"}]}],
                    "Dns": {"ServerList": ["10.161.0.1"], "Domain": "vms.test"}}),
        )
        .unwrap();
    let mut eps = Vec::new();
    for k in 1..=2 {
        let vm: Namespace =
            w.client().post("/namespaces", &json!({"Name": w.name(&format!("vm{k}")), "Type": "Guest"})).unwrap();
        let ep: Endpoint = w
            .client()
            .post(
                "/endpoints",
                &json!({"Name": format!("vm{k}"), "HostComputeNetwork": net.id, "HostComputeNamespace": vm.id}),
            )
            .unwrap();
        eps.push(ep);
    }
    let (_g, lines) = run_guest(&w, &eps[0], &eps[0].mac_address.unwrap().to_string(), &[]);
    let configured = next_event(&lines, "configured", 15);
    let ip = eps[0].ip_configurations[0].ip_address.to_string();
    assert!(configured.contains(&format!("\"address\":\"{ip}/24\"")), "the reserved address: {configured}");
    assert!(configured.contains("\"router\":\"10.161.0.1\""), "{configured}");
    assert!(configured.contains("\"dns\":[\"10.161.0.1\"]"), "{configured}");
    assert!(soon(|| probe::ping(&w.host_path(), &ip)), "the host reaches the guest it configured");

    // A guest on the second VM's TAP that claims another MAC gets no lease.
    let (_spoof, lines) = run_guest(&w, &eps[1], "0a:58:de:ad:be:ef", &[]);
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while let Ok(l) = lines.recv_timeout(until.saturating_duration_since(std::time::Instant::now())) {
        assert!(!l.contains("\"configured\""), "a spoofed MAC must get nothing: {l}");
    }

    // Refused where the host has no address to answer from.
    let err = w
        .client()
        .post::<cnet_model::Network>(
            "/networks",
            &json!({"Name": "priv", "Type": "Private", "Flags": 2, "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.162.0.0/24"}]}]}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("EnableDhcpServer"), "{err}");
}

#[test]
fn a_vm_on_a_transparent_network_sends_only_from_its_own_mac_and_address() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = physical_network(&w, "lanspoof", "Transparent");
    let vm: Namespace = w.client().post("/namespaces", &json!({"Name": w.name("vm"), "Type": "Guest"})).unwrap();
    let ep: Endpoint = w
        .client()
        .post("/endpoints", &json!({"Name": "lanspoof", "HostComputeNetwork": net.id, "HostComputeNamespace": vm.id}))
        .unwrap();
    let spoofed = || {
        let s: cnet_model::stats::EndpointStats = w.client().get(&format!("/endpoints/{}/stats", ep.id)).unwrap();
        s.policy_drops.spoofing
    };
    let c = &ep.ip_configurations[0];
    let (ip, addr) = (c.ip_address.to_string(), format!("{}/{}", c.ip_address, c.prefix_length));
    let gw = ep.routes[0].next_hop.expect("a gateway").to_string();
    let mac = ep.mac_address.unwrap().to_string();
    {
        // A guest that claims another address: the LAN never hears it.
        let (_g, lines) = run_guest(&w, &ep, &mac, &["--static", "198.18.0.223/24", "--gateway", &gw]);
        next_event(&lines, "configured", 5);
        assert!(!probe::ping(&w.lan_path(), "198.18.0.223"), "a spoofed address");
        assert!(spoofed() > 0, "its frames are counted");
    }
    let before = spoofed();
    {
        // Another MAC with its own address: not either.
        let (_g, lines) = run_guest(&w, &ep, "02:aa:bb:cc:dd:ee", &["--static", &addr, "--gateway", &gw]);
        next_event(&lines, "configured", 5);
        assert!(!probe::ping(&w.lan_path(), &ip), "a spoofed MAC");
        assert!(spoofed() > before, "its frames are counted");
    }
    // Its own MAC and address pass.
    let (_g, lines) = guest(&w, &ep, &[]);
    next_event(&lines, "configured", 5);
    assert!(soon(|| probe::ping(&w.lan_path(), &ip)), "the LAN reaches the guest");
    // The guard is on the host (the VMM's side), and goes with the endpoint.
    let listed = || w.exec_in(&w.host_path(), &["nft", "list", "table", "netdev", "cnetguard"]).status.success();
    assert!(listed(), "the host has the macvtap's guard");
    w.client().delete(&format!("/endpoints/{}", ep.id)).unwrap();
    assert!(!listed(), "and not after the endpoint");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn on_a_transparent_network_a_vm_endpoint_is_a_macvtap_and_the_lan_sees_the_guests_own_mac() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net: cnet_model::Network = w
        .client()
        .post(
            "/networks",
            &json!({"Name": "lanvm", "Type": "Transparent",
                    "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}],
                    "Ipams": [{"Subnets": [{"IpAddressPrefix": "198.18.0.0/24"}]}]}),
        )
        .unwrap();
    let vm: Namespace = w
        .client()
        .post("/namespaces", &json!({"Name": w.name("vm"), "Type": "Guest", "VmNic": {"Owner": 65534, "Group": 65534}}))
        .unwrap();
    let ep: Endpoint = w
        .client()
        .post("/endpoints", &json!({"Name": "lanvm", "HostComputeNetwork": net.id, "HostComputeNamespace": vm.id}))
        .unwrap();
    let device = ep.vm_device.clone().expect("the macvtap's device");
    assert!(device.starts_with("/dev/tap"), "{device}");
    use std::os::unix::fs::MetadataExt;
    let node = std::fs::metadata(&device).unwrap();
    assert_eq!((node.uid(), node.gid()), (65534, 65534), "the device is the VMM user's");
    let (mut g, lines) = guest(&w, &ep, &[]);
    next_event(&lines, "configured", 5);
    let (ip, mac) = (ep.ip_configurations[0].ip_address.to_string(), ep.mac_address.unwrap().to_string());
    assert!(soon(|| probe::ping(&w.lan_path(), &ip)), "the LAN reaches the guest");
    assert_eq!(cnet_testkit::lan::lan_neighbour(&w, &ip).as_deref(), Some(mac.as_str()), "by the guest's own MAC");
    assert!(soon(|| probe::ping(&w.host_path(), &ip)), "the host reaches it through the shim");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    w.client().delete(&format!("/endpoints/{}", ep.id)).unwrap();
    next_event(&lines, "device-error", 5);
    assert_eq!(g.0.wait().unwrap().code(), Some(3));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn only_the_vmm_user_a_guest_namespace_names_may_open_its_tap() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "owned", "NAT", &["10.164.0.0/24"]);
    let endpoint = |name: &str, vm_nic: serde_json::Value| -> Endpoint {
        let vm: Namespace =
            w.client().post("/namespaces", &json!({"Name": w.name(name), "Type": "Guest", "VmNic": vm_nic})).unwrap();
        w.client()
            .post("/endpoints", &json!({"Name": name, "HostComputeNetwork": net.id, "HostComputeNamespace": vm.id}))
            .unwrap()
    };
    let owned = endpoint("vmown", json!({"Owner": 65534, "Group": 65534}));
    let other = endpoint("vmother", json!({}));
    // This machine's /dev/net/tun is root's only (no udev rule): the guest
    // gets a world-usable node of the same device in a mount namespace of
    // its own, so that only the TAP's owner check decides.
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("tun");
    assert!(Command::new("mknod").args(["-m", "0666"]).arg(&node).args(["c", "10", "200"]).status().unwrap().success());
    // And a copy of itself that nobody may run wherever the checkout is.
    let guest_bin = dir.path().join("cnet-guest");
    std::fs::copy(bin("cnet-guest"), &guest_bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |ep: &Endpoint| {
        let tap = ep.host_interface_name.clone().unwrap();
        let c = &ep.ip_configurations[0];
        let script = format!(
            "mount --bind {} /dev/net/tun && exec nsenter --net={} setpriv --reuid 65534 --regid 65534 --clear-groups {} {tap} {} --static {}/{}",
            node.display(),
            w.host_path(),
            guest_bin.display(),
            ep.mac_address.unwrap(),
            c.ip_address,
            c.prefix_length
        );
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut g = Guest(as_nobody(&owned));
    let line = BufReader::new(g.0.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    assert!(line.contains("\"configured\""), "the owner opens its TAP: {line}");
    let mut refused = as_nobody(&other);
    if !soon(|| refused.try_wait().unwrap().is_some()) {
        let _ = refused.kill();
    }
    let refused = refused.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&refused.stdout);
    assert!(
        refused.status.code() == Some(3) && err.contains("device-error") && err.contains("not permitted"),
        "anyone else is refused: {err}{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(w.drift().is_empty(), "{:?}", w.drift());

    // The CLI makes the same namespace.
    let name = w.name("vmcli");
    let out = w.cnet(&["-o", "json", "namespace", "create", &name, "--guest", "--vm-owner", "65534", "--multi-queue"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ns: Namespace = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((ns.r#type.as_str(), ns.vm_nic.map(|v| (v.owner, v.multi_queue))), ("Guest", Some((Some(65534), true))));
}

/// A Transparent network on the test LAN's uplink.
fn transparent(w: &World, name: &str, ipam: serde_json::Value) -> cnet_model::Network {
    w.client()
        .post(
            "/networks",
            &json!({"Name": name, "Type": "Transparent",
                    "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}],
                    "Ipams": [ipam]}),
        )
        .unwrap()
}

#[test]
fn a_vm_endpoint_on_a_vlan_is_an_access_port_its_frames_tagged_on_the_trunk() {
    cnet_testkit::require_root!();
    let w = World::new();
    cnet_testkit::lan::lan_vlan_port(&w, "lan0v10", 10, [2, 0, 0, 0, 10, 1], "192.0.2.1/24");
    let net = transparent(&w, "vmvlan", json!({"Subnets": [{"IpAddressPrefix": "192.0.2.0/24"}]}));
    let vm: Namespace = w.client().post("/namespaces", &json!({"Name": w.name("vm"), "Type": "Guest"})).unwrap();
    let ep: Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"Name": "vmvlan", "HostComputeNetwork": net.id, "HostComputeNamespace": vm.id,
                    "Policies": [{"Type": "VLAN", "Settings": {"IsolationId": 10}}]}),
        )
        .unwrap();
    let c = &ep.ip_configurations[0];
    let addr = format!("{}/{}", c.ip_address, c.prefix_length);
    let (mut g, lines) = run_guest(&w, &ep, &ep.mac_address.unwrap().to_string(), &["--static", &addr]);
    next_event(&lines, "configured", 5);
    let cap = cnet_testkit::lan::Capture::start(&w, &w.lan_path(), "lan0", "vlan 10");
    let ip = c.ip_address.to_string();
    assert!(soon(|| probe::ping(&w.lan_path(), &ip)), "the LAN's VLAN 10 reaches the guest");
    let frames = cap.stop();
    assert!(frames.iter().any(|f| f.contains("vlan 10") && f.contains(&ip)), "tagged on the trunk: {frames:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    w.client().delete(&format!("/endpoints/{}", ep.id)).unwrap();
    next_event(&lines, "device-error", 5);
    assert_eq!(g.0.wait().unwrap().code(), Some(3));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn on_a_dhcp_network_an_unmodified_guest_leases_its_address_from_the_lan_itself() {
    cnet_testkit::require_root!();
    let w = World::new();
    let _dhcp = cnet_testkit::lan::DhcpServer::start(&w, "198.18.0.150", "198.18.0.160", 60);
    let net = transparent(&w, "vmdhcp", json!({"Type": "Dhcp"}));
    let vm: Namespace = w.client().post("/namespaces", &json!({"Name": w.name("vm"), "Type": "Guest"})).unwrap();
    let ep: Endpoint = w
        .client()
        .post("/endpoints", &json!({"Name": "vmdhcp", "HostComputeNetwork": net.id, "HostComputeNamespace": vm.id}))
        .unwrap();
    assert!(ep.ip_configurations.is_empty(), "cnet holds no lease for a VM: {ep:?}");
    let (mut g, lines) = run_guest(&w, &ep, &ep.mac_address.unwrap().to_string(), &[]);
    let configured = next_event(&lines, "configured", 15);
    let ip = configured.split("\"address\":\"").nth(1).and_then(|s| s.split('/').next()).unwrap().to_string();
    let leased: std::net::Ipv4Addr = ip.parse().unwrap();
    assert!(
        (leased.octets()[..3] == [198, 18, 0]) && (150..=160).contains(&leased.octets()[3]),
        "leased from the LAN's server's range: {configured}"
    );
    assert!(soon(|| probe::ping(&w.lan_path(), &ip)), "the LAN reaches the guest at its leased address");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    w.client().delete(&format!("/endpoints/{}", ep.id)).unwrap();
    next_event(&lines, "device-error", 5);
    assert_eq!(g.0.wait().unwrap().code(), Some(3));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
