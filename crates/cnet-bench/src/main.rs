//! `cnet-bench`: endpoint setup and teardown latency with N attachments
//! already on the network, side by side for cnet (API and CNI plugin),
//! netavark and the CNI reference chain, in one private test world; churn,
//! data path, scale of rules and the daemon's cost. Prints Markdown tables
//! and, with `--plot`, draws setup latency against N (gnuplot).
//!
//! A Linux bridge takes at most 1,024 ports, so no system can hold more than
//! [`PER_NETWORK`] fillers on one network: beyond that, cnet's fillers go to
//! further networks of the same host (the measured network keeps
//! [`PER_NETWORK`]), and the incumbents' rows are left out.

mod acls;
mod churn;
mod daemon_cost;
mod datapath;
mod dns;
mod overlay;
mod physical;
mod rules;
mod runtimes;
mod soak;
mod systems;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use cnet_testkit::{bin, World};
use serde_json::{json, Value};
use systems::{Attachment, CnetApi, CnetCni, CniChain, Netavark, System};

#[derive(Parser)]
#[command(
    about = "Measure container network setup and teardown latency: cnet against netavark and the CNI reference chain"
)]
struct Args {
    /// Attachments already present on each network before measuring.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    sizes: Vec<usize>,
    /// Measured setup/teardown pairs per row.
    #[arg(long, default_value_t = 100)]
    reps: usize,
    /// Systems to measure: cnet-api, cnet-cni, netavark, cni-chain.
    #[arg(long, value_delimiter = ',', default_value = "cnet-api,cnet-cni,netavark,cni-chain")]
    systems: Vec<String>,
    /// Churn through the CNI plugin with these numbers of concurrent clients (e.g. 1,8,32).
    #[arg(long, value_delimiter = ',')]
    churn: Vec<usize>,
    /// How long each churn run lasts, in seconds.
    #[arg(long, default_value_t = 10)]
    churn_seconds: u64,
    /// Measure cnetd's memory and idle CPU at each size, and its restart time at the largest.
    #[arg(long)]
    daemon_cost: bool,
    /// Draw setup latency against N into this PNG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Measure the data path (iperf3 for this many seconds per path, and request/response).
    #[arg(long)]
    datapath_seconds: Option<u64>,
    /// Publish this many port mappings and measure the scale of rules.
    #[arg(long)]
    rule_scale: Option<usize>,
    /// Give this many endpoints 20 ACL rules each and measure the scale of ACLs.
    #[arg(long)]
    acl_scale: Option<usize>,
    /// Measure the physical-network types (Transparent static/DHCP/VLAN,
    /// L2Bridge) and the CNI macvlan plugins, this many reps per row.
    #[arg(long)]
    physical_reps: Option<usize>,
    /// Measure Overlay networks across hosts (a cluster of host namespaces
    /// and a real etcd), this many reps per row.
    #[arg(long)]
    overlay_reps: Option<usize>,
    /// Measure name resolution (cnet, aardvark-dns, dnsmasq), this many
    /// reps of name creation per row (dnsperf runs --datapath-seconds).
    #[arg(long)]
    dns_reps: Option<usize>,
    /// Measure whole container runs (`podman run --rm`) on cnet and on the
    /// engine's own network stack, this many runs each.
    #[arg(long)]
    runtime_reps: Option<usize>,
    /// How long each dnsperf run lasts.
    #[arg(long, default_value_t = 5)]
    dns_seconds: u64,
    /// Only the load run: `--soak-clients` API clients create and delete
    /// endpoints for this many seconds (issue 15's: 8 clients, 600 s).
    #[arg(long)]
    soak_seconds: Option<u64>,
    #[arg(long, default_value_t = 8)]
    soak_clients: usize,
    /// What each load cycle makes and deletes.
    #[arg(long, value_enum, default_value_t = soak::Cycle::Full)]
    soak_cycle: soak::Cycle,
}

/// Fillers one network holds (a Linux bridge takes at most 1,024 ports).
const PER_NETWORK: usize = 1000;

#[derive(Default)]
struct Measured {
    medians: BTreeMap<&'static str, Vec<(usize, f64)>>,
    costs: Vec<(usize, Option<f64>, Option<f64>)>,
    churns: Vec<churn::Churn>,
    paths: Vec<datapath::PathResult>,
    rules: Option<rules::RuleScale>,
    acls: Option<acls::AclScale>,
    physical: Vec<physical::Row>,
    physical_paths: Vec<datapath::PathResult>,
}

struct Stats {
    median: Duration,
    p99: Duration,
    min: Duration,
    max: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats { median: at(0.5), p99: at(0.99), min: v[0], max: v[v.len() - 1] }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn netns_add(name: &str) -> Result<String> {
    let ok = Command::new("ip").args(["netns", "add", name]).status()?.success();
    anyhow::ensure!(ok, "ip netns add {name} failed");
    Ok(format!("/run/netns/{name}"))
}

fn netns_del(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// `cnet diag` still runs about three `ip` processes per endpoint: beyond
/// this many endpoints it takes minutes, and the run leaves it out.
const DIAG_LIMIT: usize = 20_000;

/// Fails on drift; says whether diag ran.
fn diag_clean(w: &World, when: &str) -> Result<String> {
    let endpoints = w.client().get::<Vec<Value>>("/endpoints")?.len();
    if endpoints > DIAG_LIMIT {
        return Ok(format!("cnet diag not run: {endpoints} endpoints, it is too slow beyond {DIAG_LIMIT}"));
    }
    let drift = w.drift();
    anyhow::ensure!(drift.is_empty(), "cnet drift {when}: {drift:?}");
    Ok("cnet diag clean afterwards".into())
}

struct Bench {
    tag: String,
    client: cnet_client::Client,
    /// cnet networks made for fillers beyond [`PER_NETWORK`].
    overflow: Vec<CnetApi>,
    systems: Vec<Box<dyn System + Send>>,
    /// Filler attachments each system has, by system index.
    filled: Vec<usize>,
    next_port: u16,
    rep: usize,
}

impl Bench {
    fn fill(&mut self, i: usize, size: usize) -> Result<()> {
        while self.filled[i] < size {
            // One netns per attachment, as containers have (netavark cannot
            // put two interfaces of one network in one namespace).
            let n = self.filled[i];
            let path = netns_add(&format!("{}-f{i}-{n}", self.tag))?;
            let a = Attachment { id: format!("fill{i}x{n}"), netns: path, ifname: "eth0".into(), host_ports: vec![] };
            let sys: &mut dyn System = if n < PER_NETWORK {
                self.systems[i].as_mut()
            } else {
                let k = n / PER_NETWORK;
                while self.overflow.len() < k {
                    let name = format!("bench{}", self.overflow.len() + 1);
                    let subnet = format!("10.{}.0.0/16", 128 + self.overflow.len() + 1);
                    self.client.post::<Value>(
                        "/networks",
                        &json!({"Name": name, "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": subnet}]}]}),
                    )?;
                    self.overflow.push(CnetApi { client: self.client.clone(), network: name });
                }
                &mut self.overflow[k - 1]
            };
            sys.setup(&a).with_context(|| format!("{}: filler {n}", sys.name()))?;
            self.filled[i] += 1;
        }
        Ok(())
    }

    /// Times `reps` setups and teardowns. The namespaces are made before and
    /// deleted only when the world goes: the kernel cleans a deleted netns up
    /// in the background, under locks that link changes need too, and with
    /// thousands of namespaces that costs more than the setup being timed.
    fn measure(&mut self, i: usize, mappings: u16, reps: usize) -> Result<(Stats, Stats)> {
        let mut attachments = Vec::new();
        for _ in 0..reps {
            self.rep += 1;
            let host_ports: Vec<u16> = (0..mappings).map(|k| self.next_port + k).collect();
            self.next_port = if self.next_port > 60000 { 20000 } else { self.next_port + mappings.max(1) };
            attachments.push(Attachment {
                id: format!("rep{}", self.rep),
                netns: netns_add(&format!("{}-m{}", self.tag, self.rep))?,
                ifname: "eth0".into(),
                host_ports,
            });
        }
        let (mut setup, mut teardown) = (Vec::new(), Vec::new());
        for a in &attachments {
            let sys = &mut self.systems[i];
            setup.push(sys.setup(a).with_context(|| format!("{} setup", sys.name()))?);
            teardown.push(sys.teardown(a).with_context(|| format!("{} teardown", sys.name()))?);
        }
        Ok((stats(setup), stats(teardown)))
    }
}

fn plot(path: &Path, medians: &BTreeMap<&'static str, Vec<(usize, f64)>>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut script = format!(
        "set terminal pngcairo size 900,540\nset output '{}'\nset title 'Container network setup latency (median, no port mappings)'\n\
         set xlabel 'attachments already on the network (N)'\nset ylabel 'setup latency (ms)'\nset logscale x\nset key left top\nset grid\nplot ",
        path.display()
    );
    let mut parts = Vec::new();
    for (k, (name, points)) in medians.iter().enumerate() {
        let data = dir.path().join(format!("{k}.dat"));
        std::fs::write(&data, points.iter().map(|(n, v)| format!("{n} {v}\n")).collect::<String>())?;
        parts.push(format!("'{}' using 1:2 with linespoints lw 2 title '{name}'", data.display()));
    }
    script.push_str(&parts.join(", "));
    script.push('\n');
    let gp = dir.path().join("plot.gp");
    std::fs::write(&gp, script)?;
    let ok =
        Command::new("gnuplot").arg(&gp).status().context("gnuplot is missing: apt-get install gnuplot-nox")?.success();
    anyhow::ensure!(ok, "gnuplot failed");
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut w = World::new();
    let c = w.client();
    if let Some(secs) = args.soak_seconds {
        let s = soak::run(&w, args.soak_clients, Duration::from_secs(secs), args.soak_cycle)?;
        soak::print(&s);
        anyhow::ensure!(s.real_errors() == 0 && s.drift == 0, "the load run had errors or left drift");
        return Ok(());
    }
    c.post::<Value>(
        "/networks",
        &json!({"Name": "bench", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.128.0.0/16"}]}]}),
    )
    .context("create the cnet network")?;
    let work = tempfile::tempdir()?;
    let mut systems: Vec<Box<dyn System + Send>> = Vec::new();
    for s in &args.systems {
        systems.push(match s.as_str() {
            "cnet-api" => Box::new(CnetApi { client: w.client(), network: "bench".into() }),
            "cnet-cni" => Box::new(CnetCni::nat(bin("cnet-cni"), w.socket.clone(), "bench", "10.128.0.0/16")),
            "netavark" => {
                std::fs::create_dir_all(work.path().join("netavark"))?;
                Box::new(Netavark {
                    binary: "/usr/lib/podman/netavark".into(),
                    config_dir: work.path().join("netavark"),
                    bridge: "nvbench0".into(),
                    prefix: "10.171".into(),
                    next: 0,
                    opts: HashMap::new(),
                })
            }
            "cni-chain" => Box::new(CniChain {
                plugin_dir: "/usr/lib/cni".into(),
                data_dir: work.path().join("host-local"),
                bridge: "cnirefbr0".into(),
                subnet: "10.172.0.0/16".into(),
                results: HashMap::new(),
            }),
            other => anyhow::bail!("unknown system {other}: use cnet-api, cnet-cni, netavark, cni-chain"),
        });
    }
    let names: Vec<&'static str> = systems.iter().map(|s| s.name()).collect();
    let filled = vec![0; systems.len()];
    let mut bench = Bench {
        tag: w.tag.clone(),
        client: w.client(),
        overflow: Vec::new(),
        systems,
        filled,
        next_port: 20000,
        rep: 0,
    };
    // cnet's API and CNI rows share one cnet network: fill it once.
    let shared_cnet: Vec<usize> =
        names.iter().enumerate().filter(|(_, n)| n.starts_with("cnet")).map(|(i, _)| i).collect();

    println!(
        "| N present | system | port mappings | setup median | p99 | min | max | teardown median | p99 | min | max |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let sizes = args.sizes.clone();
    let reps = args.reps;
    let host = w.host_path();
    // Everything runs from a thread inside the test host's namespace, so the
    // incumbents' processes program that namespace and nothing else.
    let (daemon_costs_wanted, daemon_pid) = (args.daemon_cost, w.daemon_pid());
    let (churn_clients, churn_seconds, tag) = (args.churn.clone(), args.churn_seconds, w.tag.clone());
    // Churn has a network of its own, so that N fillers plus 32 clients
    // never exceed one bridge.
    if !args.churn.is_empty() {
        c.post::<Value>(
            "/networks",
            &json!({"Name": "churn", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.140.0.0/16"}]}]}),
        )
        .context("create the churn network")?;
    }
    let churn_plugin = CnetCni::nat(bin("cnet-cni"), w.socket.clone(), "churn", "10.140.0.0/16");
    let (datapath_seconds, rule_scale, lan) = (args.datapath_seconds, args.rule_scale, w.lan_path());
    let acl_scale = args.acl_scale;
    // The physical types' DHCP rows lease from dnsmasq on the LAN.
    let _dhcp =
        args.physical_reps.map(|_| cnet_testkit::lan::DhcpServer::start(&w, "198.18.0.150", "198.18.0.250", 60));
    let phys = args.physical_reps.map(|reps| physical::Physical {
        client: w.client(),
        socket: w.socket.clone(),
        plugin: bin("cnet-cni"),
        tag: w.tag.clone(),
        lan: w.lan_path(),
        work: work.path().to_path_buf(),
        reps,
        datapath_seconds,
    });
    let m = cnet_dataplane::netns::run_in(&host, move || -> Result<Measured> {
        let mut m = Measured::default();
        if let (true, Some(pid)) = (daemon_costs_wanted, daemon_pid) {
            m.costs.push((0, daemon_cost::rss_mib(pid), daemon_cost::idle_cpu_percent(pid, Duration::from_secs(3))));
        }
        // Data path, rules and churn first, on a host with nothing else on
        // it: the fillers below (and the incumbents' iptables rules for
        // theirs) slow every packet and every change on the host down.
        if let Some(seconds) = datapath_seconds {
            let dp = datapath::Datapath { seconds, round_trips: 2000, tag: tag.clone(), lan: lan.clone() };
            m.paths = dp.run(&bench.client, &mut bench.systems)?;
        }
        if let Some(p) = &phys {
            (m.physical, m.physical_paths) = p.run()?;
        }
        if let Some(total) = rule_scale {
            m.rules = Some(rules::run(&bench.client, &tag, &lan, total, reps.clamp(5, 100))?);
        }
        if let Some(fillers) = acl_scale {
            let dp = datapath_seconds.map(|seconds| datapath::Datapath {
                seconds,
                round_trips: 0,
                tag: tag.clone(),
                lan: lan.clone(),
            });
            let mut scale = acls::run(&bench.client, &tag, &lan, fillers, reps.clamp(5, 100), dp.as_ref())?;
            scale.transparent = Some(acls::run_transparent(&bench.client, &tag, fillers, reps.clamp(5, 100))?);
            m.acls = Some(scale);
        }
        let through_cni = || -> Box<dyn System + Send> {
            Box::new(CnetCni {
                plugin: churn_plugin.plugin.clone(),
                socket: churn_plugin.socket.clone(),
                network: churn_plugin.network.clone(),
                block: churn_plugin.block.clone(),
            })
        };
        let through_api = || -> Box<dyn System + Send> {
            Box::new(CnetApi { client: bench.client.clone(), network: "churn".into() })
        };
        for (through, make) in [("CNI plugin", &through_cni as &dyn Fn() -> _), ("API", &through_api)] {
            for &clients in &churn_clients {
                m.churns.push(churn::run(&tag, through, make, clients, Duration::from_secs(churn_seconds))?);
            }
        }
        for &size in &sizes {
            for (i, name) in names.iter().enumerate() {
                if size > PER_NETWORK && !shared_cnet.contains(&i) {
                    println!("| {size} | {name} | – | not measured: more than one Linux bridge holds (1,024 ports) | | | | | | | |");
                    continue;
                }
                if shared_cnet.contains(&i) && shared_cnet[0] != i {
                    bench.filled[i] = bench.filled[shared_cnet[0]];
                } else {
                    bench.fill(i, size)?;
                }
                for mappings in [0u16, 2] {
                    let (s, t) = bench.measure(i, mappings, reps)?;
                    println!(
                        "| {size} | {} | {mappings} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                        name,
                        ms(s.median),
                        ms(s.p99),
                        ms(s.min),
                        ms(s.max),
                        ms(t.median),
                        ms(t.p99),
                        ms(t.min),
                        ms(t.max)
                    );
                    if mappings == 0 {
                        m.medians.entry(*name).or_default().push((size, ms(s.median)));
                    }
                }
            }
            if let (true, Some(pid)) = (daemon_costs_wanted, daemon_pid) {
                m.costs.push((
                    size,
                    daemon_cost::rss_mib(pid),
                    daemon_cost::idle_cpu_percent(pid, Duration::from_secs(3)),
                ));
            }
        }
        Ok(m)
    })??;
    let Measured { medians, costs, churns, paths, rules, acls, physical, physical_paths } = m;
    let diag = diag_clean(&w, "after the benchmark")?;
    println!("\n(times in ms; {reps} reps per row; {diag})");
    if !paths.is_empty() {
        datapath::print(&paths, datapath_seconds.unwrap_or_default(), 2000);
    }
    if let Some(reps) = args.physical_reps {
        physical::print(&physical, reps);
        if !physical_paths.is_empty() {
            datapath::print(&physical_paths, datapath_seconds.unwrap_or_default(), 2000);
        }
    }
    if let Some(r) = &rules {
        rules::print(r, reps.clamp(5, 100));
    }
    if let Some(r) = &acls {
        acls::print(r, reps.clamp(5, 100));
    }
    if let Some(reps) = args.dns_reps {
        let seconds = args.dns_seconds;
        let d = dns::Dns {
            client: w.client(),
            tag: w.tag.clone(),
            host: w.host_path(),
            lan: w.lan_path(),
            work: work.path().to_path_buf(),
            reps,
            seconds,
        };
        dns::print(&d.run()?, reps, seconds);
    }
    if let Some(reps) = args.runtime_reps {
        let mut rows = runtimes::podman(&w, reps)?;
        match cnet_testkit::docker::missing() {
            None => rows.extend(runtimes::docker(reps)?),
            Some(why) => println!("\n(docker rows left out: {why})"),
        }
        runtimes::print(&rows, reps);
    }
    if let Some(reps) = args.overlay_reps {
        // A world of its own (host namespaces and etcd), after the rest.
        overlay::print(&overlay::run(reps, datapath_seconds.unwrap_or(5))?);
    }
    if !churns.is_empty() {
        let present: Vec<Value> = c.get("/endpoints")?;
        println!("\n| through | concurrent clients | ADD+DEL pairs | errors | seconds | pairs per second |");
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &churns {
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.1} |",
                r.through,
                r.clients,
                r.pairs,
                r.errors,
                r.elapsed.as_secs_f64(),
                r.per_second()
            );
        }
        let leaked = present
            .iter()
            .filter(|e| {
                let churned = |v: &Value| v.as_str().is_some_and(|id| id.starts_with("churn"));
                churned(&e["Annotations"]["cni.dev/containerID"]) || churned(&e["Name"])
            })
            .count();
        println!("\n(churn on a network of its own; endpoints leaked afterwards: {leaked}; {diag})");
    }
    if !costs.is_empty() {
        println!("\n| cnet endpoints present | cnetd RSS (MiB) | cnetd idle CPU incl. helpers (% of a core, 3 s) |");
        println!("|---:|---:|---:|");
        for (n, rss, cpu) in &costs {
            println!("| {n} | {:.1} | {:.2} |", rss.unwrap_or(f64::NAN), cpu.unwrap_or(f64::NAN));
        }
        let endpoints: Vec<Value> = c.get("/endpoints")?;
        w.stop_daemon();
        let t = std::time::Instant::now();
        w.start_daemon();
        println!(
            "\ncnetd restart with {} endpoints: {:.0} ms until its socket answers (start-up reconcile included)",
            endpoints.len(),
            ms(t.elapsed())
        );
        println!("({})", diag_clean(&w, "after the restart")?);
    }
    if let Some(path) = &args.plot {
        plot(path, &medians)?;
        println!("plot: {}", path.display());
    }
    Ok(())
}
