//! `cnet-bench`: endpoint setup and teardown latency with N endpoints already
//! on the network, through cnetd's API and through the CNI plugin binary
//! (process start included), without and with 2 port mappings. Runs a private
//! cnetd in a private test world; touches nothing else. Prints a Markdown table.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use cnet_client::Client;
use cnet_model::{Endpoint, Namespace};
use cnet_testkit::{bin, World};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Measure cnet endpoint setup and teardown latency at several network sizes")]
struct Args {
    /// Endpoints already present on the network before measuring.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    sizes: Vec<usize>,
    /// Measured setup/teardown pairs per row.
    #[arg(long, default_value_t = 100)]
    reps: usize,
    /// Endpoints per filler namespace (each filler endpoint is a real veth).
    #[arg(long, default_value_t = 250)]
    per_namespace: usize,
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

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Port mappings for one rep: `count` ports starting at `*next`.
fn ports(next: &mut u16, count: u16) -> Vec<u16> {
    let out = (0..count).map(|i| *next + i).collect();
    *next = if *next > 60000 { 20000 } else { *next + count };
    out
}

/// One setup+teardown through the API into the namespace `target`.
fn api_pair(c: &Client, target: &Namespace, host_ports: &[u16]) -> Result<(Duration, Duration)> {
    let policies: Vec<Value> = host_ports
        .iter()
        .map(|p| json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": p, "InternalPort": 80}}))
        .collect();
    let t = Instant::now();
    let ep: Endpoint = c.post(
        "/endpoints",
        &json!({"HostComputeNetwork": "bench", "HostComputeNamespace": target.id, "Policies": policies}),
    )?;
    let setup = t.elapsed();
    let t = Instant::now();
    c.delete(&format!("/endpoints/{}", ep.id))?;
    Ok((setup, t.elapsed()))
}

fn run_plugin(command: &str, id: &str, netns: &str, conf: &Value) -> Result<()> {
    let mut child = Command::new(bin("cnet-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("cnet-cni {command} failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

/// One ADD+DEL through the plugin binary into a fresh netns (made and removed untimed).
fn cni_pair(w: &World, n: usize, host_ports: &[u16]) -> Result<(Duration, Duration)> {
    let name = w.name(&format!("cni{n}"));
    let netns = format!("/run/netns/{name}");
    let made = Command::new("ip").args(["netns", "add", &name]).status()?;
    anyhow::ensure!(made.success(), "ip netns add {name} failed");
    let pm: Vec<Value> =
        host_ports.iter().map(|p| json!({"hostPort": p, "containerPort": 80, "protocol": "tcp"})).collect();
    let conf = json!({"cniVersion": "1.1.0", "name": "bench", "type": "cnet-cni", "socket": w.socket,
                      "runtimeConfig": {"portMappings": pm}});
    let id = format!("bench{n}");
    let t = Instant::now();
    run_plugin("ADD", &id, &netns, &conf)?;
    let setup = t.elapsed();
    let t = Instant::now();
    run_plugin("DEL", &id, &netns, &conf)?;
    let teardown = t.elapsed();
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    Ok((setup, teardown))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let w = World::new();
    let c = w.client();
    c.post::<Value>(
        "/networks",
        &json!({"Name": "bench", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.128.0.0/16"}]}]}),
    )
    .context("create the network")?;
    let target: Namespace = c.post("/namespaces", &json!({"Name": w.name("target")}))?;

    println!("| endpoints present | path | port mappings | setup median | p99 | min | max | teardown median | p99 | min | max |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (mut present, mut next_port, mut rep) = (0usize, 20000u16, 0usize);
    let mut filler_ns: Option<Namespace> = None;
    for &size in &args.sizes {
        while present < size {
            if present.is_multiple_of(args.per_namespace) {
                filler_ns = Some(c.post("/namespaces", &json!({"Name": w.name(&format!("fill{present}"))}))?);
            }
            let ns = filler_ns.as_ref().expect("filler namespace");
            c.post::<Endpoint>(
                "/endpoints",
                &json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns.id,
                        "InterfaceName": format!("f{}", present % args.per_namespace)}),
            )?;
            present += 1;
        }
        for path in ["API", "CNI plugin"] {
            for mappings in [0u16, 2] {
                let (mut setup, mut teardown) = (Vec::new(), Vec::new());
                for _ in 0..args.reps {
                    let host_ports = ports(&mut next_port, mappings);
                    rep += 1;
                    let (s, t) = match path {
                        "API" => api_pair(&c, &target, &host_ports)?,
                        _ => cni_pair(&w, rep, &host_ports)?,
                    };
                    setup.push(s);
                    teardown.push(t);
                }
                let (a, d) = (stats(setup), stats(teardown));
                println!(
                    "| {size} | {path} | {mappings} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    ms(a.median),
                    ms(a.p99),
                    ms(a.min),
                    ms(a.max),
                    ms(d.median),
                    ms(d.p99),
                    ms(d.min),
                    ms(d.max)
                );
            }
        }
    }
    let drift = w.drift();
    anyhow::ensure!(drift.is_empty(), "drift after the benchmark: {drift:?}");
    let left: Vec<Endpoint> = c.get("/endpoints")?;
    anyhow::ensure!(left.len() == present, "{} endpoints leaked", left.len() - present);
    println!("\n(times in ms; {} reps per row; no drift and no leaked endpoint afterwards)", args.reps);
    Ok(())
}
