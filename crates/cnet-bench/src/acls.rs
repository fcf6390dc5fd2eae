//! Scale of ACLs: one endpoint's ACL change with no other endpoint having
//! ACLs, and with `fillers` attached endpoints of 20 rules each; throughput
//! and first-packet latency through an endpoint with 20 rules while the
//! fillers have theirs, against an endpoint without policies.
//!
//! The change is timed as the API call that replaces the probe endpoint's 20
//! ACL policies (`Update`), one rule's port differing each time. Fillers
//! share a few namespaces (one interface each), so the figures are the
//! policy table's, not namespace creation's. First packet: a TCP connect
//! from the endpoint to a LAN server (its SYN is the packet that meets the
//! dispatch map and the endpoint's chain).
//!
//! The same change on a Transparent network ([`run_transparent`]): each
//! container's ACLs are a table of its own namespace, so the fillers there
//! are containers of their own namespaces (at most [`TRANSPARENT_FILLERS`],
//! the addresses of half the test LAN).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cnet_testkit::{probe, LAN_IP};
use serde_json::{json, Value};

use crate::{stats, Stats};

const RULES: usize = 20;
const PER_NAMESPACE: usize = 100;
/// Fillers per network: a bridge with about as many ports as the kernel's
/// backlog (`netdev_max_backlog`, 1,000) drops replies behind a broadcast's
/// copies (`cnet diag` warns of it), so fillers spread over networks.
const PER_NETWORK: usize = 500;
const SINK_PORT: u16 = 7400;

/// Transparent fillers at most: the network has 126 addresses.
pub const TRANSPARENT_FILLERS: usize = 100;

pub struct AclScale {
    pub fillers: usize,
    pub change_alone: Stats,
    pub change_at_scale: Stats,
    pub connect_with: Stats,
    pub connect_without: Stats,
    pub gbit_with: Option<f64>,
    pub gbit_without: Option<f64>,
    /// The change on a Transparent network: alone, and with its fillers.
    pub transparent: Option<(usize, Stats, Stats)>,
}

/// 20 rules, one kernel rule each, different per endpoint `k` and variant `v`.
fn rules(k: usize, v: usize) -> Vec<Value> {
    (0..RULES)
        .map(|j| {
            let dir = if j % 2 == 0 { "In" } else { "Out" };
            let action = if j % 5 == 4 { "Block" } else { "Allow" };
            let port = 1000 + j + if j == 0 { v % 2 } else { 0 };
            let ports = if dir == "In" { "LocalPorts" } else { "RemotePorts" };
            json!({"Type": "ACL", "Settings": {"Action": action, "Direction": dir, "Protocols": "6",
                ports: port.to_string(), "RemoteAddresses": format!("10.{}.{}.0/24", 200 + j / 10, k % 250),
                "Priority": 100 + j}})
        })
        .collect()
}

fn time_changes(c: &cnet_client::Client, ep: &str, reps: usize) -> Result<Stats> {
    let mut times = Vec::new();
    for v in 0..reps {
        let body =
            json!({"ResourceType": "Policy", "RequestType": "Update", "Settings": {"Policies": rules(0, v + 1)}});
        let t = Instant::now();
        c.patch::<Value>(&format!("/endpoints/{ep}"), &body)?;
        times.push(t.elapsed());
    }
    Ok(stats(times))
}

fn time_connects(ns: &str, reps: usize) -> Result<Stats> {
    crate::rules::time_connects_to(ns, format!("{LAN_IP}:{SINK_PORT}"), reps)
}

/// Runs the measurement on a NAT network of its own; `datapath` runs iperf3 when given.
pub fn run(
    c: &cnet_client::Client,
    tag: &str,
    lan: &str,
    fillers: usize,
    reps: usize,
    datapath: Option<&crate::datapath::Datapath>,
) -> Result<AclScale> {
    let networks = fillers.div_ceil(PER_NETWORK).max(1);
    for n in 0..networks {
        let prefix = format!("10.{}.0.0/16", 152 + n);
        c.post::<Value>(
            "/networks",
            &json!({"Name": format!("acls{n}"), "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": prefix}]}]}),
        )?;
    }
    let mut paths = Vec::new();
    let mut namespace = |name: &str| -> Result<Value> {
        let path = crate::netns_add(&format!("{tag}-{name}"))?;
        paths.push(path.clone());
        c.post::<Value>("/namespaces", &json!({"NetnsPath": path})).map_err(Into::into)
    };
    let with = namespace("aw")?;
    let without = namespace("an")?;
    let endpoint = |name: &str, net: usize, ns: &Value, ifname: &str, policies: Vec<Value>| {
        c.post::<Value>(
            "/endpoints",
            &json!({"Name": name, "HostComputeNetwork": format!("acls{net}"), "HostComputeNamespace": ns["ID"],
                "InterfaceName": ifname, "Policies": policies}),
        )
        .with_context(|| format!("endpoint {name}"))
    };
    endpoint("acl-with", 0, &with, "eth0", rules(0, 0))?;
    endpoint("acl-without", 0, &without, "eth0", vec![])?;
    let change_alone = time_changes(c, "acl-with", reps)?;
    let mut hosts = Vec::new();
    for k in 0..fillers {
        if k % PER_NAMESPACE == 0 {
            hosts.push(namespace(&format!("af{}", k / PER_NAMESPACE))?);
        }
        let ns = hosts.last().expect("a filler namespace");
        let ifname = format!("eth{}", k % PER_NAMESPACE);
        endpoint(&format!("acl-f{k}"), k / PER_NETWORK, ns, &ifname, rules(k + 1, 0))?;
    }
    let change_at_scale = time_changes(c, "acl-with", reps)?;
    let _sink = probe::tcp_server(lan, &format!("0.0.0.0:{SINK_PORT}"));
    let (with_path, without_path) =
        (with["NetnsPath"].as_str().unwrap_or_default(), without["NetnsPath"].as_str().unwrap_or_default());
    let connect_with = time_connects(with_path, reps)?;
    let connect_without = time_connects(without_path, reps)?;
    let (mut gbit_with, mut gbit_without) = (None, None);
    if let Some(d) = datapath {
        gbit_with = Some(d.iperf(lan, with_path, LAN_IP, 80)?);
        gbit_without = Some(d.iperf(lan, without_path, LAN_IP, 80)?);
    }
    for n in 0..networks {
        let eps: Vec<Value> = c.get(&format!("/endpoints?network=acls{n}"))?;
        for e in eps {
            c.delete(&format!("/endpoints/{}", e["ID"].as_str().unwrap_or_default()))?;
        }
    }
    for p in &paths {
        c.delete(&format!("/namespaces/{}", cnet_client::escape(p)))?;
    }
    for n in 0..networks {
        c.delete(&format!("/networks/acls{n}"))?;
    }
    Ok(AclScale {
        fillers,
        change_alone,
        change_at_scale,
        connect_with,
        connect_without,
        gbit_with,
        gbit_without,
        transparent: None,
    })
}

/// One Transparent container's ACL change, alone and with `fillers`
/// containers of 20 rules each, each in a namespace of its own, on a
/// Transparent network of the test LAN's upper half (uplink `uplink0`).
pub fn run_transparent(
    c: &cnet_client::Client,
    tag: &str,
    fillers: usize,
    reps: usize,
) -> Result<(usize, Stats, Stats)> {
    let fillers = fillers.min(TRANSPARENT_FILLERS);
    c.post::<Value>(
        "/networks",
        &json!({"Name": "acls-lan", "Type": "Transparent",
            "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}],
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "198.18.0.128/25"}]}]}),
    )?;
    let mut paths = Vec::new();
    let mut container = |name: &str, policies: Vec<Value>| -> Result<()> {
        let path = crate::netns_add(&format!("{tag}-{name}"))?;
        paths.push(path.clone());
        let ns: Value = c.post("/namespaces", &json!({"NetnsPath": path}))?;
        c.post::<Value>(
            "/endpoints",
            &json!({"Name": name, "HostComputeNetwork": "acls-lan", "HostComputeNamespace": ns["ID"], "Policies": policies}),
        )
        .with_context(|| format!("endpoint {name}"))?;
        Ok(())
    };
    container("tacl-with", rules(0, 0))?;
    let alone = time_changes(c, "tacl-with", reps)?;
    for k in 0..fillers {
        container(&format!("tacl-f{k}"), rules(k + 1, 0))?;
    }
    let at_scale = time_changes(c, "tacl-with", reps)?;
    let eps: Vec<Value> = c.get("/endpoints?network=acls-lan")?;
    for e in eps {
        c.delete(&format!("/endpoints/{}", e["ID"].as_str().unwrap_or_default()))?;
    }
    for p in &paths {
        c.delete(&format!("/namespaces/{}", cnet_client::escape(p)))?;
    }
    c.delete("/networks/acls-lan")?;
    Ok((fillers, alone, at_scale))
}

pub fn print(r: &AclScale, reps: usize) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\n| ACLs ({RULES} rules per endpoint) | median (µs) | p99 | min | max |");
    println!("|---|---:|---:|---:|---:|");
    for (what, s) in [
        ("change one endpoint's ACLs, no other endpoint has any", &r.change_alone),
        (&*format!("change one endpoint's ACLs, {} endpoints have theirs", r.fillers), &r.change_at_scale),
        ("first packet (TCP connect to the LAN) from the endpoint with ACLs", &r.connect_with),
        ("first packet from an endpoint without policies", &r.connect_without),
    ] {
        println!("| {what} | {:.0} | {:.0} | {:.0} | {:.0} |", us(s.median), us(s.p99), us(s.min), us(s.max));
    }
    if let (Some(a), Some(b)) = (r.gbit_with, r.gbit_without) {
        println!("\nthroughput to the LAN (iperf3, one stream): with ACLs {a:.2} Gbit/s, without {b:.2} Gbit/s");
    }
    println!(
        "\n(change: API call replacing the endpoint's {RULES} ACL policies; {reps} reps; ratio at scale/alone {:.2})",
        r.change_at_scale.median.as_secs_f64() / r.change_alone.median.as_secs_f64()
    );
    if let Some((fillers, alone, at_scale)) = &r.transparent {
        println!("\n| ACLs on a Transparent network (a table in each container's namespace) | median (µs) | p99 | min | max |");
        println!("|---|---:|---:|---:|---:|");
        for (what, s) in [
            ("change one container's ACLs, no other container has any".to_string(), alone),
            (format!("change one container's ACLs, {fillers} containers have theirs"), at_scale),
        ] {
            println!("| {what} | {:.0} | {:.0} | {:.0} | {:.0} |", us(s.median), us(s.p99), us(s.min), us(s.max));
        }
        println!("\n(ratio at scale/alone {:.2})", at_scale.median.as_secs_f64() / alone.median.as_secs_f64());
    }
}
