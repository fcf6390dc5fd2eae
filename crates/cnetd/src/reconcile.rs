//! Start-up repair and `cnet diag`.
//!
//! At start cnetd (1) rolls back every create or attach that was in flight
//! and finishes every detach or delete, (2) loads the firewall model from the
//! store and replaces the nftables table atomically, (3) re-creates missing
//! bridges, managed namespaces and veths, and (4) deletes links with cnet's
//! prefixes that no object owns. It never re-creates a link that exists, so
//! traffic of working endpoints is not interrupted.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use utoipa::ToSchema;

use cnet_dataplane::netlink::Rtnl;
use cnet_dataplane::{link, netns, nft, sysctl};
use cnet_model::validate::gateway_of;
use cnet_model::{Endpoint, EndpointState, Network, NetworkType};
use cnet_store::Kind;

use crate::driver::bridge;
use crate::firewall::{self, TABLE};
use crate::service::{Intent, Service};

/// What start-up found and did.
#[derive(Debug, Default, Serialize)]
pub struct StartupReport {
    pub rolled_back: usize,
    pub finished: usize,
    pub recreated: Vec<String>,
    pub removed_orphans: Vec<String>,
    pub degraded: Vec<String>,
}

/// Prefixes of the links cnet owns in the host namespace.
const OWN_PREFIXES: [&str; 2] = ["cnb", "cnv"];

pub fn startup(svc: &Service) -> anyhow::Result<StartupReport> {
    let mut report = StartupReport::default();
    resolve_intents(svc, &mut report)?;

    let (networks, endpoints, namespaces) = {
        let st = svc.state.lock().unwrap();
        (
            st.networks.values().map(|r| r.object.clone()).collect::<Vec<_>>(),
            st.endpoints.values().map(|r| r.object.clone()).collect::<Vec<_>>(),
            st.namespaces.values().map(|r| r.object.clone()).collect::<Vec<_>>(),
        )
    };

    for net in &networks {
        svc.firewall.preload(net.id, firewall::network_elems(net, &net.derived_bridge_name()));
    }
    for ep in endpoints.iter().filter(|e| e.host_compute_namespace.is_some()) {
        svc.firewall.preload(ep.id, firewall::endpoint_elems(ep));
    }
    if networks.is_empty() {
        let _ = svc.firewall.delete_table_if_unused();
    } else {
        svc.firewall.render()?;
    }

    let links = link::links(None)?;
    let link_named: HashMap<&str, &link::LinkInfo> = links.iter().map(|l| (l.ifname.as_str(), l)).collect();
    let namespace_of: HashMap<String, &cnet_model::Namespace> =
        namespaces.iter().map(|n| (n.id.to_string(), n)).collect();
    let network_of: HashMap<String, &Network> = networks.iter().map(|n| (n.id.to_string(), n)).collect();
    for net in &networks {
        if !link_named.contains_key(net.derived_bridge_name().as_str()) {
            report.recreated.push(format!("bridge {} of network {}", net.derived_bridge_name(), net.name));
        }
        bridge::setup_network(net)?;
    }
    for ns in namespaces.iter().filter(|n| n.managed) {
        let path = ns.netns_path.clone().unwrap_or_default();
        if !netns::exists(&path) {
            netns::create(ns.name.as_ref().map(|n| n.as_str()).unwrap_or_default())?;
            report.recreated.push(format!("namespace {path}"));
        }
    }
    for ep in endpoints.iter().filter(|e| e.host_compute_namespace.is_some()) {
        let ns = ep.host_compute_namespace.as_ref().and_then(|id| namespace_of.get(id));
        let net = network_of.get(&ep.host_compute_network);
        let (Some(ns), Some(net)) = (ns, net) else { continue };
        let host = ep.derived_host_name();
        if let Some(l) = link_named.get(host.as_str()) {
            // A bridge deleted by hand leaves its ports without a master.
            if l.master.as_deref() != Some(net.derived_bridge_name().as_str()) || !l.is_up() {
                let spec = bridge::veth_spec(ep, net, "");
                link::enslave(&host, &spec.bridge, spec.hairpin)?;
                report.recreated.push(format!("bridge port {host} of endpoint {}", ep.display_name()));
            }
            continue;
        }
        let path = ns.netns_path.clone().unwrap_or_default();
        if !netns::exists(&path) {
            report.degraded.push(format!("endpoint {}: namespace {path} is gone", ep.display_name()));
            mark(svc, ep.id, EndpointState::Degraded)?;
            continue;
        }
        // Half a pair cannot exist (veths die in pairs), but a same-named
        // link from someone else might: leave it and report it.
        match bridge::attach_endpoint(ep, net, &path, &svc.reaper) {
            Ok(()) => {
                report.recreated.push(format!("veth of endpoint {}", ep.display_name()));
                mark(svc, ep.id, EndpointState::Attached)?;
            }
            Err(e) => {
                report.degraded.push(format!("endpoint {}: {e}", ep.display_name()));
                mark(svc, ep.id, EndpointState::Degraded)?;
            }
        }
    }
    for name in orphans(&links, &networks, &endpoints) {
        svc.reaper.delete(name)?;
        report.removed_orphans.push(name.to_string());
    }
    svc.reaper.settle();
    Ok(report)
}

/// Differences between one attached endpoint and the kernel: its host side
/// (`host_link`, as listed; `bridge` is its network's bridge), and the inside
/// of its namespace, read over netlink.
fn endpoint_drift(
    ep: &Endpoint,
    bridge: Option<String>,
    ns: Option<&cnet_model::Namespace>,
    host_link: Option<&link::LinkInfo>,
) -> anyhow::Result<Vec<String>> {
    let mut drift = Vec::new();
    let who = format!("endpoint {}", ep.display_name());
    let host = ep.derived_host_name();
    match host_link {
        None => drift.push(format!("{who}: host interface {host} is missing")),
        Some(l) if l.master != bridge => {
            drift.push(format!("{who}: {host} is not on bridge {}", bridge.unwrap_or_default()))
        }
        Some(l) if !l.is_up() => drift.push(format!("{who}: {host} is down")),
        Some(_) => {}
    }
    let Some(ns) = ns else { return Ok(drift) };
    let path = ns.netns_path.clone().unwrap_or_default();
    if !netns::exists(&path) {
        return Ok(drift);
    }
    let ifname = ep.interface_name().to_string();
    let mut nl = Rtnl::open_in(&path)?;
    let Some(inside) = nl.link_state(&ifname)? else {
        drift.push(format!("{who}: interface {ifname} is missing in {path}"));
        return Ok(drift);
    };
    let want_mac = ep.mac_address.map(|m| m.to_string().to_lowercase());
    if inside.mac != want_mac {
        drift.push(format!("{who}: {ifname} has MAC {:?}, expected {want_mac:?}", inside.mac));
    }
    let addrs = nl.addresses(inside.index)?;
    for c in &ep.ip_configurations {
        if !addrs.contains(&(c.ip_address, c.prefix_length)) {
            drift.push(format!("{who}: address {}/{} is missing on {ifname}", c.ip_address, c.prefix_length));
        }
    }
    let routes = nl.routes(inside.index)?;
    for want in &ep.routes {
        let dst = (want.destination_prefix.addr(), want.destination_prefix.prefix_len());
        if !routes.iter().any(|(d, via)| *d == dst && *via == want.next_hop) {
            drift.push(format!("{who}: route {} via {:?} is missing", want.destination_prefix, want.next_hop));
        }
    }
    Ok(drift)
}

/// `GET /endpoints/{id}/check`: the drift of one endpoint, its namespace and
/// its firewall elements (what CNI CHECK asks for).
pub fn check_endpoint(svc: &Service, key: &str) -> Result<Vec<String>, cnet_model::ApiError> {
    let ep = svc.get_endpoint(key)?;
    let Some(ns_id) = ep.host_compute_namespace.clone() else {
        return Ok(vec![format!("endpoint {} is not attached to a namespace", ep.display_name())]);
    };
    let (bridge, ns) = {
        let st = svc.state.lock().unwrap();
        (
            st.networks
                .values()
                .find(|x| x.object.id.to_string() == ep.host_compute_network)
                .map(|x| x.object.derived_bridge_name()),
            st.namespaces.values().find(|x| x.object.id.to_string() == ns_id).map(|x| x.object.clone()),
        )
    };
    let internal = |e: anyhow::Error| cnet_model::ApiError::internal(format!("checking the kernel failed: {e}"));
    let host = link::link(None, &ep.derived_host_name()).map_err(|e| internal(e.into()))?;
    let mut drift = endpoint_drift(&ep, bridge, ns.as_ref(), host.as_ref()).map_err(internal)?;
    if let Some(ns) = &ns {
        let path = ns.netns_path.clone().unwrap_or_default();
        if !netns::exists(&path) {
            drift.push(format!("namespace {}: {path} is gone", ns.display_name()));
        }
    }
    drift.extend(svc.firewall.owner_drift(ep.id).map_err(|e| internal(e.into()))?);
    Ok(drift)
}

/// Bridges with more ports than one CPU's packet backlog holds. A broadcast
/// (an ARP request) is copied to every port at once into that backlog
/// (`net.core.netdev_max_backlog`, 1,000 by default, host-wide); with more
/// ports the copies overflow it and the answer queued behind them is dropped:
/// here, new containers on a bridge with 1,001 ports could not resolve their
/// gateway.
fn crowded_bridges(networks: &[Network], links: &[link::LinkInfo], backlog: usize) -> Vec<String> {
    let mut warnings = Vec::new();
    for net in networks {
        let bridge = net.derived_bridge_name();
        let ports = links.iter().filter(|l| l.master.as_deref() == Some(bridge.as_str())).count();
        if ports >= backlog {
            warnings.push(format!(
                "network {}: bridge {bridge} has {ports} ports and net.core.netdev_max_backlog is {backlog}: broadcasts overflow the backlog and ARP answers get lost; raise it above the port count (sysctl -w net.core.netdev_max_backlog={}) or spread the endpoints over more networks",
                net.name,
                (ports * 2).next_power_of_two()
            ));
        }
    }
    warnings
}

/// Host links named like cnet's (`cnb`/`cnv` + hex) that no object owns.
fn orphans<'a>(links: &'a [link::LinkInfo], networks: &[Network], endpoints: &[Endpoint]) -> Vec<&'a str> {
    let owned: HashSet<String> = networks
        .iter()
        .map(|n| n.derived_bridge_name())
        .chain(endpoints.iter().map(|e| e.derived_host_name()))
        .collect();
    links
        .iter()
        .map(|l| l.ifname.as_str())
        .filter(|n| OWN_PREFIXES.iter().any(|p| n.starts_with(p)) && n.len() >= 13 && !owned.contains(*n))
        .collect()
}

fn mark(svc: &Service, id: uuid::Uuid, state: EndpointState) -> anyhow::Result<()> {
    let mut st = svc.state.lock().unwrap();
    if let Some(rec) = st.endpoints.get_mut(&id) {
        if rec.object.state != state {
            rec.object.state = state;
            let mut b = cnet_store::Batch::new();
            b.put(Kind::Endpoint, &id.to_string(), &*rec);
            svc.commit(b)?;
        }
    }
    Ok(())
}

/// Rolls back creates and attaches that were in flight, finishes the rest.
fn resolve_intents(svc: &Service, report: &mut StartupReport) -> anyhow::Result<()> {
    let (nets, eps, nss) = {
        let st = svc.state.lock().unwrap();
        (
            st.networks.values().filter(|r| r.intent.is_some()).cloned().collect::<Vec<_>>(),
            st.endpoints.values().filter(|r| r.intent.is_some()).cloned().collect::<Vec<_>>(),
            st.namespaces.values().filter(|r| r.intent.is_some()).cloned().collect::<Vec<_>>(),
        )
    };
    for rec in eps {
        let ep = &rec.object;
        let intent = rec.intent.expect("filtered");
        if intent != Intent::Modify {
            // The kernel half of the change is undone; the firewall model is
            // still empty here, the full render below removes stale elements.
            let _ = svc.detach_kernel(ep);
        }
        let mut b = cnet_store::Batch::new();
        let mut st = svc.state.lock().unwrap();
        if matches!(intent, Intent::Create | Intent::Delete) {
            b.delete(Kind::Endpoint, &ep.id.to_string());
            svc.commit(b)?;
            st.endpoints.remove(&ep.id);
        } else {
            let entry = st.endpoints.get_mut(&ep.id).expect("present");
            entry.intent = None;
            if intent != Intent::Modify {
                entry.object.host_compute_namespace = None;
                entry.object.state = EndpointState::Created;
            }
            b.put(Kind::Endpoint, &ep.id.to_string(), &*entry);
            svc.commit(b)?;
        }
        count(report, rec.intent);
    }
    for rec in nss {
        match rec.intent.expect("filtered") {
            Intent::Delete | Intent::Create => {
                let _ = svc.finish_namespace_delete(&rec.object);
            }
            _ => {}
        }
        count(report, rec.intent);
    }
    for rec in nets {
        match rec.intent.expect("filtered") {
            Intent::Create | Intent::Delete => {
                let _ = svc.finish_network_delete(&rec.object);
            }
            _ => {
                let mut st = svc.state.lock().unwrap();
                let entry = st.networks.get_mut(&rec.object.id).expect("present");
                entry.intent = None;
                let mut b = cnet_store::Batch::new();
                b.put(Kind::Network, &rec.object.id.to_string(), &*entry);
                svc.commit(b)?;
            }
        }
        count(report, rec.intent);
    }
    Ok(())
}

fn count(report: &mut StartupReport, intent: Option<Intent>) {
    match intent {
        Some(Intent::Create) | Some(Intent::Attach(_)) => report.rolled_back += 1,
        _ => report.finished += 1,
    }
}

/// The answer of `GET /diag`.
#[derive(Debug, Default, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DiagReport {
    /// Differences between the store and the kernel. Empty = no drift.
    pub drift: Vec<String>,
    /// Things that are not drift but may hurt traffic.
    pub warnings: Vec<String>,
}

/// Compares the store with the kernel and lists every difference.
pub fn diag(svc: &Service) -> anyhow::Result<DiagReport> {
    // Links being deleted in the background are not drift: wait for them.
    svc.reaper.settle();
    let mut r = DiagReport::default();
    let (networks, endpoints, namespaces) = {
        let st = svc.state.lock().unwrap();
        for (kind, id, intent) in st
            .networks
            .values()
            .map(|x| ("network", x.object.id, x.intent))
            .chain(st.endpoints.values().map(|x| ("endpoint", x.object.id, x.intent)))
            .chain(st.namespaces.values().map(|x| ("namespace", x.object.id, x.intent)))
        {
            if let Some(i) = intent {
                r.warnings.push(format!("{kind} {id}: operation {i:?} in progress"));
            }
        }
        (
            st.networks.values().map(|x| x.object.clone()).collect::<Vec<_>>(),
            st.endpoints.values().map(|x| x.object.clone()).collect::<Vec<_>>(),
            st.namespaces.values().map(|x| x.object.clone()).collect::<Vec<_>>(),
        )
    };
    let links = link::links(None)?;
    let link_named: HashMap<&str, &link::LinkInfo> = links.iter().map(|l| (l.ifname.as_str(), l)).collect();
    let find = |name: &str| link_named.get(name).copied();

    for net in &networks {
        let name = net.derived_bridge_name();
        let Some(l) = find(&name) else {
            r.drift.push(format!("network {}: bridge {name} is missing", net.name));
            continue;
        };
        if l.kind() != Some("bridge") {
            r.drift.push(format!("network {}: {name} is not a bridge", net.name));
        }
        if !l.is_up() {
            r.drift.push(format!("network {}: bridge {name} is down", net.name));
        }
        let addrs = link::addresses(None, &name)?;
        for s in net.subnets() {
            if let Some(gw) = gateway_of(net, s) {
                if !addrs.contains(&(gw, s.ip_address_prefix.prefix_len())) {
                    r.drift.push(format!(
                        "network {}: gateway {gw}/{} is missing on {name}",
                        net.name,
                        s.ip_address_prefix.prefix_len()
                    ));
                }
            }
        }
        if net.r#type == NetworkType::Nat && sysctl::get("net/ipv4/ip_forward").as_deref() != Some("1") {
            r.drift.push(format!("network {}: net.ipv4.ip_forward is off", net.name));
        }
    }
    for ns in namespaces.iter() {
        let path = ns.netns_path.clone().unwrap_or_default();
        if !netns::exists(&path) {
            r.drift.push(format!("namespace {}: {path} is gone", ns.display_name()));
        }
    }
    let namespace_of: HashMap<String, &cnet_model::Namespace> =
        namespaces.iter().map(|n| (n.id.to_string(), n)).collect();
    let bridge_of: HashMap<String, String> =
        networks.iter().map(|n| (n.id.to_string(), n.derived_bridge_name())).collect();
    for ep in endpoints.iter().filter(|e| e.host_compute_namespace.is_some()) {
        let ns = ep.host_compute_namespace.as_ref().and_then(|id| namespace_of.get(id).copied());
        let bridge = bridge_of.get(&ep.host_compute_network).cloned();
        r.drift.extend(endpoint_drift(ep, bridge, ns, find(&ep.derived_host_name()))?);
    }
    for name in orphans(&links, &networks, &endpoints) {
        r.drift.push(format!("link {name} is not owned by any object (orphan)"));
    }
    r.drift.extend(svc.firewall.drift()?);
    let backlog = sysctl::get("net/core/netdev_max_backlog").and_then(|v| v.parse().ok()).unwrap_or(1000);
    r.warnings.extend(crowded_bridges(&networks, &links, backlog));
    for chain in nft::foreign_drop_chains(TABLE).unwrap_or_default() {
        r.warnings.push(format!(
            "base chain {chain} has policy drop: it also sees cnet's traffic and may drop what cnet accepts"
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_with_as_many_ports_as_the_backlog_is_reported() {
        let net: Network = serde_json::from_value(serde_json::json!({
            "ID": uuid::Uuid::new_v4(), "Name": "big", "Type": "NAT",
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.0.0.0/16"}]}]
        }))
        .unwrap();
        let port = |i: usize| -> link::LinkInfo {
            serde_json::from_value(serde_json::json!({"ifname": format!("p{i}"), "master": net.derived_bridge_name()}))
                .unwrap()
        };
        let links: Vec<link::LinkInfo> = (0..1000).map(port).collect();
        assert!(crowded_bridges(std::slice::from_ref(&net), &links[..999], 1000).is_empty());
        let warnings = crowded_bridges(std::slice::from_ref(&net), &links, 1000);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("1000 ports") && warnings[0].contains("netdev_max_backlog=2048"), "{warnings:?}");
    }
}
