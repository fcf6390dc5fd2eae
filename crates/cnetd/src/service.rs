//! The service: every API operation on networks, endpoints and namespaces.
//!
//! Invariants:
//! - The in-memory state mirrors the store exactly; both change together
//!   under one lock, and the store commit comes first.
//! - Kernel work happens outside that lock, bracketed by intents: the object
//!   is written with its intent (Create, Attach, Detach, Delete, Modify)
//!   before the kernel is touched and without it after. A crash in between
//!   leaves the intent for [`crate::reconcile`] to roll back or finish.
//! - An object with an intent is busy: other changes to it are refused with
//!   `OperationInProgress` rather than interleaved.
//! - Namespace `Resources` are derived from the endpoints, never stored twice.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cnet_dataplane::{netns, DataplaneError};
use cnet_model::validate::{self, Usage};
use cnet_model::{
    ApiError, Endpoint, EndpointPolicy, EndpointState, ErrorCode, ModifyRequest, Namespace, NamespaceResource, Network,
    RequestType, Subnet,
};
use cnet_store::{Batch, Kind, Store};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::driver::bridge;
use crate::firewall::{self, Firewall};

/// A stored object and the kernel change in flight for it, if any.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rec<T> {
    pub object: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

/// A kernel change that was started and not yet finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intent {
    Create,
    Attach(Uuid),
    Detach,
    Delete,
    Modify,
}

#[derive(Default)]
pub struct State {
    pub networks: BTreeMap<Uuid, Rec<Network>>,
    pub endpoints: BTreeMap<Uuid, Rec<Endpoint>>,
    pub namespaces: BTreeMap<Uuid, Rec<Namespace>>,
}

/// What this host's kernel can do, probed at start.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub sctp: bool,
}

impl Capabilities {
    pub fn probe() -> Self {
        Capabilities { sctp: cnet_dataplane::probe::sctp() }
    }
}

pub struct Service {
    pub(crate) state: Mutex<State>,
    store: Store,
    pub firewall: Firewall,
    pub caps: Capabilities,
    pub(crate) reaper: cnet_dataplane::reaper::Reaper,
}

type R<T> = Result<T, ApiError>;

fn store_err(e: cnet_store::StoreError) -> ApiError {
    ApiError::internal(format!("the store refused the change, nothing was applied: {e}"))
}

pub(crate) fn kernel_err(what: &str, e: DataplaneError) -> ApiError {
    if e.is_bridge_full() {
        return ApiError::new(
            ErrorCode::AddressPoolExhausted,
            format!("{what}: the network's Linux bridge is full (a bridge takes at most 1024 ports): put more endpoints on another network"),
        );
    }
    if e.is_exists() {
        return ApiError::new(
            ErrorCode::EndpointAlreadyAttached,
            format!("{what}: the interface already exists in the namespace ({e}): pick another InterfaceName"),
        );
    }
    ApiError::new(ErrorCode::DegradedOperation, format!("{what}: the kernel refused it: {e}"))
}

fn not_found(code: ErrorCode, what: &str, key: &str) -> ApiError {
    ApiError::new(code, format!("{what} {key:?} does not exist: list them with `cnet {} list`", what.to_lowercase()))
}

/// Filters for listing endpoints.
#[derive(Default, Debug, Deserialize)]
pub struct EndpointFilter {
    pub name: Option<String>,
    pub network: Option<String>,
    pub namespace: Option<String>,
}

/// Filters for listing networks.
#[derive(Default, Debug, Deserialize)]
pub struct NetworkFilter {
    pub name: Option<String>,
    pub r#type: Option<String>,
}

impl Service {
    pub fn new(store: Store, state: State, firewall: Firewall, caps: Capabilities) -> Self {
        Service { state: Mutex::new(state), store, firewall, caps, reaper: cnet_dataplane::reaper::Reaper::start() }
    }

    pub fn load_state(store: &Store) -> Result<State, cnet_store::StoreError> {
        let mut st = State::default();
        for r in store.load::<Rec<Network>>(Kind::Network)? {
            st.networks.insert(r.object.id, r);
        }
        for r in store.load::<Rec<Endpoint>>(Kind::Endpoint)? {
            st.endpoints.insert(r.object.id, r);
        }
        for r in store.load::<Rec<Namespace>>(Kind::Namespace)? {
            st.namespaces.insert(r.object.id, r);
        }
        Ok(st)
    }

    pub(crate) fn commit(&self, batch: Batch) -> R<()> {
        self.store.commit(batch).map_err(store_err)
    }

    fn put_net(&self, st: &mut State, rec: Rec<Network>) -> R<()> {
        let mut b = Batch::new();
        b.put(Kind::Network, &rec.object.id.to_string(), &rec);
        self.commit(b)?;
        st.networks.insert(rec.object.id, rec);
        Ok(())
    }
    fn put_ep(&self, st: &mut State, rec: Rec<Endpoint>) -> R<()> {
        let mut b = Batch::new();
        b.put(Kind::Endpoint, &rec.object.id.to_string(), &rec);
        self.commit(b)?;
        st.endpoints.insert(rec.object.id, rec);
        Ok(())
    }
    fn put_ns(&self, st: &mut State, rec: Rec<Namespace>) -> R<()> {
        let mut b = Batch::new();
        b.put(Kind::Namespace, &rec.object.id.to_string(), &rec);
        self.commit(b)?;
        st.namespaces.insert(rec.object.id, rec);
        Ok(())
    }
    pub(crate) fn remove(&self, kind: Kind, id: Uuid) -> R<()> {
        let mut st = self.state.lock().unwrap();
        let mut b = Batch::new();
        b.delete(kind, &id.to_string());
        self.commit(b)?;
        match kind {
            Kind::Network => drop(st.networks.remove(&id)),
            Kind::Endpoint => drop(st.endpoints.remove(&id)),
            Kind::Namespace => drop(st.namespaces.remove(&id)),
        }
        Ok(())
    }
    /// Clears an endpoint's intent after its kernel work, applying `f` to it.
    fn finish_ep(&self, id: Uuid, f: impl FnOnce(&mut Endpoint)) -> R<Endpoint> {
        let mut st = self.state.lock().unwrap();
        let mut rec = st.endpoints.get(&id).cloned().ok_or_else(|| ApiError::internal("endpoint vanished"))?;
        f(&mut rec.object);
        rec.intent = None;
        let out = rec.object.clone();
        self.put_ep(&mut st, rec)?;
        Ok(out)
    }

    // ---------- lookups ----------

    fn network_id(st: &State, key: &str) -> R<Uuid> {
        if let Ok(id) = key.parse::<Uuid>() {
            if st.networks.contains_key(&id) {
                return Ok(id);
            }
        }
        st.networks
            .values()
            .find(|r| r.object.name.as_str() == key)
            .map(|r| r.object.id)
            .ok_or_else(|| not_found(ErrorCode::NetworkNotFound, "Network", key))
    }
    fn endpoint_id(st: &State, key: &str) -> R<Uuid> {
        if let Ok(id) = key.parse::<Uuid>() {
            if st.endpoints.contains_key(&id) {
                return Ok(id);
            }
        }
        st.endpoints
            .values()
            .find(|r| r.object.name.as_ref().map(|n| n.as_str()) == Some(key))
            .map(|r| r.object.id)
            .ok_or_else(|| not_found(ErrorCode::EndpointNotFound, "Endpoint", key))
    }
    fn namespace_id(st: &State, key: &str) -> R<Uuid> {
        if let Ok(id) = key.parse::<Uuid>() {
            if st.namespaces.contains_key(&id) {
                return Ok(id);
            }
        }
        st.namespaces
            .values()
            .find(|r| {
                r.object.name.as_ref().map(|n| n.as_str()) == Some(key) || r.object.netns_path.as_deref() == Some(key)
            })
            .map(|r| r.object.id)
            .ok_or_else(|| not_found(ErrorCode::NamespaceNotFound, "Namespace", key))
    }

    fn with_resources(st: &State, mut ns: Namespace) -> Namespace {
        let id = ns.id.to_string();
        ns.resources = st
            .endpoints
            .values()
            .filter(|e| e.object.host_compute_namespace.as_deref() == Some(id.as_str()))
            .map(|e| NamespaceResource {
                r#type: "Endpoint".into(),
                data: cnet_model::namespace::ResourceData { id: e.object.id },
            })
            .collect();
        ns
    }

    pub fn get_network(&self, key: &str) -> R<Network> {
        let st = self.state.lock().unwrap();
        Ok(st.networks[&Self::network_id(&st, key)?].object.clone())
    }
    pub fn list_networks(&self, f: &NetworkFilter) -> R<Vec<Network>> {
        let st = self.state.lock().unwrap();
        let ty = f.r#type.as_deref().map(str::parse::<cnet_model::NetworkType>).transpose()?;
        Ok(st
            .networks
            .values()
            .map(|r| &r.object)
            .filter(|n| f.name.as_deref().is_none_or(|x| n.name.as_str() == x))
            .filter(|n| ty.is_none_or(|t| n.r#type == t))
            .cloned()
            .collect())
    }
    pub fn get_endpoint(&self, key: &str) -> R<Endpoint> {
        let st = self.state.lock().unwrap();
        Ok(st.endpoints[&Self::endpoint_id(&st, key)?].object.clone())
    }
    pub fn list_endpoints(&self, f: &EndpointFilter) -> R<Vec<Endpoint>> {
        let st = self.state.lock().unwrap();
        let net = f.network.as_deref().map(|k| Self::network_id(&st, k)).transpose()?.map(|i| i.to_string());
        let ns = f.namespace.as_deref().map(|k| Self::namespace_id(&st, k)).transpose()?.map(|i| i.to_string());
        Ok(st
            .endpoints
            .values()
            .map(|r| &r.object)
            .filter(|e| f.name.as_deref().is_none_or(|x| e.name.as_ref().map(|n| n.as_str()) == Some(x)))
            .filter(|e| net.as_deref().is_none_or(|x| e.host_compute_network == x))
            .filter(|e| ns.is_none() || e.host_compute_namespace == ns)
            .cloned()
            .collect())
    }
    pub fn get_namespace(&self, key: &str) -> R<Namespace> {
        let st = self.state.lock().unwrap();
        let id = Self::namespace_id(&st, key)?;
        Ok(Self::with_resources(&st, st.namespaces[&id].object.clone()))
    }
    pub fn list_namespaces(&self, name: Option<&str>) -> R<Vec<Namespace>> {
        let st = self.state.lock().unwrap();
        Ok(st
            .namespaces
            .values()
            .filter(|r| name.is_none_or(|x| r.object.name.as_ref().map(|n| n.as_str()) == Some(x)))
            .map(|r| Self::with_resources(&st, r.object.clone()))
            .collect())
    }

    // ---------- networks ----------

    pub fn create_network(&self, mut net: Network) -> R<Network> {
        {
            let mut st = self.state.lock().unwrap();
            if net.id.is_nil() {
                net.id = Uuid::new_v4();
            } else if st.networks.contains_key(&net.id) {
                return Err(ApiError::new(
                    ErrorCode::NetworkAlreadyExists,
                    format!("network {} already exists", net.id),
                ));
            }
            let others: Vec<&Network> = st.networks.values().map(|r| &r.object).collect();
            validate::validate_network(&net, &others)?;
            let bridge = net.derived_bridge_name();
            if others.iter().any(|o| o.derived_bridge_name() == bridge) {
                return Err(ApiError::invalid_param(
                    "the network ID collides with another network's bridge name: omit ID",
                ));
            }
            net.bridge_name = Some(bridge);
            net.schema_version = Default::default();
            self.put_net(&mut st, Rec { object: net.clone(), intent: Some(Intent::Create) })?;
        }
        let programmed = bridge::setup_network(&net)
            .and_then(|_| self.firewall.set(net.id, firewall::network_elems(&net, &net.derived_bridge_name())));
        if let Err(e) = programmed {
            let _ = self.firewall.remove(net.id);
            let _ = bridge::teardown_network(&net);
            self.remove(Kind::Network, net.id)?;
            return Err(kernel_err(&format!("creating network {}", net.name), e));
        }
        let mut st = self.state.lock().unwrap();
        self.put_net(&mut st, Rec { object: net.clone(), intent: None })?;
        Ok(net)
    }

    pub fn delete_network(&self, key: &str) -> R<()> {
        let net = {
            let mut st = self.state.lock().unwrap();
            let Ok(id) = Self::network_id(&st, key) else { return Ok(()) };
            let rec = st.networks[&id].clone();
            if rec.intent.is_some() && rec.intent != Some(Intent::Delete) {
                return Err(ApiError::in_progress(format!("network {} is being changed: retry", rec.object.name)));
            }
            let idstr = id.to_string();
            let users: Vec<String> = st
                .endpoints
                .values()
                .filter(|e| e.object.host_compute_network == idstr)
                .map(|e| e.object.display_name())
                .collect();
            if !users.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::EntityHasReferences,
                    format!(
                        "network {} still has {} endpoint(s) ({}): delete them first",
                        rec.object.name,
                        users.len(),
                        users.join(", ")
                    ),
                ));
            }
            self.put_net(&mut st, Rec { object: rec.object.clone(), intent: Some(Intent::Delete) })?;
            rec.object
        };
        self.finish_network_delete(&net)
    }

    /// Firewall state goes before the link, so no DNAT ever points into a
    /// bridge that is being removed.
    pub(crate) fn finish_network_delete(&self, net: &Network) -> R<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.firewall.remove(net.id) {
            errors.push(e.to_string());
        }
        if let Err(e) = bridge::teardown_network(net) {
            errors.push(e.to_string());
        }
        if !errors.is_empty() {
            return Err(ApiError::new(
                ErrorCode::DegradedOperation,
                format!(
                    "deleting network {} failed; it stays marked for deletion and a retry or restart finishes it: {}",
                    net.name,
                    errors.join("; ")
                ),
            ));
        }
        self.remove(Kind::Network, net.id)?;
        let _ = self.firewall.delete_table_if_unused();
        Ok(())
    }

    pub fn modify_network(&self, key: &str, req: ModifyRequest) -> R<Network> {
        let (old, new) = {
            let mut st = self.state.lock().unwrap();
            let id = Self::network_id(&st, key)?;
            let rec = st.networks[&id].clone();
            if rec.intent.is_some() {
                return Err(ApiError::in_progress(format!("network {} is being changed: retry", rec.object.name)));
            }
            let mut net = rec.object.clone();
            match (req.resource_type.as_str(), req.request_type) {
                ("Subnet", RequestType::Add) => {
                    let s: Subnet = parse_settings(req.settings)?;
                    match net.ipams.first_mut() {
                        Some(ipam) => ipam.subnets.push(s),
                        None => net.ipams.push(cnet_model::Ipam { r#type: "Static".into(), subnets: vec![s] }),
                    }
                }
                ("Subnet", RequestType::Remove) => {
                    let s: Subnet = parse_settings(req.settings)?;
                    let prefix = s.ip_address_prefix;
                    let idstr = id.to_string();
                    if st.endpoints.values().any(|e| {
                        e.object.host_compute_network == idstr
                            && e.object.ip_configurations.iter().any(|c| prefix.contains(&c.ip_address))
                    }) {
                        return Err(ApiError::new(
                            ErrorCode::EntityHasReferences,
                            format!("endpoints still use subnet {prefix}: delete them first"),
                        ));
                    }
                    let before = net.subnets().count();
                    for ipam in &mut net.ipams {
                        ipam.subnets.retain(|x| x.ip_address_prefix != prefix);
                    }
                    if net.subnets().count() == before {
                        return Err(ApiError::invalid_subnet(format!("network {} has no subnet {prefix}", net.name)));
                    }
                }
                ("Dns", RequestType::Update) => net.dns = Some(parse_settings(req.settings)?),
                (rt, q) => {
                    return Err(ApiError::unsupported(format!(
                        "modify {rt}/{q:?} on a network is not supported: use Subnet Add/Remove or Dns Update"
                    )))
                }
            }
            let others: Vec<&Network> = st.networks.values().map(|r| &r.object).collect();
            validate::validate_network(&net, &others)?;
            self.put_net(&mut st, Rec { object: net.clone(), intent: Some(Intent::Modify) })?;
            (rec.object, net)
        };
        let bridge_name = new.derived_bridge_name();
        let result = bridge::setup_network(&new).and_then(|_| {
            for s in old.subnets().filter(|s| !new.subnets().any(|n| n.ip_address_prefix == s.ip_address_prefix)) {
                if let Some(gw) = validate::gateway_of(&old, s) {
                    cnet_dataplane::link::delete_address(None, &bridge_name, (gw, s.ip_address_prefix.prefix_len()))?;
                }
            }
            self.firewall.set(new.id, firewall::network_elems(&new, &bridge_name))
        });
        let mut st = self.state.lock().unwrap();
        match result {
            Ok(()) => {
                self.put_net(&mut st, Rec { object: new.clone(), intent: None })?;
                Ok(new)
            }
            Err(e) => {
                self.put_net(&mut st, Rec { object: old, intent: None })?;
                drop(st);
                Err(kernel_err("modifying network", e))
            }
        }
    }

    // ---------- endpoints ----------

    fn usage<'a>(st: &'a State, net: &Network, except: Option<Uuid>) -> Usage<'a> {
        let idstr = net.id.to_string();
        let mut usage = Usage::default();
        let mut count = 0u128;
        for e in st.endpoints.values().map(|r| &r.object).filter(|e| Some(e.id) != except) {
            for m in e.port_mappings() {
                usage.port_mappings.push((m, e));
            }
            if e.host_compute_network == idstr {
                count += 1;
                usage.ips.extend(e.ip_configurations.iter().map(|c| c.ip_address));
                usage.macs.extend(e.mac_address);
            }
        }
        usage.hint = count;
        usage
    }

    fn check_ifname_free(st: &State, ep: &Endpoint, ns: Uuid) -> R<()> {
        let nsid = ns.to_string();
        let ifname = ep.interface_name();
        if let Some(other) = st.endpoints.values().map(|r| &r.object).find(|e| {
            e.id != ep.id && e.host_compute_namespace.as_deref() == Some(nsid.as_str()) && e.interface_name() == ifname
        }) {
            return Err(ApiError::new(
                ErrorCode::EndpointAlreadyAttached,
                format!(
                    "interface {ifname} in that namespace belongs to endpoint {}: give this one another InterfaceName",
                    other.display_name()
                ),
            ));
        }
        Ok(())
    }

    /// Waits (briefly) while a network is being created or modified, so that
    /// endpoints asked for in the same moment as their network just queue.
    fn network_settled<'a>(&'a self, key: &str) -> R<std::sync::MutexGuard<'a, State>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let st = self.state.lock().unwrap();
            let id = Self::network_id(&st, key)?;
            let rec = &st.networks[&id];
            match rec.intent {
                None => return Ok(st),
                Some(Intent::Create | Intent::Modify) if std::time::Instant::now() < deadline => {
                    drop(st);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Some(_) => {
                    return Err(ApiError::in_progress(format!("network {} is being changed: retry", rec.object.name)))
                }
            }
        }
    }

    pub fn create_endpoint(&self, mut ep: Endpoint) -> R<Endpoint> {
        let (net, ns) = {
            let mut st = self.network_settled(&ep.host_compute_network)?;
            if ep.id.is_nil() {
                ep.id = Uuid::new_v4();
            } else if st.endpoints.contains_key(&ep.id) {
                return Err(ApiError::new(
                    ErrorCode::EndpointAlreadyExists,
                    format!("endpoint {} already exists", ep.id),
                ));
            }
            if let Some(name) = &ep.name {
                if let Some(o) = st.endpoints.values().find(|r| r.object.name.as_ref() == Some(name)) {
                    return Err(ApiError::new(
                        ErrorCode::EndpointAlreadyExists,
                        format!("an endpoint named {name} already exists ({}): pick another name", o.object.id),
                    ));
                }
            }
            let net_id = Self::network_id(&st, &ep.host_compute_network)?;
            let net = st.networks[&net_id].object.clone();
            ep.host_compute_network = net_id.to_string();
            let ns = match ep.host_compute_namespace.take() {
                Some(key) => {
                    let ns_id = Self::namespace_id(&st, &key)?;
                    Self::check_ifname_free(&st, &ep, ns_id)?;
                    Some(st.namespaces[&ns_id].object.clone())
                }
                None => None,
            };
            validate::prepare_endpoint(&mut ep, &net, &Self::usage(&st, &net, None), self.caps.sctp)?;
            let host = ep.derived_host_name();
            // The stored names, not re-derived: formatting 10,000 names per
            // create cost milliseconds.
            if st.endpoints.values().any(|r| r.object.host_interface_name.as_deref() == Some(host.as_str())) {
                return Err(ApiError::invalid_param(
                    "the endpoint ID collides with another endpoint's interface name: omit ID",
                ));
            }
            ep.host_interface_name = Some(host);
            ep.state = EndpointState::Created;
            ep.schema_version = Default::default();
            let intent = ns.as_ref().map(|_| Intent::Create);
            self.put_ep(&mut st, Rec { object: ep.clone(), intent })?;
            (net, ns)
        };
        let Some(ns) = ns else { return Ok(ep) };
        match self.attach_kernel(&ep, &net, &ns) {
            Ok(()) => self.finish_ep(ep.id, |e| {
                e.host_compute_namespace = Some(ns.id.to_string());
                e.state = EndpointState::Attached;
            }),
            Err(err) => {
                self.remove(Kind::Endpoint, ep.id)?;
                Err(err)
            }
        }
    }

    /// The veth and the firewall elements; undone again on failure.
    fn attach_kernel(&self, ep: &Endpoint, net: &Network, ns: &Namespace) -> R<()> {
        let path = ns.netns_path.clone().unwrap_or_default();
        if !netns::exists(&path) {
            return Err(ApiError::new(
                ErrorCode::NamespaceNotFound,
                format!("the network namespace of {} ({path}) is gone: create the namespace again", ns.display_name()),
            ));
        }
        bridge::attach_endpoint(ep, net, &path, &self.reaper)
            .map_err(|e| kernel_err(&format!("attaching endpoint {}", ep.display_name()), e))?;
        let mut attached = ep.clone();
        attached.host_compute_namespace = Some(ns.id.to_string());
        if let Err(e) = self.firewall.set(ep.id, firewall::endpoint_elems(&attached)) {
            let _ = bridge::detach_endpoint(ep, &self.reaper);
            return Err(kernel_err("publishing ports", e));
        }
        Ok(())
    }

    /// Removes the endpoint's kernel state; goes on after an error and reports all.
    pub(crate) fn detach_kernel(&self, ep: &Endpoint) -> R<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.firewall.remove(ep.id) {
            errors.push(e.to_string());
        }
        if let Err(e) = bridge::detach_endpoint(ep, &self.reaper) {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::DegradedOperation,
                format!(
                    "detaching endpoint {} failed (a retry or restart finishes it): {}",
                    ep.display_name(),
                    errors.join("; ")
                ),
            ))
        }
    }

    pub fn delete_endpoint(&self, key: &str) -> R<()> {
        let ep = {
            let mut st = self.state.lock().unwrap();
            let Ok(id) = Self::endpoint_id(&st, key) else { return Ok(()) };
            let rec = st.endpoints[&id].clone();
            if rec.intent.is_some() && rec.intent != Some(Intent::Delete) {
                return Err(ApiError::in_progress(format!(
                    "endpoint {} is being changed: retry",
                    rec.object.display_name()
                )));
            }
            self.put_ep(&mut st, Rec { object: rec.object.clone(), intent: Some(Intent::Delete) })?;
            rec.object
        };
        self.detach_kernel(&ep)?;
        self.remove(Kind::Endpoint, ep.id)
    }

    pub fn modify_endpoint(&self, key: &str, req: ModifyRequest) -> R<Endpoint> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase", deny_unknown_fields)]
        struct PolicyRequest {
            policies: Vec<EndpointPolicy>,
        }
        if req.resource_type != "Policy" {
            return Err(ApiError::unsupported(format!(
                "modify {} on an endpoint is not supported: use ResourceType Policy",
                req.resource_type
            )));
        }
        validate::check_policy_types(&req.settings, validate::endpoint_policy_types(), "endpoint")?;
        let body: PolicyRequest = parse_settings(req.settings)?;
        let (old, new) = {
            let mut st = self.state.lock().unwrap();
            let id = Self::endpoint_id(&st, key)?;
            let rec = st.endpoints[&id].clone();
            if rec.intent.is_some() {
                return Err(ApiError::in_progress(format!(
                    "endpoint {} is being changed: retry",
                    rec.object.display_name()
                )));
            }
            let mut ep = rec.object.clone();
            match req.request_type {
                RequestType::Add => ep.policies.extend(body.policies),
                RequestType::Remove => {
                    for p in &body.policies {
                        let before = ep.policies.len();
                        ep.policies.retain(|x| !same_policy(x, p));
                        if ep.policies.len() == before {
                            return Err(ApiError::invalid_param(format!(
                                "endpoint {} has no such policy: {p:?}",
                                ep.display_name()
                            )));
                        }
                    }
                }
                RequestType::Update => ep.policies = body.policies,
                other => {
                    return Err(ApiError::unsupported(format!(
                        "RequestType {other:?} is not supported for endpoint policies"
                    )))
                }
            }
            let net_id = Self::network_id(&st, &ep.host_compute_network)?;
            let net = st.networks[&net_id].object.clone();
            let usage = Self::usage(&st, &net, Some(ep.id));
            let mappings: Vec<_> = ep.port_mappings().collect();
            if !mappings.is_empty() && net.r#type != cnet_model::NetworkType::Nat {
                return Err(ApiError::unsupported(format!(
                    "port mappings need a NAT network; {} is {}",
                    net.name, net.r#type
                )));
            }
            validate::check_port_mappings(&mappings, &usage.port_mappings, self.caps.sctp)?;
            if ep.mtu() != rec.object.mtu() && ep.host_compute_namespace.is_some() {
                return Err(ApiError::unsupported(
                    "changing InterfaceParameters of an attached endpoint is not supported: detach it first",
                ));
            }
            self.put_ep(&mut st, Rec { object: ep.clone(), intent: Some(Intent::Modify) })?;
            (rec.object, ep)
        };
        if new.host_compute_namespace.is_some() {
            if let Err(e) = self.firewall.set(new.id, firewall::endpoint_elems(&new)) {
                self.finish_ep(old.id, |x| *x = old.clone())?;
                return Err(kernel_err("updating port mappings", e));
            }
        }
        self.finish_ep(new.id, |x| *x = new.clone())
    }

    // ---------- namespaces ----------

    pub fn create_namespace(&self, mut ns: Namespace) -> R<Namespace> {
        {
            let mut st = self.state.lock().unwrap();
            if ns.id.is_nil() {
                ns.id = Uuid::new_v4();
            } else if st.namespaces.contains_key(&ns.id) {
                return Err(ApiError::new(
                    ErrorCode::NamespaceAlreadyExists,
                    format!("namespace {} already exists", ns.id),
                ));
            }
            ns.resources.clear();
            ns.schema_version = Default::default();
            match (&ns.name, &ns.netns_path) {
                (Some(name), None) => {
                    if st.namespaces.values().any(|r| r.object.name.as_ref() == Some(name)) {
                        return Err(ApiError::new(
                            ErrorCode::NamespaceAlreadyExists,
                            format!("a namespace named {name} already exists"),
                        ));
                    }
                    let path = netns::path_of(name.as_str());
                    if std::path::Path::new(&path).exists() {
                        return Err(ApiError::new(
                            ErrorCode::NamespaceAlreadyExists,
                            format!("{path} already exists and cnet did not create it: adopt it with {{\"NetnsPath\": \"{path}\"}}"),
                        ));
                    }
                    ns.netns_path = Some(path);
                    ns.managed = true;
                }
                (_, Some(path)) => {
                    if !netns::exists(path) {
                        return Err(ApiError::new(
                            ErrorCode::NamespaceNotFound,
                            format!(
                                "{path} is not a network namespace: pass /proc/PID/ns/net or a file under /run/netns"
                            ),
                        ));
                    }
                    if let Some(o) = st.namespaces.values().find(|r| r.object.netns_path.as_deref() == Some(path)) {
                        return Err(ApiError::new(
                            ErrorCode::NamespaceAlreadyExists,
                            format!("{path} is already namespace {}", o.object.id),
                        ));
                    }
                    if let Some(name) = &ns.name {
                        if st.namespaces.values().any(|r| r.object.name.as_ref() == Some(name)) {
                            return Err(ApiError::new(
                                ErrorCode::NamespaceAlreadyExists,
                                format!("a namespace named {name} already exists"),
                            ));
                        }
                    }
                    ns.managed = false;
                }
                (None, None) => {
                    return Err(ApiError::invalid_param(
                        "a namespace needs a Name (cnetd creates /run/netns/<Name>) or a NetnsPath (cnetd adopts it)",
                    ))
                }
            }
            if !ns.managed {
                // Adopting a path touches no kernel state: one commit, no intent.
                self.put_ns(&mut st, Rec { object: ns.clone(), intent: None })?;
                return Ok(ns);
            }
            self.put_ns(&mut st, Rec { object: ns.clone(), intent: Some(Intent::Create) })?;
        }
        if let Err(e) = netns::create(ns.name.as_ref().expect("managed has a name").as_str()) {
            self.remove(Kind::Namespace, ns.id)?;
            return Err(kernel_err("creating the network namespace", e));
        }
        let mut st = self.state.lock().unwrap();
        self.put_ns(&mut st, Rec { object: ns.clone(), intent: None })?;
        Ok(ns)
    }

    pub fn delete_namespace(&self, key: &str) -> R<()> {
        let ns = {
            let mut st = self.state.lock().unwrap();
            let Ok(id) = Self::namespace_id(&st, key) else { return Ok(()) };
            let rec = st.namespaces[&id].clone();
            let with = Self::with_resources(&st, rec.object.clone());
            if !with.resources.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::EntityHasReferences,
                    format!(
                        "namespace {} still has {} endpoint(s) attached: detach or delete them first",
                        rec.object.display_name(),
                        with.resources.len()
                    ),
                ));
            }
            if rec.intent.is_some() && rec.intent != Some(Intent::Delete) {
                return Err(ApiError::in_progress("the namespace is being changed: retry"));
            }
            if !rec.object.managed {
                // Forgetting an adopted path touches no kernel state.
                let mut b = Batch::new();
                b.delete(Kind::Namespace, &id.to_string());
                self.commit(b)?;
                st.namespaces.remove(&id);
                return Ok(());
            }
            self.put_ns(&mut st, Rec { object: rec.object.clone(), intent: Some(Intent::Delete) })?;
            rec.object
        };
        self.finish_namespace_delete(&ns)
    }

    pub(crate) fn finish_namespace_delete(&self, ns: &Namespace) -> R<()> {
        if ns.managed {
            if let Some(name) = &ns.name {
                netns::delete(name.as_str()).map_err(|e| kernel_err("deleting the network namespace", e))?;
            }
        }
        self.remove(Kind::Namespace, ns.id)
    }

    /// `Add`/`Remove` of an endpoint on a namespace.
    pub fn modify_namespace(&self, key: &str, req: ModifyRequest) -> R<Namespace> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct EndpointRef {
            endpoint_id: String,
        }
        if req.resource_type != "Endpoint" {
            return Err(ApiError::unsupported(format!(
                "modify {} on a namespace is not supported: use ResourceType Endpoint",
                req.resource_type
            )));
        }
        let r: EndpointRef = parse_settings(req.settings)?;
        match req.request_type {
            RequestType::Add => self.attach(key, &r.endpoint_id)?,
            RequestType::Remove => self.detach(key, &r.endpoint_id)?,
            other => {
                return Err(ApiError::unsupported(format!(
                    "RequestType {other:?} is not supported on a namespace: use Add or Remove"
                )))
            }
        }
        self.get_namespace(key)
    }

    pub fn attach(&self, ns_key: &str, ep_key: &str) -> R<()> {
        let (ep, net, ns) = {
            let mut st = self.state.lock().unwrap();
            let ns_id = Self::namespace_id(&st, ns_key)?;
            let ep_id = Self::endpoint_id(&st, ep_key)?;
            let rec = st.endpoints[&ep_id].clone();
            if rec.intent.is_some() {
                return Err(ApiError::in_progress(format!(
                    "endpoint {} is being changed: retry",
                    rec.object.display_name()
                )));
            }
            match &rec.object.host_compute_namespace {
                Some(cur) if *cur == ns_id.to_string() => return Ok(()),
                Some(cur) => {
                    return Err(ApiError::new(
                        ErrorCode::EndpointAlreadyAttached,
                        format!(
                            "endpoint {} is attached to namespace {cur}: detach it first",
                            rec.object.display_name()
                        ),
                    ))
                }
                None => {}
            }
            Self::check_ifname_free(&st, &rec.object, ns_id)?;
            let net_id = Self::network_id(&st, &rec.object.host_compute_network)?;
            let net = st.networks[&net_id].object.clone();
            let ns = st.namespaces[&ns_id].object.clone();
            self.put_ep(&mut st, Rec { object: rec.object.clone(), intent: Some(Intent::Attach(ns_id)) })?;
            (rec.object, net, ns)
        };
        match self.attach_kernel(&ep, &net, &ns) {
            Ok(()) => self
                .finish_ep(ep.id, |e| {
                    e.host_compute_namespace = Some(ns.id.to_string());
                    e.state = EndpointState::Attached;
                })
                .map(|_| ()),
            Err(err) => {
                self.finish_ep(ep.id, |_| {})?;
                Err(err)
            }
        }
    }

    pub fn detach(&self, ns_key: &str, ep_key: &str) -> R<()> {
        let ep = {
            let mut st = self.state.lock().unwrap();
            let ns_id = Self::namespace_id(&st, ns_key)?;
            let Ok(ep_id) = Self::endpoint_id(&st, ep_key) else { return Ok(()) };
            let rec = st.endpoints[&ep_id].clone();
            match &rec.object.host_compute_namespace {
                None => return Ok(()),
                Some(cur) if *cur != ns_id.to_string() => {
                    return Err(ApiError::new(
                        ErrorCode::EndpointNotAttached,
                        format!("endpoint {} is attached to namespace {cur}, not this one", rec.object.display_name()),
                    ))
                }
                Some(_) => {}
            }
            if rec.intent.is_some() && rec.intent != Some(Intent::Detach) {
                return Err(ApiError::in_progress(format!(
                    "endpoint {} is being changed: retry",
                    rec.object.display_name()
                )));
            }
            self.put_ep(&mut st, Rec { object: rec.object.clone(), intent: Some(Intent::Detach) })?;
            rec.object
        };
        self.detach_kernel(&ep)?;
        self.finish_ep(ep.id, |e| {
            e.host_compute_namespace = None;
            e.state = EndpointState::Created;
        })
        .map(|_| ())
    }
}

fn same_policy(a: &EndpointPolicy, b: &EndpointPolicy) -> bool {
    match (a, b) {
        (EndpointPolicy::PortMapping(x), EndpointPolicy::PortMapping(y)) => {
            x.protocol == y.protocol && x.external_port == y.external_port && x.vip == y.vip
        }
        _ => a == b,
    }
}

/// Parses a request's `Settings` (or any JSON value) into a typed value,
/// answering `InvalidJson` with serde's words.
pub fn parse_settings<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> R<T> {
    serde_json::from_value(v).map_err(|e| crate::api::json_error(&e.to_string()))
}
