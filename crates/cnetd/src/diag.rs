//! Diagnostics: the store compared with the kernel (`cnet diag`), and the
//! check of one endpoint (CNI CHECK). Both answer typed findings.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dataplane::Dataplane;
use crate::driver::Links;
use crate::error::{Result, ServiceError};
use crate::reconcile::orphans;
use crate::service::Service;
use crate::state::{EndpointRecord, NamespaceRecord, NetworkRecord, Objects};
use cnet_model::findings::{Finding, FindingKind, Subject, SubjectKind};

/// The answer of `GET /diag`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DiagReport {
    /// Differences between the store and the kernel. Empty = no drift.
    pub drift: Vec<Finding>,
    /// Things that are not drift but may hurt traffic.
    pub warnings: Vec<Finding>,
}

/// The answer of `GET /health`: whether traffic cnet accepts can flow.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// No problem below.
    pub healthy: bool,
    /// What may stop cnet's traffic: another table's base chain with
    /// `policy drop` (`ForeignDrop`), a degraded cluster membership.
    pub problems: Vec<Finding>,
}

/// `GET /health`: the host-wide problems of [`diag`], without the
/// comparison of every object (cheap enough for a probe).
pub fn health(svc: &Service) -> Result<Health> {
    let mut problems = foreign_drops(svc);
    problems.extend(cluster_degraded(svc));
    Ok(Health { healthy: problems.is_empty(), problems })
}

/// One finding per base chain of another table with `policy drop`: it sees
/// cnet's traffic too (nftables runs every base chain of a hook) and drops
/// what cnet accepts.
fn foreign_drops(svc: &Service) -> Vec<Finding> {
    let chains = svc.dp.foreign_drop_chains().unwrap_or_else(|e| {
        tracing::warn!("listing the ruleset's base chains failed: {e}");
        vec![]
    });
    chains
        .into_iter()
        .map(|chain| {
            Finding::new(
                Subject::host(),
                FindingKind::ForeignDrop,
                format!(
                    "base chain {chain} has policy drop: it also sees cnet's traffic and drops what cnet accepts; \
                     accept cnet's switches (cnb*) in it (see docs/operator-guide.md, \"Another firewall\")"
                ),
            )
        })
        .collect()
}

fn cluster_degraded(svc: &Service) -> Option<Finding> {
    let c = svc.cluster.get().map(|m| m.status()).filter(|c| c.health != "Healthy")?;
    Some(Finding::new(
        Subject::host(),
        FindingKind::ClusterDegraded,
        format!(
            "cluster {}: {} (the data path keeps working; endpoints come only from blocks already held)",
            c.health,
            if c.reason.is_empty() { "joining" } else { &c.reason }
        ),
    ))
}

fn kernel(e: cnet_dataplane::DataplaneError) -> ServiceError {
    ServiceError::internal(format!("reading the kernel's state failed: {e}"))
}

/// Compares the store with the kernel and lists every difference.
pub fn diag(svc: &Service) -> Result<DiagReport> {
    let dp = svc.dp.as_ref();
    // Links being deleted in the background are not drift: wait for them.
    dp.settle();
    let mut r = DiagReport::default();
    let o: Objects = svc.state.read().clone();
    for (kind, id, intent) in o.intents() {
        let subject = match kind {
            "network" => SubjectKind::Network,
            "endpoint" => SubjectKind::Endpoint,
            _ => SubjectKind::Namespace,
        };
        r.warnings.push(Finding::new(
            Subject::new(subject, Some(id), id.to_string()),
            FindingKind::InProgress,
            format!("{kind} {id}: operation {intent:?} in progress"),
        ));
    }
    let links: Links = dp.links().map_err(kernel)?.into_iter().map(|l| (l.name.clone(), l)).collect();
    for net in o.networks.values().map(|s| &s.record) {
        r.drift.extend(svc.driver(net)?.check_network(dp, net, &links).map_err(kernel)?);
    }
    for ns in o.namespaces.values().map(|s| &s.record).filter(|n| !n.kind.is_guest()) {
        if !ns.kind.is_guest() && !dp.netns_exists(&ns.netns_path) {
            r.drift.push(Finding::new(
                Subject::new(SubjectKind::Namespace, Some(ns.id), ns.display_name()),
                FindingKind::Missing,
                format!("namespace {}: {} is gone", ns.display_name(), ns.netns_path),
            ));
        }
    }
    let own = crate::service::own_namespace();
    for ep in o.endpoints.values().filter(|s| s.intent.is_none()).map(|s| &s.record) {
        let Some(net) = o.networks.get(&ep.network) else { continue };
        // A handed-off endpoint: only its host end is checked (its driver knows).
        let Some(ns) = crate::service::adapter_namespace(&o, ep, &own) else { continue };
        r.drift.extend(svc.driver(&net.record)?.check_endpoint(dp, &net.record, ep, ns, &links).map_err(kernel)?);
        r.drift.extend(qos_drift(dp, ep, &net.record, ns)?);
    }
    // Tables the kernel lacks: the guards', and Transparent containers' ACLs.
    let guards = svc.guards.missing().map_err(kernel)?.into_iter().map(|id| (id, "its anti-spoofing guard is missing from the kernel (its nftables table was deleted?): restart cnetd, which loads every guard again"));
    let acls = svc.policies.inside.missing().map_err(kernel)?.into_iter().map(|id| (id, "its ACL table inet cnetpol is missing from its namespace (deleted from inside the container?): restart cnetd, which loads it again"));
    for (id, what) in guards.chain(acls) {
        let Some(ep) = o.endpoints.get(&id).filter(|s| s.intent.is_none()).map(|s| &s.record) else { continue };
        r.drift.push(Finding::new(
            Subject::new(SubjectKind::Endpoint, Some(ep.id), ep.display_name()),
            FindingKind::Missing,
            format!("endpoint {} ({}): {what}", ep.display_name(), ep.id),
        ));
    }
    for name in orphans(svc, &o, &links) {
        r.drift.push(Finding::new(
            Subject::new(SubjectKind::Link, None, name.clone()),
            FindingKind::Orphan,
            format!("link {name} is not owned by any object (orphan)"),
        ));
    }
    r.drift.extend(svc.firewall.drift().map_err(kernel)?);
    let backlog = dp.sysctl_get("net/core/netdev_max_backlog").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let networks: Vec<&NetworkRecord> = o.networks.values().map(|s| &s.record).collect();
    r.warnings.extend(crowded_switches(svc, &networks, &links, backlog));
    r.warnings.extend(cluster_degraded(svc));
    r.warnings.extend(foreign_drops(svc));
    Ok(r)
}

/// `GET /endpoints/{id}/check`: the drift of one endpoint, its namespace and
/// its firewall elements (what CNI CHECK asks for).
pub fn check_endpoint(svc: &Service, key: &str) -> Result<Vec<Finding>> {
    let dp = svc.dp.as_ref();
    let ep = svc.get_endpoint(key)?;
    let who = Subject::new(SubjectKind::Endpoint, Some(ep.id), ep.display_name());
    let (net, ns) = {
        let o = svc.state.read();
        let ns = match (ep.namespace, &ep.handed_off) {
            (Some(ns_id), _) => o.namespace(ns_id)?.record.clone(),
            // Handed off to its runtime: only its host end is cnet's to check.
            (None, Some(_)) => crate::service::own_namespace(),
            (None, None) => {
                return Ok(vec![Finding::new(
                    who,
                    FindingKind::Missing,
                    format!("endpoint {} is not attached to a namespace", ep.display_name()),
                )])
            }
        };
        (o.network(ep.network)?.record.clone(), ns)
    };
    let driver = svc.driver(&net)?;
    let mut links = Links::new();
    for name in driver.endpoint_links(&ep) {
        if let Some(l) = dp.link(&name).map_err(kernel)? {
            links.insert(name, l);
        }
    }
    let mut out = driver.check_endpoint(dp, &net, &ep, &ns, &links).map_err(kernel)?;
    if !dp.netns_exists(&ns.netns_path) {
        out.push(Finding::new(
            Subject::new(SubjectKind::Namespace, Some(ns.id), ns.display_name()),
            FindingKind::Missing,
            format!("namespace {}: {} is gone", ns.display_name(), ns.netns_path),
        ));
    }
    out.extend(svc.firewall.owner_drift(ep.id, &who).map_err(kernel)?);
    out.extend(qos_drift(dp, &ep, &net, &ns)?);
    Ok(out)
}

/// What is wrong with the caps of `ep` (on `net`, attached to `ns`).
fn qos_drift(
    dp: &dyn Dataplane,
    ep: &EndpointRecord,
    net: &NetworkRecord,
    ns: &NamespaceRecord,
) -> Result<Vec<Finding>> {
    let path = Some(ns.netns_path.as_str()).filter(|p| !p.is_empty());
    match crate::policy::qos::adapter(ep, net.kind, path) {
        Some(at) => crate::policy::qos::drift(dp, ep, &at).map_err(kernel),
        None => Ok(vec![]),
    }
}

/// Switches with more ports than one CPU's packet backlog holds. A broadcast
/// (an ARP request) is copied to every port at once into that backlog
/// (`net.core.netdev_max_backlog`, 1,000 by default, host-wide); with more
/// ports the copies overflow it and the answer queued behind them is
/// dropped: here, new containers on a bridge with 1,001 ports could not
/// resolve their gateway.
fn crowded_switches(svc: &Service, networks: &[&NetworkRecord], links: &Links, backlog: usize) -> Vec<Finding> {
    let mut warnings = Vec::new();
    for net in networks {
        let Ok(driver) = svc.driver(net) else { continue };
        for switch in driver.network_links(net) {
            let ports = links.values().filter(|l| l.master.as_deref() == Some(switch.as_str())).count();
            if ports >= backlog {
                warnings.push(Finding::new(
                    Subject::new(SubjectKind::Network, Some(net.id), net.name.to_string()),
                    FindingKind::Crowded,
                    format!(
                        "network {}: bridge {switch} has {ports} ports and net.core.netdev_max_backlog is {backlog}: broadcasts overflow the backlog and ARP answers get lost; raise it above the port count (sysctl -w net.core.netdev_max_backlog={}) or spread the endpoints over more networks",
                        net.name,
                        (ports * 2).next_power_of_two()
                    ),
                ));
            }
        }
    }
    warnings
}
