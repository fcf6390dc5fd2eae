//! Containers on an Overlay network across three hosts (namespaces on an
//! underlay, a cnetd each, a real etcd): they reach each other by TCP, UDP,
//! ICMP and IPv6; a full-size TCP transfer with DF set goes through (the MTU
//! is right); VXLAN from an address that is not a registered host is
//! dropped; concurrent creates on every host never share an address; an
//! etcd restart and a host cut off from etcd converge again.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use cnet_dataplane::netns::run_in;
use cnet_model::{Endpoint, Namespace, Network};
use cnet_testkit::cluster::ClusterWorld;
use cnet_testkit::probe;
use serde_json::json;

/// A healthy world of `n` hosts with dual-stack Overlay network `ov` (VNI `vni`).
fn world(n: usize, vni: u32) -> (ClusterWorld, Network) {
    let mut w = ClusterWorld::new(n);
    for i in 0..n {
        w.start_daemon(i);
    }
    w.within(10, "every host healthy", || {
        (0..n).all(|i| w.status(i).health == "Healthy" && w.status(i).hosts.len() == n)
    });
    let vsid = json!([{"Type": "VSID", "Settings": {"IsolationId": vni}}]);
    let def = json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [
        {"IpAddressPrefix": "10.240.0.0/16", "Policies": vsid},
        {"IpAddressPrefix": "fd40::/64", "Policies": vsid}]}]});
    let net: Network = w.client(0).post("/networks", &def).unwrap();
    w.within(5, "the network on every host", || {
        (0..n).all(|i| w.client(i).get::<Network>(&format!("/networks/{}", net.id)).is_ok())
    });
    (w, net)
}

/// A container on host `i`: a namespace and an endpoint of `net` in it.
fn container(w: &ClusterWorld, i: usize, net: &Network, name: &str) -> (Endpoint, String) {
    let ns: Namespace = w.client(i).post("/namespaces", &json!({"Name": format!("{}-{name}", w.tag)})).unwrap();
    let ep: Endpoint =
        w.client(i).post("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id})).unwrap();
    (ep, ns.netns_path.unwrap())
}

fn ip(ep: &Endpoint, v4: bool) -> String {
    ep.ip_configurations.iter().find(|c| c.ip_address.is_ipv4() == v4).unwrap().ip_address.to_string()
}

fn sock(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[test]
fn containers_on_three_hosts_reach_each_other_and_full_size_packets_fit() {
    cnet_testkit::require_root!();
    let (w, net) = world(3, 5100);
    assert_eq!(net.mtu, Some(1450), "the underlay's 1500 less VXLAN over IPv4");
    let (a, a_ns) = container(&w, 0, &net, "a");
    let (b, b_ns) = container(&w, 1, &net, "b");
    let (c, c_ns) = container(&w, 2, &net, "c");

    // Inside: host prefixes, the gateway on-link, the MTU of the network.
    let addrs = probe_cmd(&a_ns, &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains(&format!("{}/32", ip(&a, true))) && addrs.contains(&format!("{}/128", ip(&a, false))),
        "{addrs}"
    );
    let link = probe_cmd(&b_ns, &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    println!("endpoint addresses: {} {} {}", ip(&a, true), ip(&b, true), ip(&c, true));

    // ICMP, both families, A to B and C, and C to A.
    for (from, to) in [(&a_ns, &b), (&a_ns, &c), (&c_ns, &a)] {
        for v4 in [true, false] {
            let target = ip(to, v4);
            w.within(3, &format!("ping {target}"), || probe::ping(from, &target));
        }
    }
    // TCP and UDP, both families: the server sees the client's own address (no NAT inside the overlay).
    let _tcp4 = probe::tcp_server(&b_ns, "0.0.0.0:7000");
    let _tcp6 = probe::tcp_server(&b_ns, "[::]:7001");
    let _udp4 = probe::udp_server(&c_ns, "0.0.0.0:7002");
    let _udp6 = probe::udp_server(&c_ns, "[::]:7003");
    assert_eq!(probe::tcp_seen_as(&a_ns, &sock(&ip(&b, true), 7000)), Some(ip(&a, true)));
    assert_eq!(probe::tcp_seen_as(&a_ns, &sock(&ip(&b, false), 7001)), Some(ip(&a, false)));
    assert_eq!(probe::udp_seen_as(&a_ns, &sock(&ip(&c, true), 7002)), Some(ip(&a, true)));
    assert_eq!(probe::udp_seen_as(&a_ns, &sock(&ip(&c, false), 7003)), Some(ip(&a, false)));

    // Out of the overlay (to the underlay here): NATed to the host's address.
    let _outside = probe::tcp_server(&w.underlay_path(), "10.254.0.100:7030");
    assert_eq!(probe::tcp_seen_as(&a_ns, "10.254.0.100:7030").as_deref(), Some("10.254.0.1"), "outbound NAT");
    assert_eq!(probe::tcp_seen_as(&c_ns, "10.254.0.100:7030").as_deref(), Some("10.254.0.3"));
    // The host reaches its own containers (through the gateway bridge).
    let _on_a = probe::tcp_server(&a_ns, "0.0.0.0:7031");
    assert_eq!(probe::tcp_seen_as(&w.host_path(0), &sock(&ip(&a, true), 7031)).as_deref(), Some("10.240.0.1"));

    // Full-size packets with DF: 1450-byte IPv4 packets pass, larger ones
    // are refused at the endpoint (not lost in the tunnel).
    let big = probe_out(&a_ns, &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", &ip(&b, true)]);
    assert!(big.status.success(), "a 1450-byte packet with DF: {}", String::from_utf8_lossy(&big.stdout));
    let too_big = probe_out(&a_ns, &["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1423", &ip(&b, true)]);
    assert!(!too_big.status.success(), "1451 bytes exceed the endpoint's MTU");
    // 16 MiB over TCP (DF on every segment), counted by the receiver.
    let sent = 16 << 20;
    for v4 in [true, false] {
        let bind = if v4 { "0.0.0.0:7010" } else { "[::]:7011" };
        let port = if v4 { 7010 } else { 7011 };
        let listener = run_in(&c_ns, move || TcpListener::bind(bind)).unwrap().unwrap();
        let sink = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut n = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            n
        });
        let mut s = probe::tcp_stream(&a_ns, &sock(&ip(&c, v4), port)).expect("connect");
        s.write_all(&vec![7u8; sent]).unwrap();
        drop(s);
        assert_eq!(sink.join().unwrap(), sent, "every byte across the tunnel (IPv4: {v4})");
    }

    // A VXLAN packet to A from an address that is not a registered host,
    // claiming to come from B's container, is dropped; from a registered
    // host's address the same packet is delivered.
    let vtep_mac = w.status(0).host.unwrap().vtep_mac;
    let listener = run_in(&a_ns, || UdpSocket::bind("0.0.0.0:7020")).unwrap().unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let attacker = run_in(&w.underlay_path(), || UdpSocket::bind("10.254.0.100:0")).unwrap().unwrap();
    let packet = vxlan_udp(5100, &vtep_mac, &ip(&b, true), &ip(&a, true), 7020, b"spoofed");
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        attacker.send_to(&packet, "10.254.0.1:4789").unwrap();
    }
    assert!(listener.recv_from(&mut buf).is_err(), "a spoofed VXLAN packet reached the container");
    let counted = w.run_in(0, &["nft", "list", "chain", "inet", "cnet", "tunnels"]);
    let v4_rule = counted.lines().find(|l| l.contains("@vteps4")).unwrap_or_default();
    assert!(v4_rule.contains("packets 3 "), "the tunnels chain dropped all three: {counted}");
    // Registered (a host entry with that provider address): delivered.
    let fake = json!({"ID": "00000000-0000-0000-0000-0000000000ee", "Hostname": "fake",
        "ProviderAddress": "10.254.0.100", "VtepMac": "02:00:00:00:00:ee"});
    w.etcdctl(&["put", "/cnet/v1/hosts/00000000-0000-0000-0000-0000000000ee", &fake.to_string()]);
    w.within(5, "the registered host's packet delivered", || {
        attacker.send_to(&packet, "10.254.0.1:4789").unwrap();
        listener.recv_from(&mut buf).is_ok_and(|(n, _)| &buf[..n] == b"spoofed")
    });
}

fn probe_out(netns: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("nsenter").arg(format!("--net={netns}")).args(args).output().unwrap()
}

fn probe_cmd(netns: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&probe_out(netns, args).stdout).into_owned()
}

/// A VXLAN packet (VNI `vni`) carrying an IPv4 UDP datagram from `src` to
/// `dst:port`, framed to the VTEP MAC `dst_mac`.
fn vxlan_udp(vni: u32, dst_mac: &str, src: &str, dst: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    let mac: cnet_model::MacAddr = dst_mac.parse().unwrap();
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(&mac.0);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0x0b, 0xad, 0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = ip.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn concurrent_creates_on_every_host_never_share_an_address_and_empty_blocks_go_back() {
    cnet_testkit::require_root!();
    let (w, net) = world(3, 5200);
    // 3 hosts × 80 endpoints at once (each host fills a block and claims another).
    let all: Vec<Vec<Endpoint>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let w = &w;
                let id = net.id;
                s.spawn(move || {
                    (0..80)
                        .map(|_| {
                            w.client(i).post::<Endpoint>("/endpoints", &json!({"HostComputeNetwork": id})).unwrap()
                        })
                        .collect::<Vec<Endpoint>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = all.iter().flatten().flat_map(|e| [ip(e, true), ip(e, false)]).collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "no address twice across hosts");
    // Each host's addresses lie in blocks etcd says are its own.
    let view = w.status(0);
    for (i, eps) in all.iter().enumerate() {
        let me = w.status(i).host.unwrap().id;
        let mine: Vec<ipnet::IpNet> = view
            .blocks
            .iter()
            .filter(|b| b.host == me && b.network == net.id)
            .map(|b| b.block.parse().unwrap())
            .collect();
        for e in eps {
            for c in &e.ip_configurations {
                assert!(
                    mine.iter().any(|b| b.contains(&c.ip_address)),
                    "{} outside host {i}'s blocks {mine:?}",
                    c.ip_address
                );
            }
        }
    }
    // All gone: every block is given back, and the network can be deleted.
    for (i, eps) in all.iter().enumerate() {
        for e in eps {
            w.client(i).delete(&format!("/endpoints/{}", e.id)).unwrap();
        }
    }
    let prefix = format!("/cnet/v1/blocks/{}/", net.id);
    w.within(5, "every block given back", || {
        !w.etcdctl(&["get", "--prefix", "--keys-only", &prefix]).lines().any(|l| l.contains('_'))
    });
    w.client(1).delete(&format!("/networks/{}", net.id)).unwrap();
}

#[test]
fn an_etcd_restart_and_a_host_cut_off_from_etcd_converge_with_the_data_path_kept() {
    cnet_testkit::require_root!();
    let (mut w, net) = world(2, 5300);
    let (a, a_ns) = container(&w, 0, &net, "a");
    let (b, _b_ns) = container(&w, 1, &net, "b");
    let b_ip = ip(&b, true);
    w.within(3, "A reaching B", || probe::ping(&a_ns, &b_ip));

    // etcd down: the data path keeps working, new endpoints come from the
    // blocks held, and the cluster is degraded.
    w.kill_etcd();
    w.within(10, "A degraded", || w.status(0).health == "Degraded");
    assert!(probe::ping(&a_ns, &b_ip), "the data path works without etcd");
    let (a2, _) = container(&w, 0, &net, "a2");
    let diag = w.cnet(0, &["diag"]);
    let text = String::from_utf8_lossy(&diag.stdout);
    assert!(text.contains("cluster") && text.contains("Degraded"), "cnet diag says so: {text}");
    w.start_etcd();
    w.within(15, "both healthy again", || (0..2).all(|i| w.status(i).health == "Healthy"));
    let b2_ip = {
        let (b2, _) = container(&w, 1, &net, "b2");
        ip(&b2, true)
    };
    w.within(3, "A reaching B's new container", || probe::ping(&a_ns, &b2_ip));

    // B cut off from etcd (not from A) for longer than its lease: A drops
    // B's routes; B keeps working locally; back, it rejoins with its blocks
    // (within the grace period) and A reaches it again.
    w.run_in(1, &["ip", "route", "add", "blackhole", "10.254.0.100/32"]);
    w.within(w.ttl + 3, "A dropping B", || w.status(0).hosts.len() == 1);
    w.run_in(1, &["ip", "route", "del", "blackhole", "10.254.0.100/32"]);
    w.within(w.ttl + 5, "B registered again", || w.status(0).hosts.len() == 2 && w.status(1).health == "Healthy");
    w.within(5, "A reaching B again", || probe::ping(&a_ns, &b_ip));
    // Nothing lost or doubled: every endpoint's address in its host's blocks, once.
    let status = w.status(0);
    let mut seen = Vec::new();
    for (i, ep) in [(0, &a), (0, &a2), (1, &b)] {
        let me = w.status(i).host.unwrap().id;
        let v4 = ep.ip_configurations[0].ip_address;
        assert!(
            status.blocks.iter().any(|bl| bl.host == me && bl.block.parse::<ipnet::IpNet>().unwrap().contains(&v4)),
            "{v4} in host {i}'s blocks: {:?}",
            status.blocks
        );
        seen.push(v4);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
}

/// `cnet-cni COMMAND` for container `id` in `netns`, against host `i`'s cnetd; (success, stdout JSON).
fn cni(
    w: &ClusterWorld,
    i: usize,
    command: &str,
    id: &str,
    netns: &str,
    conf: &serde_json::Value,
) -> (bool, serde_json::Value) {
    let mut child = std::process::Command::new(cnet_testkit::bin("cnet-cni"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut conf = conf.clone();
    conf["socket"] = json!(w.hosts[i].socket);
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success(), serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[test]
fn the_cni_plugin_puts_containers_on_every_host_on_one_flat_network() {
    cnet_testkit::require_root!();
    let mut w = ClusterWorld::new(2);
    for i in 0..2 {
        w.start_daemon(i);
    }
    w.within(10, "both hosts healthy", || (0..2).all(|i| w.status(i).hosts.len() == 2));
    // The same configuration on every host, as a runtime's CNI directory has it.
    let conf = json!({"cniVersion": "1.0.0", "name": "flat", "type": "cnet-cni",
        "network": {"Type": "Overlay", "Ipams": [{"Type": "Static", "Subnets": [
            {"IpAddressPrefix": "10.250.0.0/16", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 5400}}]}]}]}});
    let mut netns = Vec::new();
    let mut results = Vec::new();
    for i in 0..2 {
        let name = format!("{}-cni{i}", w.tag);
        assert!(std::process::Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        let path = format!("/run/netns/{name}");
        // The second host finds the network the first one made (mirrored from etcd).
        w.within(5, "the network on this host, or none anywhere yet", || {
            i == 0 || w.client(i).get::<Network>("/networks/flat").is_ok()
        });
        let (ok, result) = cni(&w, i, "ADD", &format!("ctr{i}"), &path, &conf);
        assert!(ok, "ADD on host {i}: {result}");
        assert!(result["ips"][0]["address"].as_str().unwrap().ends_with("/32"), "{result}");
        assert_eq!(result["ips"][0]["gateway"], "10.250.0.1");
        netns.push(path);
        results.push(result);
    }
    let b_ip = results[1]["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    w.within(3, "host A's container reaching host B's", || probe::ping(&netns[0], &b_ip));
    for (i, path) in netns.iter().enumerate() {
        let (ok, out) = cni(&w, i, "DEL", &format!("ctr{i}"), path, &conf);
        assert!(ok, "DEL on host {i}: {out}");
    }
    w.within(5, "the blocks given back", || {
        w.status(0).blocks.iter().filter(|b| b.block.starts_with("10.250.")).count() == 0
    });
}

/// The address after `ip` (IPv4): in the same block as a first allocation.
fn next_ip(ip: &str) -> String {
    let v: std::net::Ipv4Addr = ip.parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(v) + 1).to_string()
}

/// Host `n` of the /26 half the /16 away from `ip`'s: a block the host holding
/// only `ip`'s block does not hold (which block a host claims first depends on its ID).
fn far_ip(ip: &str, n: u32) -> String {
    let v: std::net::Ipv4Addr = ip.parse().unwrap();
    std::net::Ipv4Addr::from(((u32::from(v) ^ 0x8000) & !0x3f) + n).to_string()
}

#[test]
fn a_remote_endpoint_behind_a_foreign_vtep_costs_one_neighbour_and_one_fdb_entry() {
    cnet_testkit::require_root!();
    let (w, net) = world(1, 5500);
    let (a, a_ns) = container(&w, 0, &net, "a");
    let vtep_mac = w.status(0).host.unwrap().vtep_mac;
    let vxlan = format!("cnx{}", &net.bridge_name.clone().unwrap()[3..]);
    // A hardware VTEP, played by a plain VXLAN device on the underlay with an address of the overlay.
    let (mac, remote_ip) = ("02:00:00:00:ab:01", far_ip(&ip(&a, true), 5));
    let remote_ip = remote_ip.as_str();
    let script = format!(
        "link add fvx type vxlan id 5500 local 10.254.0.100 dstport 4789 nolearning\nlink set fvx address {mac}\n\
         address add {remote_ip}/32 dev fvx\nlink set fvx up\nroute add {}/32 dev fvx\n\
         neigh replace {} lladdr {vtep_mac} dev fvx nud permanent\n",
        ip(&a, true),
        ip(&a, true)
    );
    let ok = std::process::Command::new("nsenter")
        .arg(format!("--net={}", w.underlay_path()))
        .args([
            "sh",
            "-c",
            &format!(
                "printf '{}' | ip -batch - && bridge fdb append {vtep_mac} dev fvx dst 10.254.0.1",
                script.replace('\n', "\\n")
            ),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(!probe::ping(&a_ns, remote_ip), "not reachable before cnet knows it");

    let def = json!({"HostComputeNetwork": net.id, "Flags": 1, "MacAddress": mac,
        "IpConfigurations": [{"IpAddress": remote_ip}],
        "Policies": [{"Type": "ProviderAddress", "Settings": {"ProviderAddress": "10.254.0.100"}}]});
    let remote: Endpoint = w.client(0).post("/endpoints", &def).unwrap();
    assert_eq!(remote.ip_configurations.len(), 1, "a remote endpoint gets no address of its own");
    w.within(3, "A's container reaching the remote endpoint", || probe::ping(&a_ns, remote_ip));
    let fdb = w.run_in(0, &["bridge", "fdb", "show", "dev", &vxlan]);
    assert!(fdb.contains(&format!("{mac} dst 10.254.0.100")), "{fdb}");
    let routes = w.run_in(0, &["ip", "route", "show", "proto", "73"]);
    assert!(routes.contains(&format!("{remote_ip} via inet6 fe80::")), "{routes}");

    // Refused with what to fix: no provider, a namespace, an address of this host's block.
    for (bad, want) in [
        (
            json!({"HostComputeNetwork": net.id, "Flags": 1, "MacAddress": mac, "IpConfigurations": [{"IpAddress": far_ip(&ip(&a, true), 6)}]}),
            "ProviderAddress",
        ),
        (json!({"HostComputeNetwork": net.id, "Policies": def["Policies"]}), "Flags 1"),
        (
            json!({"HostComputeNetwork": net.id, "Flags": 1, "MacAddress": "02:00:00:00:ab:02",
            "IpConfigurations": [{"IpAddress": next_ip(&ip(&a, true))}], "Policies": def["Policies"]}),
            "which this host holds",
        ),
    ] {
        let err = w.client(0).post::<Endpoint>("/endpoints", &bad).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }

    // Deleted: its entries go, and it is unreachable again.
    w.client(0).delete(&format!("/endpoints/{}", remote.id)).unwrap();
    let fdb = w.run_in(0, &["bridge", "fdb", "show", "dev", &vxlan]);
    assert!(!fdb.contains(mac), "{fdb}");
    assert!(!probe::ping(&a_ns, remote_ip));
}
