//! Handing an endpoint's adapter off to a runtime that configures it
//! itself: Docker's remote network driver (`NetworkDriver.Join`) wants the
//! container end of a veth pair, unconfigured, in dockerd's own network
//! namespace — which is cnetd's — and moves, renames, addresses and routes
//! it itself.
//!
//! Invariants:
//! - A handed-off endpoint has no namespace and records the peer's name
//!   (`EndpointRecord::handed_off`); its state is `Attached`. cnet owns its
//!   host end (on the network's switch) and its firewall elements, never
//!   what is inside.
//! - Handing off completes (veth, firewall elements, record) or leaves
//!   nothing: a failed step undoes the ones before it; a crash leaves the
//!   `HandOff` intent, which start-up repair rolls back.
//! - Deleting the endpoint removes both ends of the pair, wherever the
//!   runtime moved the container end, and succeeds when they are gone.

use cnet_model::{EndpointState, ErrorCode};

use super::{not_busy, Service};
use crate::error::{Result, ServiceError};
use crate::state::{EndpointRecord, Intent, Stored};

impl Service {
    /// Gives endpoint `ep_key` a veth pair whose container end `peer` stays
    /// in cnetd's namespace for the runtime to take. Answers the endpoint,
    /// attached. Asking again with the same `peer` changes nothing.
    pub fn hand_off_endpoint(&self, ep_key: &str, peer: &str) -> Result<EndpointRecord> {
        let found = self.state.change(|o, ch| {
            let id = o.endpoint_id(ep_key)?;
            let s = o.endpoint(id)?;
            let ep = &s.record;
            not_busy(s.intent, || format!("endpoint {}", ep.display_name()))?;
            match (&ep.handed_off, ep.namespace) {
                (Some(p), _) if p == peer => return Ok(None),
                (Some(p), _) => {
                    return Err(ServiceError::new(
                        ErrorCode::EndpointAlreadyAttached,
                        format!("endpoint {} was already handed off as {p}: delete it first", ep.display_name()),
                    ))
                }
                (None, Some(ns)) => {
                    return Err(ServiceError::new(
                        ErrorCode::EndpointAlreadyAttached,
                        format!("endpoint {} is attached to namespace {ns}: detach it first", ep.display_name()),
                    ))
                }
                (None, None) => {}
            }
            let net = o.network(ep.network)?.record.clone();
            let new = EndpointRecord { handed_off: Some(peer.to_string()), ..ep.clone() };
            ch.put_endpoint(Stored::with(new.clone(), Intent::HandOff));
            Ok(Some((ep.clone(), new, net)))
        })?;
        let Some((old, new, net)) = found else { return self.get_endpoint(ep_key) };
        let undo = |err: ServiceError| -> Result<EndpointRecord> {
            self.state.write(|ch| ch.put_endpoint(Stored::done(old.clone())))?;
            Err(err)
        };
        let driver = self.driver(&net)?;
        let dp = self.dp.as_ref();
        if let Err(e) = driver.hand_off(dp, &net, &new, peer) {
            return undo(ServiceError::kernel(&format!("handing off endpoint {}", new.display_name()), e));
        }
        if let Err(e) = self.program_endpoint(&new, &net, None) {
            let _ = driver.detach(dp, &net, &new, None);
            return undo(e);
        }
        let done = EndpointRecord { state: EndpointState::Attached, ..new };
        self.state.write(|ch| ch.put_endpoint(Stored::done(done.clone())))?;
        Ok(done)
    }
}

/// cnetd's own namespace, as the record of one: where a handed-off
/// endpoint's pair was made (for the drivers' checks and repairs).
pub(crate) fn own_namespace() -> crate::state::NamespaceRecord {
    crate::state::NamespaceRecord {
        id: uuid::Uuid::nil(),
        name: None,
        kind: crate::state::records::NamespaceType::HostDefault,
        netns_path: crate::driver::bridge::OWN_NETNS.into(),
        managed: false,
        vm_nic: None,
    }
}

/// The namespace an endpoint's adapter is checked and repaired in: its own,
/// or cnetd's (`own`, from [`own_namespace`]) when it was handed off; `None`
/// when it has none, or its namespace record is gone.
pub(crate) fn adapter_namespace<'a>(
    o: &'a crate::state::Objects,
    ep: &EndpointRecord,
    own: &'a crate::state::NamespaceRecord,
) -> Option<&'a crate::state::NamespaceRecord> {
    match ep.namespace {
        Some(ns_id) => o.namespaces.get(&ns_id).map(|s| &s.record),
        None => ep.handed_off.is_some().then_some(own),
    }
}
