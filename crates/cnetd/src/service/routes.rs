//! `HostComputeRoute` objects (`/routes`): routes several endpoints of one
//! network share. A route object has no kernel state of its own: each
//! listed endpoint's record carries the resolved routes of every object
//! that lists it (`EndpointRecord::shared_routes`), so attach, diagnosis
//! and repair see them as they see its own routes.
//!
//! Invariants:
//! - An object and the records of its endpoints change in one store
//!   commit; then each attached container's namespace is brought from its
//!   old routes to its new ones. A failure there undoes the namespaces
//!   already changed and the commit.
//! - Every listed endpoint is on the object's network; deleting an endpoint
//!   takes it off the objects, deleting the network deletes them.

use cnet_model::route::HostComputeRoute;
use cnet_model::{validate, ErrorCode};
use uuid::Uuid;

use super::Service;
use crate::error::{Result, ServiceError};
use crate::state::{EndpointRecord, Objects, RouteRecord, Stored};

/// The routes the objects in `o` give endpoint `id` on `net`, `changed`
/// standing in for the object of its ID (`None`: that object gone).
fn shared_routes(
    o: &Objects,
    id: Uuid,
    net: &crate::state::NetworkRecord,
    changed: (Uuid, Option<&RouteRecord>),
) -> Vec<cnet_model::network::Route> {
    let gateways: Vec<std::net::IpAddr> = net.gateways().map(|(_, g)| g).collect();
    let mut objects: Vec<&RouteRecord> = o.routes.values().map(|s| &s.record).filter(|r| r.id != changed.0).collect();
    objects.extend(changed.1);
    objects.sort_by_key(|r| r.id);
    let mut out = Vec::new();
    for r in objects.into_iter().filter(|r| r.endpoints.contains(&id)) {
        for route in r.routes.iter().filter_map(|s| s.route(&gateways).ok()) {
            if !out.contains(&route) {
                out.push(route);
            }
        }
    }
    out
}

impl Service {
    pub fn list_routes(&self) -> Vec<RouteRecord> {
        self.state.read().routes.values().map(|s| s.record.clone()).collect()
    }

    pub fn get_route(&self, key: &str) -> Result<RouteRecord> {
        let o = self.state.read();
        key.parse::<Uuid>()
            .ok()
            .and_then(|id| o.routes.get(&id))
            .map(|s| s.record.clone())
            .ok_or_else(|| ServiceError::not_found(ErrorCode::RouteNotFound, "Route", key))
    }

    /// Creates a route object and gives its endpoints its routes.
    pub fn create_route(&self, req: HostComputeRoute) -> Result<RouteRecord> {
        let (rec, changed) = self.state.change(|o, ch| {
            let id = if req.id.is_nil() { Uuid::new_v4() } else { req.id };
            if o.routes.contains_key(&id) {
                return Err(ServiceError::new(ErrorCode::InvalidParameter, format!("route {id} already exists")));
            }
            let net = &o.network(o.network_id(&req.host_compute_network)?)?.record;
            if req.routes.is_empty() {
                return Err(ServiceError::invalid("a HostComputeRoute needs at least one route in Routes"));
            }
            let as_policies: Vec<cnet_model::EndpointPolicy> =
                req.routes.iter().cloned().map(cnet_model::EndpointPolicy::SdnRoute).collect();
            validate::check_sdn_routes(&as_policies, &net.to_wire())?;
            let mut endpoints = Vec::new();
            for key in &req.host_compute_endpoints {
                let ep = &o.endpoint(o.endpoint_id(key)?)?.record;
                if ep.network != net.id {
                    return Err(ServiceError::invalid(format!(
                        "endpoint {} is not on network {}: a route object lists endpoints of its own network",
                        ep.display_name(),
                        net.name
                    )));
                }
                if !endpoints.contains(&ep.id) {
                    endpoints.push(ep.id);
                }
            }
            let rec = RouteRecord { id, network: net.id, endpoints, routes: req.routes.clone() };
            let changed = self.restage(o, ch, net, (id, Some(&rec)), &rec.endpoints)?;
            ch.put_route(Stored::done(rec.clone()));
            Ok((rec, changed))
        })?;
        self.apply_route_change(&changed, &rec, true)?;
        Ok(rec)
    }

    /// Deletes a route object; its endpoints lose its routes.
    pub fn delete_route(&self, key: &str) -> Result<()> {
        let rec = self.get_route(key)?;
        let changed = self.state.change(|o, ch| {
            let net = &o.network(rec.network)?.record;
            let changed = self.restage(o, ch, net, (rec.id, None), &rec.endpoints)?;
            ch.delete_route(rec.id);
            Ok(changed)
        })?;
        self.apply_route_change(&changed, &rec, false)
    }

    /// Stages the records of `endpoints` with their shared routes as they
    /// are with `changed`; answers (old, new) of those whose routes change.
    fn restage(
        &self,
        o: &Objects,
        ch: &mut crate::state::Changes,
        net: &crate::state::NetworkRecord,
        changed: (Uuid, Option<&RouteRecord>),
        endpoints: &[Uuid],
    ) -> Result<Vec<(EndpointRecord, EndpointRecord)>> {
        let mut out = Vec::new();
        for id in endpoints {
            let Some(s) = o.endpoints.get(id) else { continue };
            super::not_busy(s.intent, || format!("endpoint {}", s.record.display_name()))?;
            let new = EndpointRecord { shared_routes: shared_routes(o, *id, net, changed), ..s.record.clone() };
            if new.shared_routes != s.record.shared_routes {
                ch.put_endpoint(Stored::done(new.clone()));
                out.push((s.record.clone(), new));
            }
        }
        Ok(out)
    }

    /// Brings each attached endpoint of `changed` to its new routes; on a
    /// failure, undoes what was done and the records (`created`: the object
    /// was made, else deleted).
    fn apply_route_change(
        &self,
        changed: &[(EndpointRecord, EndpointRecord)],
        rec: &RouteRecord,
        created: bool,
    ) -> Result<()> {
        let net = self.state.read().network(rec.network)?.record.clone();
        for (i, (old, new)) in changed.iter().enumerate() {
            if let Err(e) = self.change_routes(old, new, &net) {
                for (old, new) in changed[..i].iter().rev() {
                    let _ = self.change_routes(new, old, &net);
                }
                self.state.write(|ch| {
                    for (old, _) in changed {
                        ch.put_endpoint(Stored::done(old.clone()));
                    }
                    match created {
                        true => ch.delete_route(rec.id),
                        false => ch.put_route(Stored::done(rec.clone())),
                    }
                })?;
                return Err(e);
            }
        }
        Ok(())
    }
}
