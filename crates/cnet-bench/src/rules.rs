//! Scale of rules: publish many port mappings, then compare adding one more
//! with adding the first, and the first packet of a new connection to a
//! mapping published early with one published late.
//!
//! Adding a mapping is timed as the API call that adds a PortMapping policy
//! to an attached endpoint that has none (the firewall's share of publishing
//! a port, no veth work), the same endpoint before and after the others are
//! published; the first packet as a TCP connect from the LAN to the host port
//! (the handshake's first packet goes through the DNAT map lookup).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cnet_dataplane::netns::run_in;
use cnet_testkit::{probe, HOST_IP};
use serde_json::{json, Value};

use crate::{stats, Stats};

/// Mappings per endpoint while publishing.
const PER_ENDPOINT: usize = 100;
const FIRST_PORT: u16 = 20000;
/// The host port added and removed again for the add timing.
const EXTRA_PORT: u16 = 19999;

pub struct RuleScale {
    pub published: usize,
    pub add_first: Stats,
    pub add_last: Stats,
    pub connect_early: Stats,
    pub connect_late: Stats,
}

fn mapping(external: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": external, "InternalPort": 80}})
}

/// Adds and removes one mapping on `ep` `reps` times; the add times.
fn time_adds(c: &cnet_client::Client, ep: &str, reps: usize) -> Result<Stats> {
    let mut times = Vec::new();
    for _ in 0..reps {
        let add =
            json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [mapping(EXTRA_PORT)]}});
        let t = Instant::now();
        c.patch::<Value>(&format!("/endpoints/{ep}"), &add)?;
        times.push(t.elapsed());
        let remove =
            json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [mapping(EXTRA_PORT)]}});
        c.patch::<Value>(&format!("/endpoints/{ep}"), &remove)?;
    }
    Ok(stats(times))
}

fn time_connects(lan: &str, port: u16, reps: usize) -> Result<Stats> {
    time_connects_to(lan, format!("{HOST_IP}:{port}"), reps)
}

/// `reps` TCP connects from `ns` to `target`, each timed until established.
pub(crate) fn time_connects_to(ns: &str, target: String, reps: usize) -> Result<Stats> {
    let times = run_in(ns, move || -> Result<Vec<Duration>> {
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let s = TcpStream::connect(&target).with_context(|| format!("connect {target}"))?;
            times.push(t.elapsed());
            drop(s);
        }
        Ok(times)
    })??;
    Ok(stats(times))
}

/// Publishes `total` mappings on a NAT network of its own and measures.
pub fn run(c: &cnet_client::Client, tag: &str, lan: &str, total: usize, reps: usize) -> Result<RuleScale> {
    c.post::<Value>(
        "/networks",
        &json!({"Name": "rules", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.150.0.0/16"}]}]}),
    )?;
    let endpoints = total.div_ceil(PER_ENDPOINT).max(1);
    let mut names = Vec::new();
    let mut paths = Vec::new();
    // Endpoint 0 is the probe: it gets the timed mapping and nothing else.
    for k in 0..=endpoints {
        let path = crate::netns_add(&format!("{tag}-r{k}"))?;
        let ns: Value = c.post("/namespaces", &json!({"NetnsPath": path}))?;
        let name = format!("rules{k}");
        c.post::<Value>(
            "/endpoints",
            &json!({"Name": name, "HostComputeNetwork": "rules", "HostComputeNamespace": ns["ID"], "Policies": []}),
        )?;
        names.push(name);
        paths.push(path);
    }
    // The first mapping, on an empty table.
    let add_first = time_adds(c, &names[0], reps)?;
    let mut published = 0;
    for (k, name) in names.iter().enumerate().skip(1).map(|(k, n)| (k - 1, n)) {
        let n = PER_ENDPOINT.min(total - published);
        let policies: Vec<Value> = (0..n).map(|j| mapping(FIRST_PORT + (k * PER_ENDPOINT + j) as u16)).collect();
        let add = json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": policies}});
        c.patch::<Value>(&format!("/endpoints/{name}"), &add).with_context(|| format!("publishing on {name}"))?;
        published += n;
    }
    let add_last = time_adds(c, &names[0], reps)?;
    let last = paths.last().expect("one endpoint at least");
    let _early = probe::tcp_server(&paths[1], "0.0.0.0:80");
    // With one publishing endpoint, early and late mappings lead to the same server.
    let _late = (paths.len() > 2).then(|| probe::tcp_server(last, "0.0.0.0:80"));
    let connect_early = time_connects(lan, FIRST_PORT, reps)?;
    let connect_late = time_connects(lan, FIRST_PORT + (published - 1) as u16, reps)?;
    for name in &names {
        c.delete(&format!("/endpoints/{name}"))?;
    }
    for path in &paths {
        c.delete(&format!("/namespaces/{}", cnet_client::escape(path)))?;
    }
    c.delete("/networks/rules")?;
    Ok(RuleScale { published, add_first, add_last, connect_early, connect_late })
}

pub fn print(r: &RuleScale, reps: usize) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\n| {} port mappings published | median (µs) | p99 | min | max |", r.published);
    println!("|---|---:|---:|---:|---:|");
    for (what, s) in [
        ("add a mapping to an empty table (the 1st)", &r.add_first),
        (&*format!("add a mapping after {} (the {}th)", r.published, r.published + 1), &r.add_last),
        ("first packet: TCP connect to the earliest mapping", &r.connect_early),
        ("first packet: TCP connect to the latest mapping", &r.connect_late),
    ] {
        println!("| {what} | {:.0} | {:.0} | {:.0} | {:.0} |", us(s.median), us(s.p99), us(s.min), us(s.max));
    }
    println!(
        "\n(adding: API call adding one PortMapping policy to an attached endpoint; {reps} reps; ratio last/first {:.2})",
        r.add_last.median.as_secs_f64() / r.add_first.median.as_secs_f64()
    );
}
