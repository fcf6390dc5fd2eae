//! Shared helpers of cnetd's end-to-end tests.
#![allow(dead_code, unused_imports)]

use cnet_model::{Endpoint, Namespace, Network};
pub use cnet_testkit::probe;
pub use cnet_testkit::{World, HOST_IP, HOST_IP6, LAN_IP, LAN_IP6};
use serde_json::{json, Value};

pub fn network(w: &World, name: &str, ty: &str, subnets: &[&str]) -> Network {
    let subnets: Vec<Value> = subnets.iter().map(|s| json!({"IpAddressPrefix": s})).collect();
    w.client()
        .post("/networks", &json!({"Name": name, "Type": ty, "Ipams": [{"Type": "Static", "Subnets": subnets}]}))
        .unwrap_or_else(|e| panic!("create network {name}: {e}"))
}

/// A compartment with one endpoint on `net`, created and attached in one call.
pub struct Container {
    pub ns: Namespace,
    pub ep: Endpoint,
}

impl Container {
    pub fn path(&self) -> String {
        self.ns.netns_path.clone().unwrap()
    }
    pub fn ip(&self) -> String {
        self.ep.ip_configurations[0].ip_address.to_string()
    }
    pub fn ip6(&self) -> String {
        self.ep.ip_configurations.iter().find(|c| c.ip_address.is_ipv6()).unwrap().ip_address.to_string()
    }
}

pub fn container(w: &World, net: &Network, short: &str, policies: Value) -> Container {
    let ns: Namespace = w.client().post("/namespaces", &json!({"Name": w.name(short)})).expect("namespace");
    let ep: Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"Name": w.name(short), "HostComputeNetwork": net.id, "HostComputeNamespace": ns.id, "Policies": policies}),
        )
        .unwrap_or_else(|e| panic!("endpoint {short}: {e}"));
    Container { ns, ep }
}

pub fn port_map(proto: u32, ext: u16, int: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": proto, "ExternalPort": ext, "InternalPort": int}})
}

/// A network of type `ty` on the test host's LAN uplink (`uplink0`, 198.18.0.0/24).
pub fn physical_network(w: &World, name: &str, ty: &str) -> Network {
    w.client()
        .post(
            "/networks",
            &json!({"Name": name, "Type": ty,
                "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}],
                "Ipams": [{"Type": "Static", "Subnets": [{"IpAddressPrefix": "198.18.0.0/24"}]}]}),
        )
        .unwrap_or_else(|e| panic!("create network {name}: {e}"))
}

/// An `ACL` policy: `Action`, `Direction`, and more `settings`.
pub fn acl(action: &str, dir: &str, settings: Value) -> Value {
    let mut s = json!({"Action": action, "Direction": dir});
    s.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    json!({"Type": "ACL", "Settings": s})
}

/// An endpoint modify request (`ResourceType: Policy`) of `kind` with `policies`.
pub fn patch(w: &World, ep: &Endpoint, kind: &str, policies: Value) -> Result<Value, cnet_client::ClientError> {
    let body = json!({"ResourceType": "Policy", "RequestType": kind, "Settings": {"Policies": policies}});
    w.client().patch::<Value>(&format!("/endpoints/{}", ep.id), &body)
}

/// A compartment on `net` whose endpoint may send from any address
/// (`AllowSpoofing`), with `service_ip` on its loopback: a service address
/// that other endpoints reach only with a route through it.
pub fn router(w: &World, net: &Network, short: &str, service_ip: &str) -> Container {
    let ns: Namespace = w.client().post("/namespaces", &json!({"Name": w.name(short)})).expect("namespace");
    let ep: Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"Name": w.name(short), "HostComputeNetwork": net.id, "HostComputeNamespace": ns.id,
                "Flags": cnet_model::endpoint::ALLOW_SPOOFING}),
        )
        .unwrap_or_else(|e| panic!("endpoint {short}: {e}"));
    let c = Container { ns, ep };
    w.exec_in(&c.path(), &["ip", "addr", "add", &format!("{service_ip}/32"), "dev", "lo"]);
    c
}
