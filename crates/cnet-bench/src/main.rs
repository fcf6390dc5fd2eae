//! `cnet-bench`: endpoint setup and teardown latency through cnetd's API,
//! with N endpoints already on the network. Runs a private cnetd in a private
//! test world; touches nothing else. Prints a Markdown table.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use cnet_model::{Endpoint, Namespace};
use cnet_testkit::World;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Measure cnet endpoint create+attach and delete latency at several network sizes")]
struct Args {
    /// Endpoints already present on the network before measuring.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    sizes: Vec<usize>,
    /// Measured create/delete pairs per size and variant.
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

fn main() -> Result<()> {
    let args = Args::parse();
    let w = World::new();
    let c = w.client();
    c.post::<serde_json::Value>(
        "/networks",
        &json!({"Name": "bench", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.128.0.0/16"}]}]}),
    )
    .context("create the network")?;
    let target: Namespace = c.post("/namespaces", &json!({"Name": w.name("target")}))?;

    println!("| endpoints present | port mappings | create+attach median | p99 | min | max | delete median | p99 | min | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut present = 0usize;
    let mut filler_ns: Option<Namespace> = None;
    let mut port = 20000u16;
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
        for mappings in [0u16, 2] {
            let (mut create, mut delete) = (Vec::new(), Vec::new());
            for _ in 0..args.reps {
                let policies: Vec<_> = (0..mappings)
                    .map(|i| json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": port + i, "InternalPort": 80 + i}}))
                    .collect();
                port = port.wrapping_add(2).max(20000);
                let t = Instant::now();
                let ep: Endpoint = c.post(
                    "/endpoints",
                    &json!({"HostComputeNetwork": "bench", "HostComputeNamespace": target.id, "Policies": policies}),
                )?;
                create.push(t.elapsed());
                let t = Instant::now();
                c.delete(&format!("/endpoints/{}", ep.id))?;
                delete.push(t.elapsed());
            }
            let (a, d) = (stats(create), stats(delete));
            println!(
                "| {size} | {mappings} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
    let drift = w.drift();
    anyhow::ensure!(drift.is_empty(), "drift after the benchmark: {drift:?}");
    println!("\n(times in ms; {} reps per row; cnet diag clean afterwards)", args.reps);
    Ok(())
}
