//! Load over time: concurrent API clients creating and deleting endpoints
//! (each with a managed namespace, a published port and a DNS name) for a
//! long while, with cnetd's resident memory sampled as it goes.
//!
//! Errors are counted by kind: `OperationInProgress` and
//! `AddressPoolExhausted` are documented back-pressure, anything else is an
//! error. Memory is compared between the end of the second minute (or of
//! the first fifth, for short runs) and the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

pub struct Soak {
    pub clients: usize,
    pub cycle: Cycle,
    pub elapsed: Duration,
    pub cycles: usize,
    /// Error code (or "transport") → count.
    pub errors: BTreeMap<String, usize>,
    /// (seconds since the start, RSS in MiB).
    pub rss: Vec<(f64, f64)>,
    /// (seconds since the start, the anonymous part of RSS, the heap, in MiB).
    pub anon: Vec<(f64, f64)>,
    /// (seconds since the start, size of the files in cnetd's state directory in KiB).
    pub store: Vec<(f64, u64)>,
    pub drift: usize,
}

/// What each cycle makes and deletes: the whole cycle, or less of it (to
/// find which part leaves memory behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Cycle {
    /// A namespace, and in it an endpoint with a published port.
    Full,
    /// A namespace, and in it an endpoint with no policies.
    Endpoint,
    /// A namespace only.
    Namespace,
}

const BACK_PRESSURE: [&str; 2] = ["OperationInProgress", "AddressPoolExhausted"];

impl Soak {
    /// RSS at the end of the warm-up (2 minutes, or a fifth of a short run) and at the end.
    pub fn rss_after_warmup_and_end(&self) -> Option<(f64, f64)> {
        let warm = (self.elapsed.as_secs_f64() / 5.0).min(120.0);
        let after = self.rss.iter().find(|(t, _)| *t >= warm)?.1;
        Some((after, self.rss.last()?.1))
    }
    pub fn real_errors(&self) -> usize {
        self.errors.iter().filter(|(k, _)| !BACK_PRESSURE.contains(&k.as_str())).map(|(_, n)| n).sum()
    }
}

pub fn run(w: &cnet_testkit::World, clients: usize, duration: Duration, cycle: Cycle) -> Result<Soak> {
    let c = w.client();
    c.post::<Value>(
        "/networks",
        &json!({"Name": "soak", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.145.0.0/16"}]}]}),
    )
    .context("create the soak network")?;
    let pid = w.daemon_pid().context("cnetd runs")?;
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicUsize::new(0));
    let errors: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let (stop, cycles, errors) = (stop.clone(), cycles.clone(), errors.clone());
            let (socket, tag) = (w.socket.clone(), w.tag.clone());
            std::thread::spawn(move || {
                let api = cnet_client::Client::new(&socket);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("{tag}-s{i}-{}", n % 4);
                    let port = 30000 + (i * 4 + n % 4) as u16;
                    n += 1;
                    let policies = match cycle {
                        Cycle::Full => json!([{"Type": "PortMapping",
                            "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": port}}]),
                        _ => json!([]),
                    };
                    let body = json!({"Name": name, "HostComputeNetwork": "soak", "HostComputeNamespace": name,
                        "Policies": policies});
                    let with_endpoint = cycle != Cycle::Namespace;
                    let result = api
                        .post::<Value>("/namespaces", &json!({"Name": name}))
                        .and_then(|_| {
                            if with_endpoint {
                                api.post::<Value>("/endpoints", &body).map(|_| ())
                            } else {
                                Ok(())
                            }
                        })
                        .and_then(|_| if with_endpoint { api.delete(&format!("/endpoints/{name}")) } else { Ok(()) })
                        .and_then(|_| api.delete(&format!("/namespaces/{name}")));
                    match result {
                        Ok(()) => {
                            cycles.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let kind = e.code().map_or("transport".to_string(), |c| c.to_string());
                            *errors.lock().unwrap().entry(kind).or_default() += 1;
                            // Leave nothing behind for the next round of this name.
                            let _ = api.delete(&format!("/endpoints/{name}"));
                            let _ = api.delete(&format!("/namespaces/{name}"));
                        }
                    }
                }
            })
        })
        .collect();
    let (mut rss, mut anon, mut store) = (Vec::new(), Vec::new(), Vec::new());
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(5).min(duration.saturating_sub(started.elapsed())));
        let t = started.elapsed().as_secs_f64();
        if let Some(m) = crate::daemon_cost::rss_mib(pid) {
            rss.push((t, m));
        }
        if let Some(m) = crate::daemon_cost::status_mib(pid, "RssAnon:") {
            anon.push((t, m));
        }
        store.push((t, dir_kib(&w.state_dir)));
    }
    stop.store(true, Ordering::Relaxed);
    for t in workers {
        let _ = t.join();
    }
    let elapsed = started.elapsed();
    let diag: Value = c.get("/diag")?;
    let drift = diag["Drift"].as_array().map_or(0, |d| d.len());
    let errors = errors.lock().unwrap().clone();
    Ok(Soak { clients, cycle, elapsed, cycles: cycles.load(Ordering::Relaxed), errors, rss, anon, store, drift })
}

/// The size of the files in `dir`, in KiB.
/// The samples of `series` nearest each full minute, shown by `show`.
fn each_minute<T: Copy>(series: &[(f64, T)], show: impl Fn(T) -> String) -> String {
    let minutes = series.iter().filter(|(t, _)| (*t / 60.0).fract() * 60.0 < 5.0 && *t >= 55.0);
    minutes.map(|(t, v)| format!("{:.0}′ {}", t / 60.0, show(*v))).collect::<Vec<_>>().join(", ")
}

fn dir_kib(dir: &std::path::Path) -> u64 {
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
    files.filter_map(|f| f.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum::<u64>() / 1024
}

pub fn print(s: &Soak) {
    println!("\n| soak ({} clients, {:.0} s) | value |", s.clients, s.elapsed.as_secs_f64());
    println!("|---|---:|");
    println!(
        "| create+delete cycles ({}) | {} ({:.1}/s) |",
        match s.cycle {
            Cycle::Full => "namespace, endpoint with a published port and a DNS name",
            Cycle::Endpoint => "namespace, endpoint with no policies",
            Cycle::Namespace => "namespace only",
        },
        s.cycles,
        s.cycles as f64 / s.elapsed.as_secs_f64()
    );
    for (kind, n) in &s.errors {
        let what = if BACK_PRESSURE.contains(&kind.as_str()) { "back-pressure" } else { "error" };
        println!("| {what}: {kind} | {n} |");
    }
    println!("| errors other than back-pressure | {} |", s.real_errors());
    if let Some((warm, end)) = s.rss_after_warmup_and_end() {
        println!("| cnetd RSS after the warm-up → at the end (MiB) | {warm:.1} → {end:.1} |");
    }
    let rss = each_minute(&s.rss, |m| format!("{m:.1}"));
    if !rss.is_empty() {
        println!("| cnetd RSS each minute (MiB) | {rss} |");
    }
    let anon = each_minute(&s.anon, |m| format!("{m:.1}"));
    if !anon.is_empty() {
        println!("| of which anonymous (heap) each minute (MiB) | {anon} |");
    }
    let store = each_minute(&s.store, |k| k.to_string());
    if !store.is_empty() {
        println!("| cnetd's store each minute (KiB) | {store} |");
    }
    if let (Some((_, first)), Some((_, last))) = (s.store.first(), s.store.last()) {
        println!("| cnetd's store file, first sample → end (KiB) | {first} → {last} |");
    }
    println!("| drift in cnet diag at the end | {} |", s.drift);
}
