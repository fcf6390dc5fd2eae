//! The CNI commands, each a few calls to cnetd.

use std::collections::BTreeSet;

use cnet_client::runtime::{self, not_found};
use cnet_client::{escape, Client, ClientError};
use cnet_model::{Endpoint, ErrorCode, Finding, FindingKind, Namespace, Network, SubjectKind};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::NetConf;
use crate::error::{code, CniError};
use crate::invocation::Invocation;
use crate::result::add_result;

/// Annotation keys the plugin stores on its endpoints.
pub const ANN_CONTAINER: &str = "cni.dev/containerID";
pub const ANN_IFNAME: &str = "cni.dev/ifname";
pub const ANN_NETWORK: &str = "cni.dev/network";
pub const ANN_BANDWIDTH: &str = "cni.dev/bandwidth";
pub const ANN_ALIASES: &str = "cni.dev/aliases";
/// The pod identity Kubernetes runtimes pass in `CNI_ARGS`, kept as
/// annotations of the same name.
pub const POD_ARGS: [&str; 3] = ["K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID"];

/// The endpoint ID of an attachment: a stable function of the spec's
/// primary key `(network name, container ID, interface)`.
pub fn endpoint_id(network: &str, container_id: &str, ifname: &str) -> Uuid {
    cnet_client::runtime::stable_id("cnet-cni", &format!("{network}\0{container_id}\0{ifname}"))
}

/// The subnets and type of a network, for comparing a config with what exists.
fn shape(v: &Value) -> (String, BTreeSet<String>) {
    let ty = v.get("Type").and_then(Value::as_str).unwrap_or("NAT").to_ascii_uppercase();
    let subnets = v
        .get("Ipams")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|i| i.get("Subnets").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|s| s.get("IpAddressPrefix").and_then(Value::as_str).map(str::to_string))
        .collect();
    (ty, subnets)
}

/// Makes sure the network exists; creates it from `conf.network` on first
/// use; refuses a config that describes a different network.
fn ensure_network(c: &Client, conf: &NetConf) -> Result<Network, CniError> {
    let path = format!("/networks/{}", escape(&conf.name));
    let existing = match c.get::<Network>(&path) {
        Ok(net) => Some(net),
        Err(e) if not_found(&e) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(want) = &conf.network else {
        return existing.ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("network {} does not exist in cnetd, and the configuration has no \"network\" object to create it from: add one, or create it with `cnet network create`", conf.name),
            )
        });
    };
    let net = match existing {
        Some(net) => net,
        None => {
            let mut body = want.clone();
            body["Name"] = json!(conf.name);
            // The runtime may remove the configuration without telling
            // cnet: the network goes with its last endpoint. An Overlay
            // network is the cluster's, not this host's.
            if shape(want).0 != "OVERLAY" && body.get("AutoDelete").is_none() {
                body["AutoDelete"] = json!(true);
            }
            match c.post::<Network>("/networks", &body) {
                Ok(net) => return Ok(net),
                // Another ADD created it a moment ago: compare with that one.
                Err(e) if e.code() == Some(ErrorCode::NetworkAlreadyExists) => c.get::<Network>(&path)?,
                Err(ClientError::Api(api)) => {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("the configuration's \"network\" cannot be created: {api}"),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let have = shape(&serde_json::to_value(&net).expect("serialisable"));
    let (want_ty, want_subnets) = shape(want);
    if have.0 != want_ty || have.1 != want_subnets {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "network {} exists as {} {:?}, but the configuration describes {} {:?}: fix the configuration or delete the network",
                conf.name, have.0, have.1, want_ty, want_subnets
            ),
        ));
    }
    Ok(net)
}

/// The namespace object of a netns path, adopting it when new.
fn ensure_namespace(c: &Client, netns: &str) -> Result<Namespace, CniError> {
    match runtime::adopt_namespace(c, netns) {
        Err(e) if e.code() == Some(ErrorCode::NamespaceNotFound) => {
            Err(CniError::new(code::INVALID_ENVIRONMENT, format!("CNI_NETNS {netns} is not a network namespace")))
        }
        other => other.map_err(Into::into),
    }
}

fn release_namespace(c: &Client, ns_key: &str) -> Result<(), CniError> {
    runtime::release_namespace(c, ns_key).map_err(Into::into)
}

pub fn add(c: &Client, conf: &NetConf, inv: &Invocation) -> Result<Value, CniError> {
    conf.check_name()?;
    let net = ensure_network(c, conf)?;
    let ns = ensure_namespace(c, &inv.netns)?;
    let id = endpoint_id(&conf.name, &inv.container_id, &inv.ifname);
    let mut policies: Vec<Value> = conf
        .port_mappings()?
        .into_iter()
        .map(|m| serde_json::to_value(cnet_model::EndpointPolicy::PortMapping(m)).expect("serialisable"))
        .collect();
    // The `bandwidth` capability, enforced as cnet's Bandwidth policy.
    if let Some(bw) = conf.bandwidth()? {
        policies.push(serde_json::to_value(cnet_model::EndpointPolicy::Bandwidth(bw)).expect("serialisable"));
    }
    if let Some(mtu) = conf.raw.get("mtu").and_then(Value::as_u64) {
        policies.push(json!({"Type": "InterfaceParameters", "Settings": {"Mtu": mtu}}));
    }
    let mut annotations = json!({ANN_CONTAINER: inv.container_id, ANN_IFNAME: inv.ifname, ANN_NETWORK: conf.name});
    for key in POD_ARGS {
        if let Some(v) = inv.args.get(key).filter(|v| !v.is_empty()) {
            annotations[key] = json!(v);
        }
    }
    for (key, ann) in [("bandwidth", ANN_BANDWIDTH), ("aliases", ANN_ALIASES)] {
        if let Some(v) = crate::config::get_ci(&conf.runtime, key).filter(|v| !v.is_null()) {
            annotations[ann] = json!(v.to_string());
        }
    }
    let mut body = json!({
        "ID": id, "HostComputeNetwork": net.id, "HostComputeNamespace": ns.id,
        "InterfaceName": inv.ifname, "Policies": policies, "Annotations": annotations,
    });
    let ips = conf.static_ips(inv)?;
    if !ips.is_empty() {
        body["IpConfigurations"] = json!(ips.iter().map(|ip| json!({"IpAddress": ip})).collect::<Vec<_>>());
    }
    if let Some(mac) = conf.static_mac(inv)? {
        body["MacAddress"] = json!(mac);
    }
    if let Some(dns) = conf.endpoint_dns() {
        body["Dns"] = dns;
    }
    // The `aliases` capability: names per network, this network's answer in its DNS.
    let aliases =
        crate::config::get_ci(&conf.runtime, "aliases").and_then(|a| a.get(&conf.name)).and_then(Value::as_array);
    if let Some(list) = aliases {
        body["Aliases"] = json!(list.iter().filter_map(Value::as_str).collect::<Vec<_>>());
    }
    let mut created = c.post::<Endpoint>("/endpoints", &body);
    if matches!(&created, Err(e) if e.code() == Some(ErrorCode::NetworkNotFound)) && conf.network.is_some() {
        // Its last endpoint left a moment ago and took the (AutoDelete)
        // network with it: make it again.
        body["HostComputeNetwork"] = json!(ensure_network(c, conf)?.id);
        created = c.post("/endpoints", &body);
    }
    let ep: Endpoint = match created {
        Ok(ep) => ep,
        Err(e) => {
            let _ = release_namespace(c, &ns.id.to_string());
            return Err(match e.code() {
                Some(ErrorCode::EndpointAlreadyExists) => CniError::new(
                    code::ALREADY_EXISTS,
                    format!(
                        "container {} already has interface {} on network {}: DEL it first",
                        inv.container_id, inv.ifname, conf.name
                    ),
                ),
                Some(ErrorCode::EndpointAlreadyAttached) => CniError::new(
                    code::ALREADY_EXISTS,
                    format!("interface {} already exists in {}: pick another CNI_IFNAME", inv.ifname, inv.netns),
                ),
                _ => e.into(),
            });
        }
    };
    Ok(add_result(&conf.cni_version, &ep, &inv.netns, conf.dns.as_ref()))
}

/// Idempotent: succeeds when the endpoint, its namespace or cnetd's record
/// of them are already gone.
pub fn del(c: &Client, conf: &NetConf, inv: &Invocation) -> Result<(), CniError> {
    let id = endpoint_id(&conf.name, &inv.container_id, &inv.ifname);
    // The namespace to release: CNI_NETNS, or (when the runtime sends none)
    // the one cnetd has the endpoint in.
    let ns = if inv.netns.is_empty() {
        match c.get::<Endpoint>(&format!("/endpoints/{id}")) {
            Ok(ep) => ep.host_compute_namespace,
            Err(e) if not_found(&e) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        Some(inv.netns.clone())
    };
    c.delete(&format!("/endpoints/{id}"))?;
    if let Some(ns) = ns {
        release_namespace(c, &ns)?;
    }
    Ok(())
}

pub fn check(c: &Client, conf: &NetConf, inv: &Invocation) -> Result<(), CniError> {
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult (the result of the ADD) in the configuration",
        ));
    };
    let id = endpoint_id(&conf.name, &inv.container_id, &inv.ifname);
    let ep: Endpoint = match c.get(&format!("/endpoints/{id}")) {
        Ok(ep) => ep,
        Err(e) if not_found(&e) => {
            return Err(CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "cnetd has no interface {} of container {} on network {}",
                    inv.ifname, inv.container_id, conf.name
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let mut problems = Vec::new();
    let have: BTreeSet<String> =
        ep.ip_configurations.iter().map(|c| format!("{}/{}", c.ip_address, c.prefix_length)).collect();
    for ip in prev.get("ips").and_then(Value::as_array).into_iter().flatten() {
        let addr = ip.get("address").and_then(Value::as_str).unwrap_or_default();
        if !have.contains(addr) {
            problems.push(format!("prevResult address {addr} is not the endpoint's ({have:?})"));
        }
    }
    let ns_path = c
        .get::<Namespace>(&format!("/namespaces/{}", escape(ep.host_compute_namespace.as_deref().unwrap_or("-"))))
        .ok()
        .and_then(|ns| ns.netns_path);
    if ns_path.as_deref() != Some(inv.netns.as_str()) {
        problems.push(format!("the endpoint is attached to {ns_path:?}, not to CNI_NETNS {}", inv.netns));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Check {
        drift: Vec<Finding>,
    }
    let report: Check = c.get(&format!("/endpoints/{id}/check"))?;
    problems.extend(report.drift.into_iter().map(|f| f.message));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::CHECK_FAILED, problems.join("; ")))
    }
}

/// 0 when cnetd answers and the network is healthy; 50 when ADD cannot work;
/// 51 when existing attachments may be degraded.
pub fn status(c: &Client, conf: &NetConf) -> Result<(), CniError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Diag {
        drift: Vec<Finding>,
        warnings: Vec<Finding>,
    }
    if let Err(e) = c.get::<Value>("/globals/version") {
        return Err(CniError::new(code::NOT_AVAILABLE, format!("cnetd does not answer: {e}")));
    }
    let report: Diag = c.get("/diag").map_err(|e| CniError::new(code::NOT_AVAILABLE, e.to_string()))?;
    let network = c.get::<Network>(&format!("/networks/{}", escape(&conf.name))).ok().map(|n| n.id);
    // What concerns this network: cnet's firewall table, other tables that
    // drop traffic, and findings about the network itself.
    let concerning: Vec<String> = report
        .drift
        .into_iter()
        .chain(report.warnings)
        .filter(|f| {
            f.subject.kind == SubjectKind::Firewall
                || f.kind == FindingKind::ForeignDrop
                || (f.subject.kind == SubjectKind::Network && network.is_some() && f.subject.id == network)
        })
        .map(|f| f.message)
        .collect();
    if concerning.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::DEGRADED, format!("network {} may be degraded: {}", conf.name, concerning.join("; "))))
    }
}

/// Removes every attachment of this network that is not in
/// `cni.dev/valid-attachments`.
pub fn gc(c: &Client, conf: &NetConf) -> Result<(), CniError> {
    let valid: BTreeSet<(String, String)> = conf.valid_attachments.iter().cloned().collect();
    let eps: Vec<Endpoint> = match c.get(&format!("/endpoints?network={}", escape(&conf.name))) {
        Ok(eps) => eps,
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut errors = Vec::new();
    for ep in eps {
        let a = |k: &str| ep.annotations.get(k).cloned().unwrap_or_default();
        if a(ANN_NETWORK) != conf.name || valid.contains(&(a(ANN_CONTAINER), a(ANN_IFNAME))) {
            continue;
        }
        if let Err(e) = c.delete(&format!("/endpoints/{}", ep.id)) {
            errors.push(e.to_string());
            continue;
        }
        if let Some(ns) = &ep.host_compute_namespace {
            if let Err(e) = release_namespace(c, ns) {
                errors.push(e.to_string());
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::TRY_AGAIN_LATER, format!("GC could not remove everything: {}", errors.join("; "))))
    }
}

/// `VERSION`: no daemon needed.
pub fn version(requested: &str) -> Value {
    let v = if crate::SUPPORTED_VERSIONS.contains(&requested) { requested } else { "1.1.0" };
    json!({"cniVersion": v, "supportedVersions": crate::SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_are_stable_and_distinct_per_attachment() {
        let a = endpoint_id("n", "c1", "eth0");
        assert_eq!(a, endpoint_id("n", "c1", "eth0"));
        assert_ne!(a, endpoint_id("n", "c1", "eth1"));
        assert_ne!(a, endpoint_id("m", "c1", "eth0"));
        assert_ne!(a, endpoint_id("n", "c2", "eth0"));
    }
}
