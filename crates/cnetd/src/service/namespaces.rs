//! Namespaces (compartments): created by cnetd (a named netns) or adopted (a
//! runtime's netns path); endpoints are attached and detached through them.
//! Their `Resources` are derived from the endpoints, never stored twice.

use uuid::Uuid;

use cnet_model::{ErrorCode, Namespace};

use super::{not_busy, Service};
use crate::error::{Result, ServiceError};
use crate::state::records::NamespaceType;
use crate::state::{Intent, NamespaceRecord, Objects, Stored};

/// A change to a namespace (the typed form of an HCN modify request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceChange {
    /// Attach the endpoint (ID or name).
    AddEndpoint(String),
    /// Detach the endpoint (ID or name).
    RemoveEndpoint(String),
}

/// A namespace with the endpoints attached to it.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceView {
    pub record: NamespaceRecord,
    pub endpoints: Vec<Uuid>,
}

impl NamespaceView {
    pub fn to_wire(&self) -> Namespace {
        self.record.to_wire(self.endpoints.iter().copied())
    }
}

fn view(o: &Objects, record: &NamespaceRecord) -> NamespaceView {
    NamespaceView { endpoints: o.endpoints_in(record.id).map(|e| e.id).collect(), record: record.clone() }
}

fn name_taken(o: &Objects, name: &cnet_model::ObjectName) -> Result<()> {
    if o.namespaces.values().any(|s| s.record.name.as_ref() == Some(name)) {
        return Err(ServiceError::new(
            ErrorCode::NamespaceAlreadyExists,
            format!("a namespace named {name} already exists"),
        ));
    }
    Ok(())
}

impl Service {
    pub fn get_namespace(&self, key: &str) -> Result<NamespaceView> {
        let o = self.state.read();
        let id = o.namespace_id(key)?;
        Ok(view(&o, &o.namespace(id)?.record))
    }

    pub fn list_namespaces(&self, name: Option<&str>) -> Result<Vec<NamespaceView>> {
        let o = self.state.read();
        Ok(o.namespaces
            .values()
            .filter(|s| name.is_none_or(|x| s.record.name.as_ref().map(|n| n.as_str()) == Some(x)))
            .map(|s| view(&o, &s.record))
            .collect())
    }

    pub fn create_namespace(&self, ns: Namespace) -> Result<NamespaceView> {
        let kind = NamespaceType::parse(&ns.r#type)?;
        if ns.vm_nic.is_some() && !kind.is_guest() {
            return Err(ServiceError::invalid(
                "VmNic applies to Guest namespaces (a VM's NICs): set \"Type\": \"Guest\" or remove VmNic",
            ));
        }
        let rec = self.state.change(|o, ch| {
            let id = if ns.id.is_nil() { Uuid::new_v4() } else { ns.id };
            if o.namespaces.contains_key(&id) {
                return Err(ServiceError::new(
                    ErrorCode::NamespaceAlreadyExists,
                    format!("namespace {id} already exists"),
                ));
            }
            let rec = match (&ns.name, &ns.netns_path) {
                (_, Some(_)) if kind.is_guest() => {
                    return Err(ServiceError::invalid(
                        "a Guest namespace is a VM's: it has no NetnsPath (its endpoints are TAPs the VMM opens); remove NetnsPath",
                    ))
                }
                (name, None) if kind.is_guest() => {
                    if let Some(name) = name {
                        name_taken(o, name)?;
                    }
                    NamespaceRecord {
                        id,
                        name: name.clone(),
                        kind,
                        netns_path: String::new(),
                        managed: false,
                        vm_nic: ns.vm_nic.clone(),
                    }
                }
                (Some(name), None) => {
                    name_taken(o, name)?;
                    let path = cnet_dataplane::netns::path_of(name.as_str());
                    if std::path::Path::new(&path).exists() {
                        return Err(ServiceError::new(
                            ErrorCode::NamespaceAlreadyExists,
                            format!("{path} already exists and cnet did not create it: adopt it with {{\"NetnsPath\": \"{path}\"}}"),
                        ));
                    }
                    NamespaceRecord { id, name: Some(name.clone()), kind, netns_path: path, managed: true, vm_nic: None }
                }
                (_, Some(path)) => {
                    if !self.dp.netns_exists(path) {
                        return Err(ServiceError::new(
                            ErrorCode::NamespaceNotFound,
                            format!("{path} is not a network namespace: pass /proc/PID/ns/net or a file under /run/netns"),
                        ));
                    }
                    if let Some(other) = o.namespaces.values().find(|s| s.record.netns_path == *path) {
                        return Err(ServiceError::new(
                            ErrorCode::NamespaceAlreadyExists,
                            format!("{path} is already namespace {}", other.record.id),
                        ));
                    }
                    if let Some(name) = &ns.name {
                        name_taken(o, name)?;
                    }
                    NamespaceRecord { id, name: ns.name.clone(), kind, netns_path: path.clone(), managed: false, vm_nic: None }
                }
                (None, None) => {
                    return Err(ServiceError::invalid(
                        "a namespace needs a Name (cnetd creates /run/netns/<Name>) or a NetnsPath (cnetd adopts it)",
                    ))
                }
            };
            // Adopting a path touches no kernel state: one commit, no intent.
            ch.put_namespace(if rec.managed { Stored::with(rec.clone(), Intent::Create) } else { Stored::done(rec.clone()) });
            Ok(rec)
        })?;
        if rec.managed {
            let name = rec.name.as_ref().expect("a managed namespace has a name");
            if let Err(e) = self.dp.netns_create(name.as_str()) {
                self.state.write(|ch| ch.delete_namespace(rec.id))?;
                return Err(ServiceError::kernel("creating the network namespace", e));
            }
            self.state.write(|ch| ch.put_namespace(Stored::done(rec.clone())))?;
        }
        Ok(NamespaceView { record: rec, endpoints: vec![] })
    }

    pub fn delete_namespace(&self, key: &str) -> Result<()> {
        let ns = self.state.change(|o, ch| {
            let Ok(id) = o.namespace_id(key) else { return Ok(None) };
            let s = o.namespace(id)?;
            let attached = o.endpoints_in(id).count();
            if attached > 0 {
                return Err(ServiceError::new(
                    ErrorCode::EntityHasReferences,
                    format!(
                        "namespace {} still has {attached} endpoint(s) attached: detach or delete them first",
                        s.record.display_name()
                    ),
                ));
            }
            if s.intent != Some(Intent::Delete) {
                not_busy(s.intent, || "the namespace".to_string())?;
            }
            if !s.record.managed {
                // Forgetting an adopted path touches no kernel state.
                ch.delete_namespace(id);
                return Ok(None);
            }
            ch.put_namespace(Stored::with(s.record.clone(), Intent::Delete));
            Ok(Some(s.record.clone()))
        })?;
        match ns {
            Some(ns) => self.finish_namespace_delete(&ns),
            None => Ok(()),
        }
    }

    pub(crate) fn finish_namespace_delete(&self, ns: &NamespaceRecord) -> Result<()> {
        if let (true, Some(name)) = (ns.managed, &ns.name) {
            self.dp
                .netns_delete(name.as_str())
                .map_err(|e| ServiceError::kernel("deleting the network namespace", e))?;
        }
        self.state.write(|ch| ch.delete_namespace(ns.id))
    }

    pub fn modify_namespace(&self, key: &str, change: NamespaceChange) -> Result<NamespaceView> {
        match change {
            NamespaceChange::AddEndpoint(ep) => self.attach(key, &ep)?,
            NamespaceChange::RemoveEndpoint(ep) => self.detach(key, &ep)?,
        }
        self.get_namespace(key)
    }
}
