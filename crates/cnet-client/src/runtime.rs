//! What every runtime adapter (the CNI plugin, `cnet-netavark`) does the
//! same way: a stable endpoint ID per attachment, adopting a runtime's
//! network namespace, and letting go of it when its last endpoint is gone.

use cnet_model::{ErrorCode, Namespace};
use serde_json::json;

use crate::{escape, Client, ClientError};

/// A stable UUID for `key` (an attachment's primary key) under `scope`
/// (the adapter), so a repeated call finds the endpoint it made.
pub fn stable_id(scope: &str, key: &str) -> uuid::Uuid {
    let a = cnet_model::names::stable_hash(key.as_bytes());
    let b = cnet_model::names::stable_hash(format!("{scope}\0{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Whether cnetd answered that the object is not there.
pub fn not_found(e: &ClientError) -> bool {
    matches!(e.code(), Some(ErrorCode::NetworkNotFound | ErrorCode::EndpointNotFound | ErrorCode::NamespaceNotFound))
}

/// The namespace object of a netns path, adopting the path when new.
/// `NamespaceNotFound`: the path is not a network namespace.
pub fn adopt_namespace(c: &Client, netns: &str) -> Result<Namespace, ClientError> {
    match c.post::<Namespace>("/namespaces", &json!({"NetnsPath": netns})) {
        Err(e) if e.code() == Some(ErrorCode::NamespaceAlreadyExists) => {
            c.get(&format!("/namespaces/{}", escape(netns)))
        }
        other => other,
    }
}

/// Deletes an adopted namespace object once no endpoint is left in it.
pub fn release_namespace(c: &Client, ns_key: &str) -> Result<(), ClientError> {
    match c.get::<Namespace>(&format!("/namespaces/{}", escape(ns_key))) {
        Ok(ns) if ns.resources.is_empty() && !ns.managed => match c.delete(&format!("/namespaces/{}", ns.id)) {
            // A concurrent attach put something in it meanwhile: keep it.
            Err(e) if e.code() == Some(ErrorCode::EntityHasReferences) => Ok(()),
            other => other,
        },
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct_per_key_and_scope() {
        let a = stable_id("s", "n\0c1");
        assert_eq!(a, stable_id("s", "n\0c1"));
        assert_ne!(a, stable_id("s", "n\0c2"));
        assert_ne!(a, stable_id("t", "n\0c1"));
    }
}
