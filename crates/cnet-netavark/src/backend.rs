//! `setup` and `teardown`, each a few calls to cnetd.
//!
//! Invariants:
//! - A container's endpoint on a network has a stable ID from (network,
//!   container ID), so teardown finds it without addresses (Podman may not
//!   send them then) and a repeated setup replaces a stale one.
//! - `setup` is all or nothing across the container's networks.
//! - `teardown` succeeds when the namespace, the endpoint or cnetd's record
//!   of them is already gone, and goes on after an error.

use std::collections::BTreeMap;

use cnet_client::runtime::{self, not_found};
use cnet_client::{escape, Client, ClientError};
use cnet_model::{Endpoint, ErrorCode};
use serde_json::{json, Value};

use crate::mapping::{self, ANN_NETWORK_ID};
use crate::types::{Network, NetworkOptions, PerNetworkOptions, StatusBlock};

/// Annotations of the endpoints `cnet-netavark` makes.
pub const ANN_CONTAINER_ID: &str = "podman.io/container-id";
pub const ANN_CONTAINER_NAME: &str = "cnet.dev/container-name";

pub type Result<T> = std::result::Result<T, String>;

fn api(e: ClientError) -> String {
    e.to_string()
}

pub fn endpoint_id(network: &str, container_id: &str) -> uuid::Uuid {
    runtime::stable_id("cnet-netavark", &format!("{network}\0{container_id}"))
}

/// The cnet network serving Podman's `net`: made on first use, made again
/// when Podman recreated the network under the same name (a new ID) and
/// nothing uses the old one.
fn ensure_network(c: &Client, net: &Network) -> Result<cnet_model::Network> {
    let path = format!("/networks/{}", escape(&net.name));
    let want = mapping::cnet_network(net)?;
    for _ in 0..3 {
        match c.get::<cnet_model::Network>(&path) {
            Ok(have) if have.annotations.get(ANN_NETWORK_ID) == Some(&net.id) => return Ok(have),
            Ok(have) if !have.annotations.contains_key(ANN_NETWORK_ID) => {
                return Err(format!(
                    "cnet already has a network named {} that Podman did not make: rename one of them",
                    net.name
                ))
            }
            Ok(have) => match c.delete(&format!("/networks/{}", have.id)) {
                Ok(()) => continue,
                Err(e) if e.code() == Some(ErrorCode::EntityHasReferences) => {
                    return Err(format!(
                        "Podman network {} was made anew (ID {}), but containers still use the old one in cnet: stop them first ({e})",
                        net.name, net.id
                    ))
                }
                Err(e) => return Err(api(e)),
            },
            Err(e) if not_found(&e) => match c.post::<cnet_model::Network>("/networks", &want) {
                Ok(made) => return Ok(made),
                // Another container's setup made it a moment ago.
                Err(e) if e.code() == Some(ErrorCode::NetworkAlreadyExists) => continue,
                Err(ClientError::Api(e)) => return Err(format!("network {} cannot be made in cnet: {e}", net.name)),
                Err(e) => return Err(api(e)),
            },
            Err(e) => return Err(api(e)),
        }
    }
    Err(format!("network {} keeps changing in cnet: retry", net.name))
}

fn endpoint_body(o: &NetworkOptions, net: &Network, per: &PerNetworkOptions, ns: &str) -> Result<Value> {
    let policies: Vec<Value> = if mapping::publishes_ports(net) {
        o.port_mappings.iter().map(mapping::port_policy).collect::<Result<_>>()?
    } else {
        vec![]
    };
    let mut body = json!({
        "ID": endpoint_id(&net.name, &o.container_id), "HostComputeNamespace": ns,
        "InterfaceName": per.interface_name, "Policies": policies,
        "Annotations": {ANN_CONTAINER_ID: o.container_id, ANN_CONTAINER_NAME: o.container_name},
        "IpConfigurations": per.static_ips.iter().map(|ip| json!({"IpAddress": ip})).collect::<Vec<_>>(),
    });
    if net.dns_enabled {
        body["Aliases"] = json!(mapping::names(&o.container_name, per));
    }
    if let Some(mac) = per.static_mac.as_deref().filter(|m| !m.is_empty()) {
        body["MacAddress"] = json!(mac);
    }
    Ok(body)
}

/// One network of a setup: its endpoint in the namespace.
fn setup_one(c: &Client, o: &NetworkOptions, name: &str, per: &PerNetworkOptions, ns: &str) -> Result<StatusBlock> {
    let net = o.network_info.get(name).ok_or_else(|| format!("network {name} is missing from network_info"))?;
    if per.static_ips.is_empty() && !net.subnets.is_empty() {
        return Err(format!("no static ips provided for network {name}: Podman's IPAM should have chosen them"));
    }
    let mut body = endpoint_body(o, net, per, ns)?;
    let id = endpoint_id(name, &o.container_id);
    for attempt in 0..3 {
        body["HostComputeNetwork"] = json!(ensure_network(c, net)?.id);
        match c.post::<Endpoint>("/endpoints", &body) {
            Ok(ep) => return mapping::status(net, per, &ep),
            // The network went with its last endpoint a moment ago: again.
            Err(e) if e.code() == Some(ErrorCode::NetworkNotFound) => continue,
            // Left from a setup whose teardown never came (a killed conmon).
            Err(e) if e.code() == Some(ErrorCode::EndpointAlreadyExists) && attempt == 0 => {
                c.delete(&format!("/endpoints/{id}")).map_err(api)?;
            }
            Err(e) => return Err(format!("network {name}: {e}")),
        }
    }
    Err(format!("network {name} keeps changing in cnet: retry"))
}

pub fn setup(c: &Client, netns: &str, o: &NetworkOptions) -> Result<BTreeMap<String, StatusBlock>> {
    if let Err(e) = std::fs::metadata(netns) {
        return Err(format!("invalid namespace path: {netns}: {e}"));
    }
    let ns = match runtime::adopt_namespace(c, netns) {
        Ok(ns) => ns.id.to_string(),
        Err(e) if e.code() == Some(ErrorCode::NamespaceNotFound) => {
            return Err(format!("invalid namespace path: {netns} is not a network namespace"))
        }
        Err(e) => return Err(api(e)),
    };
    let mut done = BTreeMap::new();
    for (name, per) in &o.networks {
        match setup_one(c, o, name, per, &ns) {
            Ok(st) => {
                done.insert(name.clone(), st);
            }
            Err(e) => {
                // All or nothing: undo the networks already set up.
                for set_up in done.keys() {
                    let _ = c.delete(&format!("/endpoints/{}", endpoint_id(set_up, &o.container_id)));
                }
                let _ = runtime::release_namespace(c, &ns);
                return Err(e);
            }
        }
    }
    Ok(done)
}

pub fn teardown(c: &Client, netns: &str, o: &NetworkOptions) -> Result<()> {
    let mut errors = Vec::new();
    for name in o.networks.keys() {
        if let Err(e) = c.delete(&format!("/endpoints/{}", endpoint_id(name, &o.container_id))) {
            if matches!(e, ClientError::Connect { .. }) {
                return Err(api(e));
            }
            errors.push(format!("network {name}: {e}"));
        }
    }
    if let Err(e) = runtime::release_namespace(c, netns) {
        errors.push(e.to_string());
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(format!("netavark encountered multiple errors:\n\t- {}", errors.join("\n\t- "))),
    }
}
