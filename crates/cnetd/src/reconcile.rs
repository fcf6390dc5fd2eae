//! Start-up repair. At start cnetd (1) rolls back every create or attach
//! that was in flight and finishes every detach or delete, (2) loads the
//! firewall model from the store and replaces the nftables table
//! atomically, (3) has each network's driver complete its switch, re-creates
//! managed namespaces and repairs attached endpoints, sets their QoS caps
//! again (a `tc qdisc replace`, which no connection notices), and (4)
//! deletes links with cnet's prefixes that no object owns (an ifb whose
//! endpoint is gone among them). It never re-creates a link that exists, so
//! traffic of working endpoints is not interrupted.

use std::collections::HashSet;

use serde::Serialize;

use cnet_model::EndpointState;

use crate::driver::{Links, Repair};
use crate::error::{Result, ServiceError};
use crate::firewall;
use crate::service::Service;
use crate::state::{EndpointRecord, Intent, Objects, Stored};

/// What start-up found and did.
#[derive(Debug, Default, Serialize)]
pub struct StartupReport {
    pub rolled_back: usize,
    pub finished: usize,
    pub recreated: Vec<String>,
    pub removed_orphans: Vec<String>,
    pub degraded: Vec<String>,
}

/// Prefixes of the links cnet owns in the host namespace: bridges, host sides and TAPs,
/// Transparent shims, VM macvtaps, Overlay VXLAN devices, QoS ifbs.
pub(crate) const OWN_PREFIXES: [&str; 6] = ["cnb", "cnv", "cnh", "cnm", "cnx", crate::policy::qos::IFB_PREFIX];

fn kernel(what: &str) -> impl FnOnce(cnet_dataplane::DataplaneError) -> ServiceError + '_ {
    move |e| ServiceError::kernel(what, e)
}

pub fn startup(svc: &Service) -> Result<StartupReport> {
    let mut report = StartupReport::default();
    resolve_intents(svc, &mut report)?;
    let mut o: Objects = svc.state.read().clone();
    // A network whose delete could not be finished keeps its intent: it is
    // not set up again (a retry of the delete finishes it).
    o.networks.retain(|_, s| s.intent.is_none());
    let dp = svc.dp.as_ref();

    for net in o.networks.values().map(|s| &s.record) {
        svc.firewall.preload(net.id, svc.driver(net)?.firewall(net));
    }
    for ep in o.endpoints.values().map(|s| &s.record).filter(|e| e.in_kernel()) {
        match o.networks.get(&ep.network) {
            Some(net) => {
                svc.firewall.preload(ep.id, firewall::endpoint_elems(ep, &net.record));
                let netns = ep.namespace.and_then(|n| o.namespaces.get(&n)).map(|n| n.record.netns_path.as_str());
                svc.policies.preload(ep, &net.record, netns);
                svc.guards.preload(ep, &net.record, netns);
            }
            None => svc.firewall.preload(ep.id, firewall::port_mapping_elems(ep)),
        }
    }
    svc.policies.reload().map_err(kernel("loading the nftables policy table"))?;
    // A crash can leave a container's ACL table that no endpoint of the model has.
    let spaces = o.namespaces.values().map(|n| n.record.netns_path.as_str()).filter(|p| !p.is_empty());
    let swept = svc.policies.inside.sweep(spaces).map_err(kernel("removing stale ACL tables"))?;
    report.removed_orphans.extend(swept.into_iter().map(|ns| format!("the ACL table inet cnetpol of namespace {ns}")));
    svc.guards.reload().map_err(kernel("loading the nftables anti-spoofing table"))?;
    if o.networks.is_empty() {
        let _ = svc.firewall.delete_if_unused();
    } else {
        svc.firewall.reload().map_err(kernel("loading the nftables table"))?;
    }

    let links: Links = dp.links().map_err(kernel("listing links"))?.into_iter().map(|l| (l.name.clone(), l)).collect();
    for net in o.networks.values().map(|s| &s.record) {
        let driver = svc.driver(net)?;
        for name in driver.network_links(net).iter().filter(|n| !links.contains_key(*n)) {
            report.recreated.push(format!("{name} of network {}", net.name));
        }
        // One network that cannot be built (its uplink unplugged or
        // renamed) must not keep the others from starting: it is reported,
        // its endpoints are marked degraded below, and the next start tries again.
        if let Err(e) = driver.setup(dp, net) {
            report.degraded.push(format!("network {}: {e}", net.name));
        }
    }
    for ns in o.namespaces.values().map(|s| &s.record).filter(|n| n.managed) {
        if !dp.netns_exists(&ns.netns_path) {
            let name = ns.name.as_ref().map(|n| n.as_str()).unwrap_or_default();
            dp.netns_create(name).map_err(kernel("re-creating a namespace"))?;
            report.recreated.push(format!("namespace {}", ns.netns_path));
        }
    }
    let own = crate::service::own_namespace();
    for ep in o.endpoints.values().map(|s| &s.record) {
        let Some(net) = o.networks.get(&ep.network) else { continue };
        // A handed-off endpoint: only its host end is checked (its driver knows).
        let Some(ns) = crate::service::adapter_namespace(&o, ep, &own) else { continue };
        let repair = svc
            .driver(&net.record)?
            .repair_endpoint(dp, &net.record, ep, ns, &links)
            .map_err(kernel(&format!("repairing endpoint {}", ep.display_name())))?;
        let state = match repair {
            Repair::Intact => continue,
            Repair::Repaired(what) => {
                report.recreated.push(what);
                EndpointState::Attached
            }
            Repair::Degraded(why) => {
                report.degraded.push(format!("endpoint {}: {why}", ep.display_name()));
                EndpointState::Degraded
            }
        };
        mark(svc, ep.id, state)?;
    }
    // After the repairs: a re-made veth has no qdiscs yet.
    for ep in o.endpoints.values().map(|s| &s.record).filter(|e| e.in_kernel() && crate::policy::qos::shaped(e)) {
        let Some(net) = o.networks.get(&ep.network) else { continue };
        if let Err(e) = svc.set_qos(ep, net.record.kind, svc.netns_path(ep.namespace).as_deref()) {
            report.degraded.push(format!("endpoint {}: {}", ep.display_name(), e.message));
            mark(svc, ep.id, EndpointState::Degraded)?;
        }
    }
    for net in o.networks.values().map(|s| &s.record) {
        let eps: Vec<&EndpointRecord> =
            o.endpoints.values().map(|s| &s.record).filter(|e| e.network == net.id && e.in_kernel()).collect();
        match svc.driver(net)?.sweep(dp, net, &eps) {
            Ok(gone) => report.removed_orphans.extend(gone.into_iter().map(|g| format!("{g} of network {}", net.name))),
            Err(e) => report.degraded.push(format!("network {}: cleaning up: {e}", net.name)),
        }
    }
    for name in orphans(svc, &o, &links) {
        dp.release_link(&name).map_err(kernel("removing an orphan link"))?;
        report.removed_orphans.push(name);
    }
    dp.settle();
    Ok(report)
}

/// Host links named like cnet's (`cnb`/`cnv` + hex) that no object owns.
pub(crate) fn orphans(svc: &Service, o: &Objects, links: &Links) -> Vec<String> {
    let mut owned: HashSet<String> = HashSet::new();
    for net in o.networks.values().map(|s| &s.record) {
        if let Ok(d) = svc.driver(net) {
            owned.extend(d.network_links(net));
            owned.extend(
                o.endpoints
                    .values()
                    .map(|s| &s.record)
                    // Only attached endpoints have links: a detached one's leftover is an orphan.
                    .filter(|e| e.network == net.id && e.in_kernel())
                    .flat_map(|e| d.endpoint_links(e)),
            );
        }
    }
    owned.extend(
        o.endpoints
            .values()
            .map(|s| &s.record)
            .filter(|e| e.in_kernel() && crate::policy::qos::shaped(e))
            .map(|e| crate::policy::qos::ifb_name(&e.id)),
    );
    let mut out: Vec<String> = links
        .keys()
        .filter(|n| OWN_PREFIXES.iter().any(|p| n.starts_with(p)) && n.len() >= 13 && !owned.contains(*n))
        .cloned()
        .collect();
    out.sort();
    out
}

fn mark(svc: &Service, id: uuid::Uuid, state: EndpointState) -> Result<()> {
    svc.state.change(|o, ch| {
        if let Some(s) = o.endpoints.get(&id) {
            if s.record.state != state {
                let mut rec = s.record.clone();
                rec.state = state;
                ch.put_endpoint(Stored { record: rec, intent: s.intent });
            }
        }
        Ok(())
    })
}

/// Rolls back creates and attaches that were in flight, finishes the rest:
/// endpoints first, then namespaces, then networks (each needs the next).
fn resolve_intents(svc: &Service, report: &mut StartupReport) -> Result<()> {
    let o: Objects = svc.state.read().clone();
    for s in o.endpoints.values().filter(|s| s.intent.is_some()) {
        let ep = &s.record;
        let intent = s.intent.expect("filtered");
        if intent != Intent::Modify {
            // Undo the kernel half of the change. The firewall model is still
            // empty here: the full load below removes stale elements.
            let net = o.networks.get(&ep.network).map(|n| &n.record);
            let ns = match intent {
                Intent::Attach(ns) => Some(ns),
                _ => ep.namespace,
            };
            let path =
                ns.and_then(|n| o.namespaces.get(&n)).map(|n| n.record.netns_path.as_str()).filter(|p| !p.is_empty());
            let _ = svc.detach_kernel(&svc.lease_cut_short(ep, net, path), net, path);
        }
        svc.state.write(|ch| match intent {
            Intent::Create | Intent::Delete => ch.delete_endpoint(ep.id),
            Intent::Modify => ch.put_endpoint(Stored::done(ep.clone())),
            // A hand-off is rolled back: the record as before it (a
            // handed-off endpoint never had a namespace).
            Intent::Attach(_) | Intent::Detach | Intent::HandOff => {
                ch.put_endpoint(Stored::done(crate::service::detached(ep.clone())))
            }
        })?;
        // A policy change cut short: the caps as the record has them now
        // (it was stored before the kernel was touched).
        if intent == Intent::Modify && ep.in_kernel() {
            let kind = o.networks.get(&ep.network).map(|n| n.record.kind);
            let path = ep.namespace.and_then(|n| o.namespaces.get(&n)).map(|n| n.record.netns_path.as_str());
            let at = kind.and_then(|k| crate::policy::qos::adapter(ep, k, path.filter(|p| !p.is_empty())));
            if let Err(e) = at.map_or(Ok(()), |at| crate::policy::qos::set(svc.dp.as_ref(), ep, &at)) {
                report.degraded.push(format!("endpoint {}: QoS: {e}", ep.display_name()));
            }
        }
        count(report, intent);
    }
    for s in o.namespaces.values().filter(|s| s.intent.is_some()) {
        let intent = s.intent.expect("filtered");
        if matches!(intent, Intent::Create | Intent::Delete) {
            let _ = svc.finish_namespace_delete(&s.record);
        }
        count(report, intent);
    }
    for s in o.networks.values().filter(|s| s.intent.is_some()) {
        let intent = s.intent.expect("filtered");
        match intent {
            Intent::Create | Intent::Delete => {
                let _ = svc.finish_network_delete(&s.record);
            }
            _ => svc.state.write(|ch| ch.put_network(Stored::done(s.record.clone())))?,
        }
        count(report, intent);
    }
    Ok(())
}

fn count(report: &mut StartupReport, intent: Intent) {
    match intent {
        Intent::Create | Intent::Attach(_) | Intent::HandOff => report.rolled_back += 1,
        _ => report.finished += 1,
    }
}
