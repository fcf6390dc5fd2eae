//! Docker's remote network driver (`NetworkDriver.*`) on cnet's networks
//! and endpoints.
//!
//! Invariants:
//! - A Docker network is a cnet NAT network (Internal with `--internal`)
//!   whose ID is a stable function of Docker's NetworkID and whose name is
//!   `docker-<first 12 hex>`; it lives in cnet's store, so it outlives
//!   restarts of dockerd (which never replays `CreateNetwork`) and cnetd.
//! - A Docker endpoint is a cnet endpoint with an ID derived the same way,
//!   the addresses Docker's IPAM call gave and no namespace: `Join` hands
//!   its adapter off (`Service::hand_off_endpoint`); Docker moves and
//!   configures it. `DeleteEndpoint` removes both ends of the pair.
//! - Published ports are cnet `PortMapping` policies, added by
//!   `ProgramExternalConnectivity` and removed by `RevokeExternalConnectivity`.
//! - `-o` options cnet does not know are refused, naming the known ones.
//! - Errors are answered in the `Err` field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use cnet_model::{EndpointPolicy, ErrorCode};

use super::ports::{port_bindings, port_mappings, PortBinding};
use super::{nullable, short, stable_id, Plugin};
use crate::service::PolicyChange;

pub const OPT_GENERIC: &str = "com.docker.network.generic";
pub const OPT_IPV6: &str = "com.docker.network.enable_ipv6";
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// The `-o` options cnet maps to its network settings.
pub const KNOWN_OPTIONS: [&str; 1] = [OPT_MTU];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
    #[serde(rename = "IPv4Data", deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Interface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

/// The body of every endpoint call (each uses the fields it needs).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", deserialize_with = "nullable")]
    pub interface: Interface,
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
}

/// Docker's network options, as cnet settings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NetOptions {
    pub internal: bool,
    pub ipv6: bool,
    pub mtu: Option<u32>,
}

fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Maps `--internal`, `--ipv6` and the `-o` options; refuses `-o` options cnet does not know.
pub fn network_options(opts: &Map<String, Value>) -> Result<NetOptions, String> {
    let mut out = NetOptions { internal: flag(opts.get(OPT_INTERNAL)), ipv6: flag(opts.get(OPT_IPV6)), mtu: None };
    let generic = match opts.get(OPT_GENERIC) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for (k, v) in &generic {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match k.as_str() {
            OPT_MTU => {
                let mtu = text
                    .parse::<u32>()
                    .ok()
                    .filter(|m| (576..=65535).contains(m))
                    .ok_or_else(|| format!("option {OPT_MTU}={text:?} is not an MTU (576 to 65535)"))?;
                out.mtu = Some(mtu);
            }
            "com.docker.network.bridge.name" => {
                return Err(format!(
                    "option {k} is not supported: cnet names its bridges itself (cnb…); known options: {}",
                    KNOWN_OPTIONS.join(", ")
                ))
            }
            _ => return Err(format!("unknown option {k}: cnet knows {}", KNOWN_OPTIONS.join(", "))),
        }
    }
    Ok(out)
}

/// The cnet network request of a Docker `CreateNetwork`.
pub fn network_request(r: &NetworkRequest) -> Result<cnet_model::Network, String> {
    let o = network_options(&r.options)?;
    let mut subnets = Vec::new();
    let v6 = if o.ipv6 { &r.ipv6_data[..] } else { &[] };
    for d in r.ipv4_data.iter().chain(v6) {
        let any = if d.pool.contains(':') { "::/0" } else { "0.0.0.0/0" };
        let mut s = json!({"IpAddressPrefix": d.pool});
        let gw = d.gateway.split('/').next().unwrap_or_default();
        if !gw.is_empty() {
            s["Routes"] = json!([{"DestinationPrefix": any, "NextHop": gw}]);
        }
        subnets.push(s);
    }
    if subnets.is_empty() {
        return Err("the network has no IPv4 pool: give it a --subnet or use --ipam-driver cnet".into());
    }
    let mut req = json!({
        "ID": stable_id("network", &r.network_id),
        "Name": format!("docker-{}", short(&r.network_id)),
        "Type": if o.internal { "Internal" } else { "NAT" },
        "Ipams": [{"Subnets": subnets}],
        "Annotations": {"com.docker.network.id": r.network_id},
    });
    if let Some(mtu) = o.mtu {
        req["Mtu"] = json!(mtu);
    }
    serde_json::from_value(req).map_err(|e| format!("the network's settings are not valid for cnet: {e}"))
}

fn is(e: &crate::error::ServiceError, codes: &[ErrorCode]) -> bool {
    codes.contains(&e.code)
}

impl Plugin {
    pub(super) fn create_network(&self, r: NetworkRequest) -> Result<Value, String> {
        let req = network_request(&r)?;
        match self.svc.create_network(req) {
            Ok(_) => Ok(json!({})),
            // Asked again for a network it has (an earlier answer got lost).
            Err(e) if is(&e, &[ErrorCode::NetworkAlreadyExists]) => Ok(json!({})),
            Err(e) => Err(e.message),
        }
    }

    pub(super) fn delete_network(&self, network_id: &str) -> Result<Value, String> {
        match self.svc.delete_network(&stable_id("network", network_id).to_string()) {
            Err(e) if !is(&e, &[ErrorCode::NetworkNotFound]) => Err(e.message),
            _ => Ok(json!({})),
        }
    }

    pub(super) fn create_endpoint(&self, r: EndpointRequest) -> Result<Value, String> {
        let i = &r.interface;
        let mut ips = Vec::new();
        for a in [&i.address, &i.address_ipv6].into_iter().filter(|a| !a.is_empty()) {
            let net: ipnet::IpNet = a.parse().map_err(|_| format!("address {a:?} is not in CIDR form"))?;
            ips.push(json!({"IpAddress": net.addr(), "PrefixLength": net.prefix_len()}));
        }
        let mut req = json!({
            "ID": stable_id("endpoint", &r.endpoint_id),
            "Name": format!("docker-{}", short(&r.endpoint_id)),
            "HostComputeNetwork": stable_id("network", &r.network_id).to_string(),
            "IpConfigurations": ips,
            "Annotations": {"com.docker.network.id": r.network_id, "com.docker.endpoint.id": r.endpoint_id},
        });
        if !i.mac_address.is_empty() {
            req["MacAddress"] = json!(i.mac_address);
        }
        let ep: cnet_model::Endpoint =
            serde_json::from_value(req).map_err(|e| format!("the endpoint's settings are not valid for cnet: {e}"))?;
        let bindings = port_bindings(&r.options)?;
        let rec = self.svc.create_endpoint(ep).map_err(|e| e.message)?;
        self.book().consumed(rec.ips());
        if !bindings.is_empty() {
            self.ports().insert(rec.id, bindings);
        }
        // Only what Docker left empty: it refuses an answer that repeats what it set.
        Ok(if i.mac_address.is_empty() { json!({"Interface": {"MacAddress": rec.mac.to_string()}}) } else { json!({}) })
    }

    pub(super) fn delete_endpoint(&self, r: EndpointRequest) -> Result<Value, String> {
        let id = stable_id("endpoint", &r.endpoint_id);
        self.ports().remove(&id);
        self.svc.delete_endpoint(&id.to_string()).map_err(|e| e.message)?;
        Ok(json!({}))
    }

    pub(super) fn join(&self, r: EndpointRequest) -> Result<Value, String> {
        let id = stable_id("endpoint", &r.endpoint_id).to_string();
        let peer = format!("cnd{}", short(&r.endpoint_id));
        let ep = self.svc.hand_off_endpoint(&id, &peer).map_err(|e| e.message)?;
        let net = self.svc.get_network(&ep.network.to_string()).map_err(|e| e.message)?;
        let (mut gw4, mut gw6) = (String::new(), String::new());
        // An internal network has no way out: no default route (and Docker
        // adds no docker_gwbridge for internal networks).
        if net.kind != cnet_model::NetworkType::Internal {
            for (_, gw) in net.gateways() {
                match gw {
                    IpAddr::V4(_) if gw4.is_empty() => gw4 = gw.to_string(),
                    IpAddr::V6(_) if gw6.is_empty() => gw6 = gw.to_string(),
                    _ => {}
                }
            }
        }
        Ok(json!({
            "InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
            "Gateway": gw4,
            "GatewayIPv6": gw6,
            "StaticRoutes": [],
            "DisableGatewayService": false,
        }))
    }

    pub(super) fn program_external(&self, r: EndpointRequest) -> Result<Value, String> {
        let id = stable_id("endpoint", &r.endpoint_id);
        let mut bindings = port_bindings(&r.options)?;
        if bindings.is_empty() {
            bindings = self.ports().get(&id).cloned().unwrap_or_default();
        }
        if bindings.is_empty() {
            return Ok(json!({}));
        }
        let ep = self.svc.get_endpoint(&id.to_string()).map_err(|e| e.message)?;
        let mut used = BTreeSet::new();
        for e in self.svc.list_endpoints(&Default::default()).map_err(|e| e.message)? {
            used.extend(e.port_mappings().flat_map(|m| m.ports().map(|(ext, _)| (m.protocol.number(), ext))));
        }
        let have: Vec<_> = ep.port_mappings().cloned().collect();
        // A retry: the mappings this endpoint already has are not asked for
        // again (a fixed host port by its number, a chosen one by the container port).
        let wanted: Vec<PortBinding> = bindings
            .into_iter()
            .filter(|b| {
                let fixed = b.host_port != 0 && b.host_port_end <= b.host_port;
                !have.iter().any(|m| {
                    m.protocol.number() == b.proto
                        && m.internal_port == b.port
                        && (!fixed || m.external_port == b.host_port)
                })
            })
            .collect();
        let add: Vec<EndpointPolicy> =
            port_mappings(&wanted, &used)?.into_iter().map(EndpointPolicy::PortMapping).collect();
        if !add.is_empty() {
            self.svc.modify_endpoint(&id.to_string(), PolicyChange::Add(add)).map_err(|e| e.message)?;
        }
        Ok(json!({}))
    }

    pub(super) fn revoke_external(&self, r: EndpointRequest) -> Result<Value, String> {
        let id = stable_id("endpoint", &r.endpoint_id).to_string();
        let ep = match self.svc.get_endpoint(&id) {
            Ok(ep) => ep,
            Err(e) if is(&e, &[ErrorCode::EndpointNotFound]) => return Ok(json!({})),
            Err(e) => return Err(e.message),
        };
        if ep.port_mappings().next().is_some() {
            let kept: Vec<EndpointPolicy> =
                ep.policies.iter().filter(|p| !matches!(p, EndpointPolicy::PortMapping(_))).cloned().collect();
            self.svc.modify_endpoint(&id, PolicyChange::Update(kept)).map_err(|e| e.message)?;
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn docker_options_map_to_cnet_settings_and_unknown_ones_are_refused() {
        let o = network_options(&opts(json!({
            OPT_IPV6: true, OPT_INTERNAL: true, OPT_GENERIC: {OPT_MTU: "1400"}
        })))
        .unwrap();
        assert_eq!(o, NetOptions { internal: true, ipv6: true, mtu: Some(1400) });
        assert_eq!(network_options(&opts(json!({OPT_GENERIC: null}))).unwrap(), NetOptions::default());
        let err = network_options(&opts(json!({OPT_GENERIC: {"com.docker.network.foo": "1"}}))).unwrap_err();
        assert!(err.contains("unknown option com.docker.network.foo") && err.contains(OPT_MTU), "{err}");
        assert!(network_options(&opts(json!({OPT_GENERIC: {OPT_MTU: "big"}}))).is_err());
    }

    #[test]
    fn a_docker_network_becomes_a_nat_network_with_its_pools_and_gateways() {
        let r: NetworkRequest = serde_json::from_value(json!({
            "NetworkID": "9f1c0000aaaa5555", "Options": {OPT_IPV6: false, OPT_GENERIC: {}},
            "IPv4Data": [{"AddressSpace": "CnetLocal", "Pool": "10.80.0.0/24", "Gateway": "10.80.0.254/24", "AuxAddresses": null}],
            "IPv6Data": [{"Pool": "fd00:90::/64", "Gateway": "fd00:90::1/64"}]
        }))
        .unwrap();
        let net = network_request(&r).unwrap();
        assert_eq!(net.name.as_str(), "docker-9f1c0000aaaa");
        assert_eq!(net.r#type, cnet_model::NetworkType::Nat);
        assert_eq!(net.id, stable_id("network", "9f1c0000aaaa5555"));
        let subnets: Vec<_> = net.subnets().collect();
        assert_eq!(subnets.len(), 1, "IPv6 only with enable_ipv6");
        assert_eq!(subnets[0].gateway().to_string(), "10.80.0.254");
    }
}
