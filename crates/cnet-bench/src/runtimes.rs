//! Whole container runs through the engines, `podman run --rm` and `docker
//! run --rm` of a trivial container (`true`):
//! - Podman on a network of cnet (`cnet-netavark` as its netavark), of its
//!   own stack (the distribution's netavark, iptables in the world's host
//!   namespace), and with `--network none`;
//! - a private dockerd (docker.io 20.10, `--iptables=false`, in its own
//!   world) on a network of cnet's plugin, of its own bridge driver, and
//!   with `--network none`.
//!
//! The network's share of a run is its median less the median without a
//! network. Runs alternate between the stacks, so drift of the machine's
//! load hits each alike.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cnet_testkit::docker::Docker;
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

/// One timed `docker run --rm … true`.
fn docker_once(d: &Docker, network: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = d.docker(&["run", "--rm", "--network", network, "bb", "true"]);
    let took = start.elapsed();
    ensure!(out.status.success(), "docker run --network {network}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(took)
}

/// Times each case `reps` times, interleaved, after one warm-up run each.
fn timed(cases: &[(&str, &dyn Fn() -> Result<Duration>)], reps: usize) -> Result<Vec<Row>> {
    for (_, once) in cases {
        once()?;
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..reps {
        for (i, (_, once)) in cases.iter().enumerate() {
            times[i].push(once()?);
        }
    }
    Ok(cases.iter().zip(times).map(|((name, _), t)| Row { name: name.to_string(), run: stats(t) }).collect())
}

pub fn podman(w: &World, reps: usize) -> Result<Vec<Row>> {
    let cnet = Podman::netavark(w);
    let native = Podman::native(w);
    cnet.ok(&["network", "create", "--subnet", "10.190.0.0/24", "benchcnet"]);
    native.ok(&["network", "create", "--subnet", "10.191.0.0/24", "benchnative"]);
    let rows = timed(
        &[
            ("podman, network none", &|| run_once(&native, "none")),
            ("podman + netavark 1.4 (Podman's own)", &|| run_once(&native, "benchnative")),
            ("podman + cnet-netavark (cnet)", &|| run_once(&cnet, "benchcnet")),
        ],
        reps,
    )?;
    let drift = w.drift();
    ensure!(drift.is_empty(), "cnet drift after the podman runs: {drift:?}");
    Ok(rows)
}

pub fn docker(reps: usize) -> Result<Vec<Row>> {
    let mut w = World::bare();
    let mut d = Docker::new(&w.tag, &w.host_path());
    w.daemon_args = vec!["--docker-plugin-socket".into(), d.plugin_socket.clone().into()];
    w.start_daemon();
    d.start();
    d.import_busybox("bb");
    let plugin = d.plugin.clone();
    d.ok(&["network", "create", "-d", &plugin, "--ipam-driver", &plugin, "--subnet", "10.192.0.0/24", "benchcnet"]);
    d.ok(&["network", "create", "-d", "bridge", "--subnet", "10.193.0.0/24", "benchbridge"]);
    let rows = timed(
        &[
            ("docker, network none", &|| docker_once(&d, "none")),
            ("docker + bridge driver (Docker's own, --iptables=false)", &|| docker_once(&d, "benchbridge")),
            ("docker + cnet plugin (cnet)", &|| docker_once(&d, "benchcnet")),
        ],
        reps,
    )?;
    let drift = w.drift();
    ensure!(drift.is_empty(), "cnet drift after the docker runs: {drift:?}");
    d.ok(&["network", "rm", "benchcnet", "benchbridge"]);
    drop(d);
    Ok(rows)
}

pub fn print(rows: &[Row], reps: usize) {
    println!("\n| engine and network stack | run median | p99 | min | max | network's share (median − none) |");
    println!("|---|---:|---:|---:|---:|---:|");
    // Each engine's rows start with its run without a network.
    let mut none = Duration::ZERO;
    for r in rows {
        let share = if r.name.ends_with("network none") {
            none = r.run.median;
            "—".to_string()
        } else {
            format!("{:.1}", ms(r.run.median) - ms(none))
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {share} |",
            r.name,
            ms(r.run.median),
            ms(r.run.p99),
            ms(r.run.min),
            ms(r.run.max)
        );
    }
    println!("\n(times in ms of `ENGINE run --rm --network N IMAGE true`, start to exit, {reps} runs each, interleaved per engine)");
}
