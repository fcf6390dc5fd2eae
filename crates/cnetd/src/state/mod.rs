//! The one owner of the store. Every change to what cnetd knows goes through
//! [`State::change`]: the closure looks at the objects and stages puts and
//! deletes; the batch is committed to the store in one transaction, and only
//! then applied to memory.
//!
//! Invariants:
//! - Memory mirrors the store exactly; both change under one lock, the store
//!   first. A refused commit changes neither.
//! - No other module commits (reconcile, the lifecycles and migration all
//!   come here).
//! - Kernel work never happens under this lock: it is bracketed by intents
//!   (see [`records::Intent`]).

mod migrate;
pub mod records;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use cnet_model::ErrorCode;
use cnet_store::{Batch, Kind, Store, StoreError};
use uuid::Uuid;

use crate::error::{Result, ServiceError};
pub use records::{EndpointRecord, Intent, NamespaceRecord, NetworkRecord, RouteRecord, Stored};

/// Everything cnetd knows, by ID.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub networks: BTreeMap<Uuid, Stored<NetworkRecord>>,
    pub endpoints: BTreeMap<Uuid, Stored<EndpointRecord>>,
    pub namespaces: BTreeMap<Uuid, Stored<NamespaceRecord>>,
    /// `HostComputeRoute` objects (no kernel state of their own: their
    /// routes are in their endpoints' records).
    pub routes: BTreeMap<Uuid, Stored<RouteRecord>>,
}

/// Puts and deletes staged by one [`State::change`].
#[derive(Default)]
pub struct Changes {
    networks: Vec<(Uuid, Option<Stored<NetworkRecord>>)>,
    endpoints: Vec<(Uuid, Option<Stored<EndpointRecord>>)>,
    namespaces: Vec<(Uuid, Option<Stored<NamespaceRecord>>)>,
    routes: Vec<(Uuid, Option<Stored<RouteRecord>>)>,
}

impl Changes {
    pub fn put_network(&mut self, s: Stored<NetworkRecord>) {
        self.networks.push((s.record.id, Some(s)));
    }
    pub fn put_endpoint(&mut self, s: Stored<EndpointRecord>) {
        self.endpoints.push((s.record.id, Some(s)));
    }
    pub fn put_namespace(&mut self, s: Stored<NamespaceRecord>) {
        self.namespaces.push((s.record.id, Some(s)));
    }
    pub fn delete_network(&mut self, id: Uuid) {
        self.networks.push((id, None));
    }
    pub fn delete_endpoint(&mut self, id: Uuid) {
        self.endpoints.push((id, None));
    }
    pub fn delete_namespace(&mut self, id: Uuid) {
        self.namespaces.push((id, None));
    }
    pub fn put_route(&mut self, s: Stored<RouteRecord>) {
        self.routes.push((s.record.id, Some(s)));
    }
    pub fn delete_route(&mut self, id: Uuid) {
        self.routes.push((id, None));
    }

    fn batch(&self) -> Batch {
        let mut b = Batch::new();
        fn stage<T: serde::Serialize>(b: &mut Batch, kind: Kind, ops: &[(Uuid, Option<T>)]) {
            for (id, v) in ops {
                match v {
                    Some(v) => b.put(kind, &id.to_string(), v),
                    None => b.delete(kind, &id.to_string()),
                };
            }
        }
        stage(&mut b, Kind::Network, &self.networks);
        stage(&mut b, Kind::Endpoint, &self.endpoints);
        stage(&mut b, Kind::Namespace, &self.namespaces);
        stage(&mut b, Kind::Route, &self.routes);
        b
    }

    fn apply(self, o: &mut Objects) {
        fn apply<T>(map: &mut BTreeMap<Uuid, T>, ops: Vec<(Uuid, Option<T>)>) {
            for (id, v) in ops {
                match v {
                    Some(v) => map.insert(id, v),
                    None => map.remove(&id),
                };
            }
        }
        apply(&mut o.networks, self.networks);
        apply(&mut o.endpoints, self.endpoints);
        apply(&mut o.namespaces, self.namespaces);
        apply(&mut o.routes, self.routes);
    }
}

pub struct State {
    store: Store,
    objects: Mutex<Objects>,
    /// Moves on with every commit: readers that keep something derived
    /// from the objects (the DNS names) know when it is stale.
    generation: std::sync::atomic::AtomicU64,
}

impl State {
    /// Loads the store, migrating records of an older schema first.
    pub fn open(store: Store) -> Result<State, StoreError> {
        migrate::to_current(&store)?;
        let mut o = Objects::default();
        for s in store.load::<Stored<NetworkRecord>>(Kind::Network)? {
            o.networks.insert(s.record.id, s);
        }
        for s in store.load::<Stored<EndpointRecord>>(Kind::Endpoint)? {
            o.endpoints.insert(s.record.id, s);
        }
        for s in store.load::<Stored<NamespaceRecord>>(Kind::Namespace)? {
            o.namespaces.insert(s.record.id, s);
        }
        for s in store.load::<Stored<RouteRecord>>(Kind::Route)? {
            o.routes.insert(s.record.id, s);
        }
        Ok(State { store, objects: Mutex::new(o), generation: Default::default() })
    }

    /// The objects, for reading. Hold it briefly: every change waits for it.
    pub fn read(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` under the lock; commits what it staged (store first, then
    /// memory) when it returns `Ok`, nothing when it returns `Err`.
    pub fn change<T>(&self, f: impl FnOnce(&Objects, &mut Changes) -> Result<T>) -> Result<T> {
        let mut o = self.read();
        let mut changes = Changes::default();
        let out = f(&o, &mut changes)?;
        self.store.commit(changes.batch()).map_err(ServiceError::store)?;
        changes.apply(&mut o);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(out)
    }

    /// The commit count: changes whenever the objects did.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Commits what `f` stages, without looking at the objects.
    pub fn write(&self, f: impl FnOnce(&mut Changes)) -> Result<()> {
        self.change(|_, ch| {
            f(ch);
            Ok(())
        })
    }
}

impl Objects {
    pub fn network_id(&self, key: &str) -> Result<Uuid> {
        if let Ok(id) = key.parse::<Uuid>() {
            if self.networks.contains_key(&id) {
                return Ok(id);
            }
        }
        self.networks
            .values()
            .find(|s| s.record.name.as_str() == key)
            .map(|s| s.record.id)
            .ok_or_else(|| ServiceError::not_found(ErrorCode::NetworkNotFound, "Network", key))
    }

    pub fn endpoint_id(&self, key: &str) -> Result<Uuid> {
        if let Ok(id) = key.parse::<Uuid>() {
            if self.endpoints.contains_key(&id) {
                return Ok(id);
            }
        }
        self.endpoints
            .values()
            .find(|s| s.record.name.as_ref().map(|n| n.as_str()) == Some(key))
            .map(|s| s.record.id)
            .ok_or_else(|| ServiceError::not_found(ErrorCode::EndpointNotFound, "Endpoint", key))
    }

    /// By ID, name or netns path.
    pub fn namespace_id(&self, key: &str) -> Result<Uuid> {
        if let Ok(id) = key.parse::<Uuid>() {
            if self.namespaces.contains_key(&id) {
                return Ok(id);
            }
        }
        self.namespaces
            .values()
            .find(|s| s.record.name.as_ref().map(|n| n.as_str()) == Some(key) || s.record.netns_path == key)
            .map(|s| s.record.id)
            .ok_or_else(|| ServiceError::not_found(ErrorCode::NamespaceNotFound, "Namespace", key))
    }

    pub fn network(&self, id: Uuid) -> Result<&Stored<NetworkRecord>> {
        self.networks
            .get(&id)
            .ok_or_else(|| ServiceError::not_found(ErrorCode::NetworkNotFound, "Network", &id.to_string()))
    }
    pub fn endpoint(&self, id: Uuid) -> Result<&Stored<EndpointRecord>> {
        self.endpoints
            .get(&id)
            .ok_or_else(|| ServiceError::not_found(ErrorCode::EndpointNotFound, "Endpoint", &id.to_string()))
    }
    pub fn namespace(&self, id: Uuid) -> Result<&Stored<NamespaceRecord>> {
        self.namespaces
            .get(&id)
            .ok_or_else(|| ServiceError::not_found(ErrorCode::NamespaceNotFound, "Namespace", &id.to_string()))
    }

    /// The endpoints attached to a namespace.
    pub fn endpoints_in(&self, ns: Uuid) -> impl Iterator<Item = &EndpointRecord> {
        self.endpoints.values().map(|s| &s.record).filter(move |e| e.namespace == Some(ns))
    }

    /// Every object with a change in flight, as (kind, ID, intent).
    pub fn intents(&self) -> Vec<(&'static str, Uuid, Intent)> {
        let nets = self.networks.values().filter_map(|s| s.intent.map(|i| ("network", s.record.id, i)));
        let eps = self.endpoints.values().filter_map(|s| s.intent.map(|i| ("endpoint", s.record.id, i)));
        let nss = self.namespaces.values().filter_map(|s| s.intent.map(|i| ("namespace", s.record.id, i)));
        nets.chain(eps).chain(nss).collect()
    }
}
