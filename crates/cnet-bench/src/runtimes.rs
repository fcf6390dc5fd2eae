//! Whole container runs through the engines: `podman run --rm` of a
//! trivial container (`true`) on a network of cnet (`cnet-netavark` as
//! Podman's netavark) and of Podman's own stack (the distribution's
//! netavark, iptables in the world's host namespace), and with `--network
//! none`. The network's share of a run is its median less the median
//! without a network. Runs alternate between the stacks, so drift of the
//! machine's load hits each alike.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cnet_testkit::podman::Podman;
use cnet_testkit::World;

use crate::{ms, stats, Stats};

pub struct Row {
    pub name: String,
    pub run: Stats,
}

/// One timed `podman run --rm … true`.
fn run_once(p: &Podman, network: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = p.cmd(&["run", "--rm", "--network", network, "localhost/bb", "true"]);
    let took = start.elapsed();
    ensure!(out.status.success(), "podman run --network {network}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(took)
}

pub fn run(w: &World, reps: usize) -> Result<Vec<Row>> {
    let cnet = Podman::netavark(w);
    let native = Podman::native(w);
    cnet.ok(&["network", "create", "--subnet", "10.190.0.0/24", "benchcnet"]);
    native.ok(&["network", "create", "--subnet", "10.191.0.0/24", "benchnative"]);
    let cases: [(&str, &Podman, &str); 3] = [
        ("podman, network none", &native, "none"),
        ("podman + netavark 1.4 (Podman's own)", &native, "benchnative"),
        ("podman + cnet-netavark (cnet)", &cnet, "benchcnet"),
    ];
    // A warm-up run each: image layers and binaries in the page cache.
    for (_, p, net) in &cases {
        run_once(p, net)?;
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..reps {
        for (i, (_, p, net)) in cases.iter().enumerate() {
            times[i].push(run_once(p, net)?);
        }
    }
    let drift = w.drift();
    ensure!(drift.is_empty(), "cnet drift after the podman runs: {drift:?}");
    Ok(cases.iter().zip(times).map(|((name, _, _), t)| Row { name: name.to_string(), run: stats(t) }).collect())
}

pub fn print(rows: &[Row], reps: usize) {
    println!("\n| engine and network stack | run median | p99 | min | max | network's share (median − none) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let none = rows.first().map(|r| r.run.median).unwrap_or_default();
    for (i, r) in rows.iter().enumerate() {
        let share = if i == 0 { "—".to_string() } else { format!("{:.1}", ms(r.run.median) - ms(none)) };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {share} |",
            r.name,
            ms(r.run.median),
            ms(r.run.p99),
            ms(r.run.min),
            ms(r.run.max)
        );
    }
    println!("\n(times in ms of `podman run --rm --network N localhost/bb true`, start to exit, {reps} runs each, interleaved)");
}
