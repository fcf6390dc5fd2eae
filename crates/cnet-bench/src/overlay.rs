//! Overlay networks across hosts (a `ClusterWorld`: host namespaces on an
//! underlay bridge, a cnetd each, a real etcd):
//! - the time from an endpoint create on host A to the first packet from a
//!   container on host B delivered to it — in a block B already routes, and
//!   in a block A has to claim first (etcd transaction, B's watch, B's route);
//! - the same with 50 more (simulated) hosts registered, holding the blocks
//!   of 10,000 endpoints: registrations and blocks written to etcd, so every
//!   real host programs their VTEP entries;
//! - the kernel entries on host A against the number of remote hosts;
//! - the time until A has dropped a dead host's entries;
//! - TCP throughput and request/response between containers on two hosts
//!   against the same between the hosts themselves (the underlay).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cnet_dataplane::netns::run_in;
use cnet_model::{Endpoint, Namespace, Network};
use cnet_testkit::cluster::ClusterWorld;
use serde_json::json;

use crate::datapath::{Datapath, PathResult};
use crate::{ms, stats, Stats};

pub struct Report {
    pub reach: Vec<(String, Stats)>,
    /// (remote hosts, neighbours, FDB entries, routes) on host A.
    pub entries: Vec<(usize, usize, usize, usize)>,
    /// How long host A took to program 50 hosts written to etcd at once.
    pub programmed_50: Duration,
    pub dead_host_gone: Duration,
    pub ttl: u64,
    pub paths: Vec<PathResult>,
    pub seconds: u64,
}

const PORT: u16 = 9000;
const SUBNET: &str = "10.100.0.0/16";

fn ip_of(ep: &Endpoint) -> String {
    ep.ip_configurations[0].ip_address.to_string()
}

/// Creates an endpoint on host 0 in namespace `ns_path` (a UDP socket
/// already bound in it); from the moment the create answers, `probe_ns`
/// (a container on host 1) sends to it every 200 µs. Answers the time from
/// the start of the create to the first datagram received, and the endpoint.
fn reach_once(w: &ClusterWorld, net: &Network, ns: &Namespace, probe_ns: &str) -> Result<(Duration, Endpoint)> {
    let path = ns.netns_path.clone().context("a namespace path")?;
    let sock = run_in(&path, || UdpSocket::bind(("0.0.0.0", PORT)))??;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let start = Instant::now();
    let ep: Endpoint = w
        .client(0)
        .post("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id}))
        .context("create the endpoint on host A")?;
    let created = start.elapsed();
    let target = format!("{}:{PORT}", ip_of(&ep));
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let sender = run_in(probe_ns, || UdpSocket::bind("0.0.0.0:0"))??;
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            let _ = sender.send_to(b"x", &target);
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let mut buf = [0u8; 8];
    let got = sock.recv_from(&mut buf);
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = thread.join();
    got.context("no packet from host B within 5 s")?;
    if took > Duration::from_millis(200) {
        eprintln!("slow: {} answered its create after {created:?}, was reached after {took:?}", ip_of(&ep));
    }
    Ok((took, ep))
}

/// `reps` creates on host A, each reached from host B; with `new_block`,
/// each endpoint is deleted after, so the next one's block is claimed anew
/// (`net` must then have no other endpoint on host A).
fn reach(w: &ClusterWorld, net: &Network, probe_ns: &str, reps: usize, new_block: bool) -> Result<Stats> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns: Namespace = w.client(0).post("/namespaces", &json!({"Name": format!("{}-r{n}", w.tag)}))?;
        let (took, ep) = reach_once(w, net, &ns, probe_ns)?;
        times.push(took);
        if new_block {
            w.client(0).delete(&format!("/endpoints/{}", ep.id))?;
            w.client(0).delete(&format!("/namespaces/{}", ns.id))?;
            // The block goes back in the background: let it, so that the
            // next create claims one.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(stats(times))
}

/// Host A's overlay entries: (neighbours, FDB entries, routes) on `vxlan`.
fn entries(w: &ClusterWorld, vxlan: &str) -> (usize, usize, usize) {
    let count = |cmd: &[&str]| w.run_in(0, cmd).lines().filter(|l| !l.trim().is_empty()).count();
    (
        count(&["ip", "-6", "neigh", "show", "dev", vxlan, "nud", "permanent"]),
        count(&["bridge", "fdb", "show", "dev", vxlan, "self", "permanent"]),
        count(&["ip", "route", "show", "proto", "73", "dev", vxlan])
            + count(&["ip", "-6", "route", "show", "proto", "73", "dev", vxlan]),
    )
}

/// Registers simulated hosts `from..to` (provider addresses on the
/// underlay's subnet that nothing answers), each with 4 blocks of /26 —
/// 200 endpoints' worth — skipping blocks already held.
fn simulate_hosts(w: &ClusterWorld, net: &Network, from: usize, to: usize) {
    let held = w.etcdctl(&["get", "--prefix", "--keys-only", &format!("/cnet/v1/blocks/{}/", net.id)]);
    for h in from..to {
        let id = format!("00000000-0000-0000-0000-{:012x}", 0xbe00 + h);
        let host = json!({"ID": id, "Hostname": format!("sim{h}"), "ProviderAddress": format!("10.254.0.{}", 101 + h),
            "VtepMac": format!("02:be:00:00:{:02x}:{:02x}", h >> 8, h & 0xff)});
        w.etcdctl(&["put", &format!("/cnet/v1/hosts/{id}"), &host.to_string()]);
        for b in 0..4 {
            let key = format!("10.100.{}.{}_26", 100 + h, b * 64);
            if !held.contains(&key) {
                w.etcdctl(&["put", &format!("/cnet/v1/blocks/{}/{key}", net.id), &json!({"Host": id}).to_string()]);
            }
        }
    }
}

/// A plain VXLAN device between the two hosts (VNI 9999, port 4790, no
/// firewall, no bridge, no containers): what the kernel's tunnel costs by
/// itself on this machine.
fn bare_vxlan(w: &ClusterWorld) -> Result<()> {
    for (i, (me, peer)) in [(1, 2), (2, 1)].into_iter().enumerate() {
        let script = format!(
            "link add bvx type vxlan id 9999 local 10.254.0.{me} remote 10.254.0.{peer} dstport 4790\n\
             address add 10.199.0.{me}/24 dev bvx\nlink set bvx mtu 1450 up\n"
        );
        cnet_dataplane::cmd::Cmd::new("ip")
            .args(["-batch", "-"])
            .stdin(script)
            .netns(Some(&w.host_path(i)))
            .run()
            .context("a bare VXLAN device")?;
    }
    Ok(())
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !f() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

pub fn run(reps: usize, seconds: u64) -> Result<Report> {
    let mut w = ClusterWorld::new(2);
    for i in 0..2 {
        w.start_daemon(i);
    }
    wait("two healthy hosts", 15, || (0..2).all(|i| w.status(i).health == "Healthy" && w.status(i).hosts.len() == 2))?;
    // `ov` keeps a block on both hosts; on `fresh` host A holds no block
    // until each measured create claims one.
    let mut nets = Vec::new();
    for (name, vni, subnet) in [("ov", 6000, SUBNET), ("fresh", 6001, "10.101.0.0/16")] {
        let def = json!({"Name": name, "Type": "Overlay", "Ipams": [{"Subnets": [
            {"IpAddressPrefix": subnet, "Policies": [{"Type": "VSID", "Settings": {"IsolationId": vni}}]}]}]});
        let net: Network = w.client(0).post("/networks", &def).context("create the overlay network")?;
        wait("the network on host B", 5, || w.client(1).get::<Network>(&format!("/networks/{}", net.id)).is_ok())?;
        nets.push(net);
    }
    let (net, fresh) = (nets[0].clone(), nets[1].clone());
    let vxlan = format!("cnx{}", &net.bridge_name.clone().unwrap_or_default()[3..]);
    let container = |i: usize, name: &str, net: &Network| -> Result<(Endpoint, String)> {
        let ns: Namespace = w.client(i).post("/namespaces", &json!({"Name": format!("{}-{name}", w.tag)}))?;
        let ep: Endpoint =
            w.client(i).post("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id}))?;
        Ok((ep, ns.netns_path.unwrap_or_default()))
    };
    let (b_ep, b_ns) = container(1, "probe", &net)?;
    let (_, b_fresh_ns) = container(1, "probe2", &fresh)?;
    let (_a_ep, a_ns) = container(0, "filler", &net)?;

    // Throughput between containers across hosts, and between the hosts.
    let dp = Datapath { seconds, round_trips: 2000, tag: w.tag.clone(), lan: w.underlay_path() };
    bare_vxlan(&w)?;
    // This machine's throughput swings by tens of percent from one run to
    // the next: three rounds, the paths interleaved, the median round each.
    let targets = [
        ("underlay: host A → host B", w.host_path(1), w.host_path(0), "10.254.0.2".to_string()),
        (
            "bare kernel VXLAN, host A → host B (no cnet, no containers)",
            w.host_path(1),
            w.host_path(0),
            "10.199.0.2".into(),
        ),
        ("cnet overlay: container on A → container on B", b_ns.clone(), a_ns.clone(), ip_of(&b_ep)),
    ];
    let mut rounds: Vec<Vec<PathResult>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..3 {
        for (i, (name, server, client, target)) in targets.iter().enumerate() {
            rounds[i].push(dp.measure(name, server, client, target, 80)?);
        }
    }
    let paths: Vec<PathResult> = rounds
        .into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| a.gbit_per_s.total_cmp(&b.gbit_per_s));
            r.swap_remove(1)
        })
        .collect();
    let mut report = Report {
        reach: Vec::new(),
        entries: Vec::new(),
        programmed_50: Duration::ZERO,
        dead_host_gone: Duration::ZERO,
        ttl: w.ttl,
        paths,
        seconds,
    };
    report.reach.push(("2 hosts, block known to B".into(), reach(&w, &net, &b_ns, reps, false)?));
    report.reach.push(("2 hosts, new block (claimed by A first)".into(), reach(&w, &fresh, &b_fresh_ns, reps, true)?));

    let (n, f, r) = entries(&w, &vxlan);
    report.entries.push((1, n, f, r));
    simulate_hosts(&w, &net, 0, 10);
    wait("A programming 10 more hosts", 30, || entries(&w, &vxlan).0 == 11)?;
    let (n, f, r) = entries(&w, &vxlan);
    report.entries.push((11, n, f, r));
    // 40 more at once: the time until A has them all.
    let written = Instant::now();
    simulate_hosts(&w, &net, 10, 50);
    let writing = written.elapsed();
    wait("A programming 50 hosts", 60, || entries(&w, &vxlan).0 == 51)?;
    report.programmed_50 = written.elapsed().saturating_sub(writing);
    let (n, f, r) = entries(&w, &vxlan);
    report.entries.push((51, n, f, r));
    report
        .reach
        .push(("52 hosts (10,000 endpoints' blocks), block known".into(), reach(&w, &net, &b_ns, reps, false)?));
    report.reach.push(("52 hosts, new block".into(), reach(&w, &fresh, &b_fresh_ns, reps, true)?));

    // Host B dies with its namespace.
    let b_mac = w.status(1).host.context("host B's registration")?.vtep_mac;
    w.destroy_host(1);
    let died = Instant::now();
    wait("A dropping host B", w.ttl + 10, || !w.run_in(0, &["bridge", "fdb", "show", "dev", &vxlan]).contains(&b_mac))?;
    report.dead_host_gone = died.elapsed();
    Ok(report)
}

pub fn print(r: &Report) {
    println!("\n### Overlay (VXLAN across host namespaces, etcd)\n");
    println!("| endpoint create on host A → first packet from host B | median | p99 | min | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, s) in &r.reach {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(s.median),
            ms(s.p99),
            ms(s.min),
            ms(s.max)
        );
    }
    println!("\n| remote hosts (each with 4 blocks of /26) | neighbours | FDB entries | overlay routes |");
    println!("|---:|---:|---:|---:|");
    for (hosts, n, f, routes) in &r.entries {
        println!("| {hosts} | {n} | {f} | {routes} |");
    }
    println!(
        "\n40 hosts written to etcd at once were all programmed on host A {:.0} ms after the last write.",
        ms(r.programmed_50)
    );
    println!(
        "A dead host (cnetd and namespace gone) was dropped by host A after {:.1} s (lease TTL {} s).",
        r.dead_host_gone.as_secs_f64(),
        r.ttl
    );
    println!("\n| path | TCP throughput | request/response median | p99 |");
    println!("|---|---:|---:|---:|");
    for p in &r.paths {
        println!(
            "| {} | {:.2} Gbit/s | {:.1} µs | {:.1} µs |",
            p.name,
            p.gbit_per_s,
            ms(p.rr.median) * 1000.0,
            ms(p.rr.p99) * 1000.0
        );
    }
    println!("\n(iperf3 -t {}, one TCP stream, the median of three interleaved rounds; GRO on the underlay's veths as on a NIC; VXLAN over IPv4 carries 1450-byte packets in 1500: at most 96.7% of the underlay's goodput)", r.seconds);
}
