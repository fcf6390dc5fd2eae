//! Store migrations, run at start before anything is loaded.
//!
//! Schema 1 (cnet up to the driver architecture) stored the API's HCN wire
//! structs as `{"object": <HostCompute*>, "intent": ...}`, with references as
//! strings. Schema 2 stores [`super::records`]: typed references, enums,
//! and each network's allocation cursor.
//!
//! Invariant: a migration is one store transaction (records and version
//! together), so a crash during it leaves the old store untouched and the
//! next start migrates again.

use std::net::IpAddr;

use cnet_model::{Endpoint, Namespace, Network};
use cnet_store::{Batch, Kind, Store, StoreError, SCHEMA_VERSION};
use serde::Deserialize;
use uuid::Uuid;

use super::records::{EndpointRecord, Intent, NamespaceRecord, NamespaceType, NetworkRecord, Stored};

/// Brings the store to [`SCHEMA_VERSION`].
pub fn to_current(store: &Store) -> Result<(), StoreError> {
    match store.schema_version()? {
        v if v == SCHEMA_VERSION => Ok(()),
        1 => {
            let batch = from_v1(store)?;
            store.commit(batch)?;
            tracing::info!("migrated the store from schema 1 to {SCHEMA_VERSION}");
            Ok(())
        }
        v => Err(StoreError::Io(format!(
            "the store has schema version {v}, which this cnetd cannot migrate: start it with the cnetd that wrote it"
        ))),
    }
}

#[derive(Deserialize)]
struct V1<T> {
    object: T,
    #[serde(default)]
    intent: Option<Intent>,
}

fn corrupt(kind: Kind, key: &str, what: String) -> StoreError {
    StoreError::Corrupt { kind, key: key.to_string(), source: serde::de::Error::custom(what) }
}

fn read<T: for<'de> Deserialize<'de>>(kind: Kind, key: &str, v: serde_json::Value) -> Result<V1<T>, StoreError> {
    serde_json::from_value(v).map_err(|source| StoreError::Corrupt { kind, key: key.to_string(), source })
}

fn uuid(kind: Kind, key: &str, s: &str) -> Result<Uuid, StoreError> {
    s.parse().map_err(|_| corrupt(kind, key, format!("{s:?} is not a UUID")))
}

fn from_v1(store: &Store) -> Result<Batch, StoreError> {
    let mut batch = Batch::new();
    let endpoints: Vec<(String, V1<Endpoint>)> = keyed(store, Kind::Endpoint)?
        .into_iter()
        .map(|(k, v)| Ok((k.clone(), read(Kind::Endpoint, &k, v)?)))
        .collect::<Result<_, StoreError>>()?;

    for (key, v) in keyed(store, Kind::Network)? {
        let old: V1<Network> = read(Kind::Network, &key, v)?;
        let bridge = old.object.bridge_name.clone().unwrap_or_else(|| old.object.derived_bridge_name());
        let mut rec =
            NetworkRecord::from_wire(&old.object, bridge).map_err(|e| corrupt(Kind::Network, &key, e.message))?;
        // The cursor starts after the highest address in use in each family.
        let id = rec.id.to_string();
        for v4 in [true, false] {
            let top: Option<IpAddr> = endpoints
                .iter()
                .map(|(_, e)| &e.object)
                .filter(|e| e.host_compute_network == id)
                .flat_map(|e| e.ip_configurations.iter().map(|c| c.ip_address))
                .filter(|ip| ip.is_ipv4() == v4)
                .max();
            rec.last_allocated.extend(top);
        }
        batch.put(Kind::Network, &key, &Stored { record: rec, intent: old.intent });
    }
    for (key, old) in endpoints {
        let ep = old.object;
        let network = uuid(Kind::Endpoint, &key, &ep.host_compute_network)?;
        let namespace = ep.host_compute_namespace.as_deref().map(|n| uuid(Kind::Endpoint, &key, n)).transpose()?;
        let state = ep.state;
        let host = ep.host_interface_name.clone().unwrap_or_else(|| ep.derived_host_name());
        let mut rec =
            EndpointRecord::from_prepared(ep, network, host).map_err(|e| corrupt(Kind::Endpoint, &key, e.message))?;
        rec.namespace = namespace;
        rec.state = state;
        batch.put(Kind::Endpoint, &key, &Stored { record: rec, intent: old.intent });
    }
    for (key, v) in keyed(store, Kind::Namespace)? {
        let old: V1<Namespace> = read(Kind::Namespace, &key, v)?;
        let ns = old.object;
        let netns_path = match (&ns.netns_path, &ns.name) {
            (Some(p), _) => p.clone(),
            (None, Some(n)) => cnet_dataplane::netns::path_of(n.as_str()),
            (None, None) => return Err(corrupt(Kind::Namespace, &key, "a namespace without path or name".into())),
        };
        let rec = NamespaceRecord {
            id: ns.id,
            kind: NamespaceType::parse(&ns.r#type).map_err(|e| corrupt(Kind::Namespace, &key, e.message))?,
            name: ns.name,
            netns_path,
            managed: ns.managed,
            vm_nic: None,
        };
        batch.put(Kind::Namespace, &key, &Stored { record: rec, intent: old.intent });
    }
    batch.set_schema_version(SCHEMA_VERSION);
    Ok(batch)
}

/// The raw JSON of every record of a kind, with its key (the object's ID).
fn keyed(store: &Store, kind: Kind) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    Ok(store
        .load::<serde_json::Value>(kind)?
        .into_iter()
        .map(|v| {
            let id = v["object"]["ID"].as_str().unwrap_or_default().to_string();
            (id, v)
        })
        .collect())
}
