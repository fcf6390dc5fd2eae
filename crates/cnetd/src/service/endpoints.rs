//! Endpoints: create (addresses, MAC and names decided under the lock, then
//! attached at once when a namespace is given), attach, detach, policy
//! changes, delete.

use std::time::{Duration, Instant};

use uuid::Uuid;

use cnet_model::endpoint::REMOTE_ENDPOINT;
use cnet_model::validate;
use cnet_model::{Endpoint, EndpointPolicy, EndpointState, ErrorCode, PortMapping};

use super::{flows_of_removed, not_busy, same_policy, udp_to_host_ports, usage, EndpointFilter, Service};
use crate::error::{Result, ServiceError};
use crate::firewall;
use crate::state::{EndpointRecord, Intent, NamespaceRecord, Objects, Stored};

/// A change to an endpoint's policies (the typed form of an HCN modify request).
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyChange {
    Add(Vec<EndpointPolicy>),
    Remove(Vec<EndpointPolicy>),
    Update(Vec<EndpointPolicy>),
}

/// Another endpoint already using `ep`'s interface name in namespace `ns`.
fn check_ifname_free(o: &Objects, ep_id: Uuid, ifname: &cnet_model::IfName, ns: Uuid) -> Result<()> {
    if let Some(other) = o.endpoints_in(ns).find(|e| e.id != ep_id && e.interface_name == *ifname) {
        return Err(ServiceError::new(
            ErrorCode::EndpointAlreadyAttached,
            format!(
                "interface {ifname} in that namespace belongs to endpoint {}: give this one another InterfaceName",
                other.display_name()
            ),
        ));
    }
    Ok(())
}

impl Service {
    pub fn get_endpoint(&self, key: &str) -> Result<EndpointRecord> {
        let o = self.state.read();
        Ok(o.endpoint(o.endpoint_id(key)?)?.record.clone())
    }

    pub fn list_endpoints(&self, f: &EndpointFilter) -> Result<Vec<EndpointRecord>> {
        let o = self.state.read();
        let net = f.network.as_deref().map(|k| o.network_id(k)).transpose()?;
        let ns = f.namespace.as_deref().map(|k| o.namespace_id(k)).transpose()?;
        Ok(o.endpoints
            .values()
            .map(|s| &s.record)
            .filter(|e| f.name.as_deref().is_none_or(|x| e.name.as_ref().map(|n| n.as_str()) == Some(x)))
            .filter(|e| net.is_none_or(|x| e.network == x))
            .filter(|e| ns.is_none() || e.namespace == ns)
            .cloned()
            .collect())
    }

    /// Addresses of the network's subnets that its driver keeps out of
    /// allocation (the host's own on a LAN); none when the network is unknown.
    fn reserved_addresses(&self, key: &str) -> Result<std::collections::HashSet<std::net::IpAddr>> {
        let net = {
            let o = self.state.read();
            match o.network_id(key) {
                Ok(id) => o.network(id)?.record.clone(),
                Err(_) => return Ok(Default::default()),
            }
        };
        let driver = self.driver(&net)?;
        let ips = driver
            .reserved(self.dp.as_ref(), &net)
            .map_err(|e| ServiceError::kernel(&format!("reading the addresses of uplink {}", net.uplink()), e))?;
        Ok(ips.into_iter().collect())
    }

    /// Waits (briefly) while a network is being created or modified, so that
    /// endpoints asked for in the same moment as their network just queue.
    fn network_settled(&self, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let busy = {
                let o = self.state.read();
                let Ok(id) = o.network_id(key) else { return };
                matches!(o.networks[&id].intent, Some(Intent::Create | Intent::Modify))
            };
            if !busy {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn create_endpoint(&self, mut ep: Endpoint) -> Result<EndpointRecord> {
        self.network_settled(&ep.host_compute_network);
        let reserved = self.reserved_addresses(&ep.host_compute_network)?;
        let overlay = {
            let o = self.state.read();
            o.network_id(&ep.host_compute_network)
                .ok()
                .and_then(|id| o.networks.get(&id))
                .map(|s| s.record.clone())
                .filter(|n| n.kind == cnet_model::NetworkType::Overlay)
        };
        let asked_dns = ep.dns.is_some();
        let remote = ep.flags & REMOTE_ENDPOINT != 0;
        if remote && ep.host_compute_namespace.is_some() {
            return Err(ServiceError::invalid(
                "a remote endpoint (Flags 1) lives on another host: it is never attached here, omit HostComputeNamespace",
            ));
        }
        // Overlay: this host's blocks (claimed first when full), and the lock
        // that keeps them from being given back until the address is stored.
        // A remote endpoint's addresses are someone else's.
        let blocks = overlay.filter(|_| !remote).map(|net| self.overlay_blocks(&net, &ep)).transpose()?;
        let (rec, net, ns) = self.state.change(|o, ch| {
            if ep.id.is_nil() {
                ep.id = Uuid::new_v4();
            } else if o.endpoints.contains_key(&ep.id) {
                return Err(ServiceError::new(
                    ErrorCode::EndpointAlreadyExists,
                    format!("endpoint {} already exists", ep.id),
                ));
            }
            if let Some(name) = &ep.name {
                if let Some(other) = o.endpoints.values().find(|s| s.record.name.as_ref() == Some(name)) {
                    return Err(ServiceError::new(
                        ErrorCode::EndpointAlreadyExists,
                        format!("an endpoint named {name} already exists ({}): pick another name", other.record.id),
                    ));
                }
            }
            let net_id = o.network_id(&ep.host_compute_network)?;
            let s = o.network(net_id)?;
            not_busy(s.intent, || format!("network {}", s.record.name))?;
            let mut net = s.record.clone();
            let driver = self.drivers.get(net.kind)?;
            let ns = match ep.host_compute_namespace.take() {
                Some(key) => {
                    let ns_id = o.namespace_id(&key)?;
                    check_ifname_free(o, ep.id, &ep.interface_name(), ns_id)?;
                    Some(o.namespace(ns_id)?.record.clone())
                }
                None => None,
            };
            let mut used = usage(o, &net, None);
            used.reserved.clone_from(&reserved);
            used.namespace = ns.as_ref().map(|n| n.id);
            match (&blocks, net.kind == cnet_model::NetworkType::Overlay) {
                (Some((_, blocks)), true) => {
                    let wire = super::overlay::restricted(&net.to_wire(), blocks);
                    validate::prepare_endpoint(&mut ep, &wire, &used, self.caps.sctp)?;
                    super::overlay::routed_inside(&mut ep);
                }
                (None, false) => validate::prepare_endpoint(&mut ep, &net.to_wire(), &used, self.caps.sctp)?,
                (None, true) if remote => {
                    validate::prepare_endpoint(&mut ep, &net.to_wire(), &used, self.caps.sctp)?;
                    self.check_remote_addresses(&net, &ep)?;
                }
                _ => return Err(ServiceError::in_progress(format!("network {} changed meanwhile: retry", net.name))),
            }
            if let (false, Some(dns)) = (asked_dns, super::dns::endpoint_dns(&net)) {
                ep.dns = Some(dns);
            }
            let host = if driver.has_host_link() { ep.derived_host_name() } else { String::new() };
            // The stored names, not re-derived: formatting 10,000 names per
            // create cost milliseconds.
            if !host.is_empty() && o.endpoints.values().any(|s| s.record.host_interface_name == host) {
                return Err(ServiceError::invalid(
                    "the endpoint ID collides with another endpoint's interface name: omit ID",
                ));
            }
            let rec = EndpointRecord::from_prepared(ep.clone(), net.id, host)?;
            // The allocation cursor moves on, in the same commit.
            let mut cursor = net.last_allocated.clone();
            for ip in rec.ips() {
                cursor.retain(|c| c.is_ipv4() != ip.is_ipv4());
                cursor.push(ip);
            }
            if cursor != net.last_allocated {
                net.last_allocated = cursor;
                ch.put_network(Stored::done(net.clone()));
            }
            // While being attached, the record names its namespace: a crash
            // in between leaves start-up repair where to clean up.
            ch.put_endpoint(match &ns {
                Some(ns) => Stored::with(EndpointRecord { namespace: Some(ns.id), ..rec.clone() }, Intent::Create),
                None => Stored::done(rec.clone()),
            });
            Ok((rec, net, ns))
        })?;
        drop(blocks);
        if remote {
            // Its tunnel entries, now (the same step every cluster change takes).
            self.cluster_changed();
        }
        let Some(ns) = ns else { return Ok(rec) };
        match self.attach_kernel(&rec, &net, &ns) {
            Ok(rec) => {
                let attached = attached(rec, &ns);
                self.state.write(|ch| ch.put_endpoint(Stored::done(attached.clone())))?;
                self.lease_stored(&attached);
                self.write_resolv_conf(ns.id);
                Ok(attached)
            }
            Err(err) => {
                self.state.write(|ch| ch.delete_endpoint(rec.id))?;
                self.release_empty_blocks(&net);
                self.delete_if_abandoned(&net);
                Err(err)
            }
        }
    }

    pub fn delete_endpoint(&self, key: &str) -> Result<()> {
        let found = self.state.change(|o, ch| {
            let Ok(id) = o.endpoint_id(key) else { return Ok(None) };
            let s = o.endpoint(id)?;
            if s.intent != Some(Intent::Delete) {
                not_busy(s.intent, || format!("endpoint {}", s.record.display_name()))?;
            }
            ch.put_endpoint(Stored::with(s.record.clone(), Intent::Delete));
            Ok(Some((s.record.clone(), o.networks.get(&s.record.network).map(|n| n.record.clone()))))
        })?;
        let Some((ep, net)) = found else { return Ok(()) };
        if ep.in_kernel() {
            self.detach_kernel(&ep, net.as_ref(), self.netns_path(ep.namespace).as_deref())?;
        }
        self.state.change(|o, ch| {
            ch.delete_endpoint(ep.id);
            // The route objects that listed it list it no more.
            for r in o.routes.values().filter(|r| r.record.endpoints.contains(&ep.id)) {
                let mut r = r.clone();
                r.record.endpoints.retain(|e| *e != ep.id);
                ch.put_route(r);
            }
            Ok(())
        })?;
        if let Some(ns) = ep.namespace {
            self.write_resolv_conf(ns);
        }
        if ep.flags & REMOTE_ENDPOINT != 0 {
            self.cluster_changed();
        } else if let Some(net) = &net {
            self.release_empty_blocks(net);
            self.delete_if_abandoned(net);
        }
        Ok(())
    }

    pub fn modify_endpoint(&self, key: &str, change: PolicyChange) -> Result<EndpointRecord> {
        let (old, new, net) = self.state.change(|o, ch| {
            let id = o.endpoint_id(key)?;
            let s = o.endpoint(id)?;
            not_busy(s.intent, || format!("endpoint {}", s.record.display_name()))?;
            let old = s.record.clone();
            let mut new = old.clone();
            match change {
                PolicyChange::Add(p) => new.policies.extend(p),
                PolicyChange::Remove(p) => {
                    for p in &p {
                        let before = new.policies.len();
                        new.policies.retain(|x| !same_policy(x, p));
                        if new.policies.len() == before {
                            return Err(ServiceError::invalid(format!(
                                "endpoint {} has no such policy: {p:?}",
                                new.display_name()
                            )));
                        }
                    }
                }
                PolicyChange::Update(p) => new.policies = p,
            }
            let net = &o.network(new.network)?.record;
            let mappings: Vec<_> = new.port_mappings().collect();
            if !mappings.is_empty() && !net.kind.publishes_ports() {
                return Err(ServiceError::unsupported(validate::port_mappings_refused(&net.to_wire())));
            }
            validate::check_port_mappings(
                &mappings,
                &usage(o, net, Some(id)).port_mappings,
                new.namespace,
                self.caps.sctp,
            )?;
            validate::check_vlan_policies(&new.policies, &net.to_wire())?;
            validate::check_acls(&new.policies, &net.to_wire())?;
            if new.vm_device.is_some() {
                super::refuse_vm_acls(&new, net)?;
            }
            validate::check_outbound_nat(&new.policies, &net.to_wire())?;
            validate::check_sdn_routes(&new.policies, &net.to_wire())?;
            validate::check_l4proxy(&new.policies, &new.ips().collect::<Vec<_>>(), &net.to_wire())?;
            validate::check_qos(&new.policies, &net.to_wire())?;
            if cnet_model::endpoint::vlan_in(&new.policies) != cnet_model::endpoint::vlan_in(&old.policies)
                && new.in_kernel()
            {
                return Err(ServiceError::unsupported(
                    "changing the VLAN of an attached endpoint is not supported: detach it first",
                ));
            }
            validate::check_mtu(&new.policies, &net.to_wire())?;
            ch.put_endpoint(Stored::with(new.clone(), Intent::Modify));
            Ok((old, new, net.clone()))
        })?;
        if new.in_kernel() {
            if let Err(e) = self.reprogram(&old, &new, &net) {
                self.put_endpoint_done(&old)?;
                return Err(e);
            }
            let removed: Vec<&PortMapping> =
                old.port_mappings().filter(|m| !new.port_mappings().any(|n| n == *m)).collect();
            let added = new.port_mappings().filter(|m| !old.port_mappings().any(|o| o == *m));
            let seen = |ip| self.firewall.dnat_seen(ip).unwrap_or(true);
            let mut flows = if removed.is_empty() { vec![] } else { flows_of_removed(&old, &removed, seen) };
            flows.extend(udp_to_host_ports(added));
            self.forget(&flows);
        }
        self.put_endpoint_done(&new)?;
        Ok(new)
    }

    /// Brings an attached endpoint's kernel state from `old`'s policies to
    /// `new`'s: MTU, routes, ACLs, firewall elements, QoS; on a failure,
    /// every step taken (the failed one too) is undone, last first.
    fn reprogram(&self, old: &EndpointRecord, new: &EndpointRecord, net: &crate::state::NetworkRecord) -> Result<()> {
        #[derive(Clone, Copy)]
        enum Step {
            Mtu,
            Routes,
            Acls,
            Firewall,
            Qos,
        }
        let (was, mtu) = (old.effective_mtu(net), new.effective_mtu(net));
        let netns = self.container_netns(new);
        let adapter = crate::policy::qos::adapter(new, net.kind, netns.as_deref());
        let qos = adapter.as_ref().filter(|_| crate::policy::qos::shaped(old) || crate::policy::qos::shaped(new));
        let mut taken = Vec::new();
        let mut run = |step: Step| -> Result<()> {
            taken.push(step);
            match step {
                Step::Mtu if was != mtu => self.set_adapter_mtu(new, mtu),
                Step::Mtu => Ok(()),
                Step::Routes => self.change_routes(old, new, net),
                Step::Acls => {
                    self.policies.set(new, net, netns.as_deref()).map_err(|e| ServiceError::kernel("updating ACLs", e))
                }
                Step::Firewall => self
                    .firewall
                    .set(new.id, firewall::endpoint_elems(new, net))
                    .map_err(|e| ServiceError::kernel("updating port mappings", e)),
                // A rate change is a `tc qdisc replace`: open connections keep going.
                Step::Qos => match qos {
                    Some(at) => crate::policy::qos::set(self.dp.as_ref(), new, at)
                        .map_err(|e| ServiceError::kernel("updating QoS", e)),
                    None => Ok(()),
                },
            }
        };
        let done = [Step::Mtu, Step::Routes, Step::Acls, Step::Firewall, Step::Qos].into_iter().try_for_each(&mut run);
        let Err(e) = done else { return Ok(()) };
        for step in taken.into_iter().rev() {
            let _ = match step {
                Step::Mtu => self.set_adapter_mtu(old, was),
                Step::Routes => self.change_routes(new, old, net),
                Step::Acls => self.policies.set(old, net, netns.as_deref()).map_err(|e| ServiceError::kernel("", e)),
                Step::Firewall => self
                    .firewall
                    .set(old.id, firewall::endpoint_elems(old, net))
                    .map_err(|e| ServiceError::kernel("", e)),
                Step::Qos => match qos {
                    Some(at) => {
                        crate::policy::qos::set(self.dp.as_ref(), old, at).map_err(|e| ServiceError::kernel("", e))
                    }
                    None => Ok(()),
                },
            };
        }
        Err(e)
    }

    /// Brings the routes inside an attached container's namespace from
    /// `old`'s to `new`'s (its `SDNRoute`s changed). A VM's guest and a
    /// runtime that took a handed-off adapter route for themselves.
    pub(super) fn change_routes(
        &self,
        old: &EndpointRecord,
        new: &EndpointRecord,
        net: &crate::state::NetworkRecord,
    ) -> Result<()> {
        let (was, now) = (old.all_routes(net), new.all_routes(net));
        if was == now {
            return Ok(());
        }
        let Some(path) = self.container_netns(new) else { return Ok(()) };
        let gone: Vec<_> = was.iter().filter(|r| !now.contains(r)).map(crate::driver::bridge::route).collect();
        let added: Vec<_> = now.iter().filter(|r| !was.contains(r)).map(crate::driver::bridge::route).collect();
        self.dp
            .change_routes_inside(&path, new.interface_name.as_str(), &gone, &added)
            .map_err(|e| ServiceError::kernel(&format!("changing the routes of endpoint {}", new.display_name()), e))
    }

    /// The path of the container namespace `ep` is attached to; `None` for a guest's.
    fn container_netns(&self, ep: &EndpointRecord) -> Option<String> {
        let o = self.state.read();
        let ns = ep.namespace.and_then(|n| o.namespaces.get(&n))?;
        (!ns.record.kind.is_guest()).then(|| ns.record.netns_path.clone())
    }

    /// Sets the MTU of an attached endpoint's adapter, on both ends where
    /// cnet has both: the host's side (veth, TAP, macvtap) and, in a
    /// container's namespace, its interface. A VM's guest sets its own.
    fn set_adapter_mtu(&self, ep: &EndpointRecord, mtu: u32) -> Result<()> {
        let failed = |e| ServiceError::kernel(&format!("setting the MTU of endpoint {}", ep.display_name()), e);
        let inside = self.container_netns(ep);
        let host = &ep.host_interface_name;
        if !host.is_empty() && self.dp.link(host).map_err(failed)?.is_some() {
            self.dp.set_mtu(None, host, mtu).map_err(failed)?;
        }
        if let Some(path) = inside {
            self.dp.set_mtu(Some(&path), ep.interface_name.as_str(), mtu).map_err(failed)?;
        }
        Ok(())
    }

    fn put_endpoint_done(&self, rec: &EndpointRecord) -> Result<()> {
        self.state.write(|ch| ch.put_endpoint(Stored::done(rec.clone())))
    }

    pub fn attach(&self, ns_key: &str, ep_key: &str) -> Result<()> {
        let found = self.state.change(|o, ch| {
            let ns_id = o.namespace_id(ns_key)?;
            let ep_id = o.endpoint_id(ep_key)?;
            let s = o.endpoint(ep_id)?;
            let ep = &s.record;
            not_busy(s.intent, || format!("endpoint {}", ep.display_name()))?;
            match ep.namespace {
                Some(cur) if cur == ns_id => return Ok(None),
                Some(cur) => {
                    return Err(ServiceError::new(
                        ErrorCode::EndpointAlreadyAttached,
                        format!("endpoint {} is attached to namespace {cur}: detach it first", ep.display_name()),
                    ))
                }
                None => {}
            }
            if let Some(peer) = &ep.handed_off {
                return Err(ServiceError::new(
                    ErrorCode::EndpointAlreadyAttached,
                    format!("endpoint {} was handed off to a runtime as {peer}: delete it instead", ep.display_name()),
                ));
            }
            if ep.flags & REMOTE_ENDPOINT != 0 {
                return Err(ServiceError::invalid(format!(
                    "endpoint {} is a remote endpoint (it lives on another host): it is never attached here",
                    ep.display_name()
                )));
            }
            check_ifname_free(o, ep.id, &ep.interface_name, ns_id)?;
            let net = o.network(ep.network)?.record.clone();
            let ns = o.namespace(ns_id)?.record.clone();
            ch.put_endpoint(Stored::with(ep.clone(), Intent::Attach(ns_id)));
            Ok(Some((ep.clone(), net, ns)))
        })?;
        let Some((ep, net, ns)) = found else { return Ok(()) };
        match self.attach_kernel(&ep, &net, &ns) {
            Ok(rec) => {
                let rec = attached(rec, &ns);
                self.put_endpoint_done(&rec)?;
                self.lease_stored(&rec);
                self.write_resolv_conf(ns.id);
                Ok(())
            }
            Err(e) => {
                self.put_endpoint_done(&ep)?;
                Err(e)
            }
        }
    }

    pub fn detach(&self, ns_key: &str, ep_key: &str) -> Result<()> {
        let found = self.state.change(|o, ch| {
            let ns_id = o.namespace_id(ns_key)?;
            let Ok(ep_id) = o.endpoint_id(ep_key) else { return Ok(None) };
            let s = o.endpoint(ep_id)?;
            let ep = &s.record;
            match ep.namespace {
                None => return Ok(None),
                Some(cur) if cur != ns_id => {
                    return Err(ServiceError::new(
                        ErrorCode::EndpointNotAttached,
                        format!("endpoint {} is attached to namespace {cur}, not this one", ep.display_name()),
                    ))
                }
                Some(_) => {}
            }
            if s.intent != Some(Intent::Detach) {
                not_busy(s.intent, || format!("endpoint {}", ep.display_name()))?;
            }
            ch.put_endpoint(Stored::with(ep.clone(), Intent::Detach));
            Ok(Some((ep.clone(), o.networks.get(&ep.network).map(|n| n.record.clone()))))
        })?;
        let Some((ep, net)) = found else { return Ok(()) };
        self.detach_kernel(&ep, net.as_ref(), self.netns_path(ep.namespace).as_deref())?;
        let ns = ep.namespace;
        self.put_endpoint_done(&detached(ep))?;
        if let Some(ns) = ns {
            self.write_resolv_conf(ns);
        }
        Ok(())
    }
}

pub(crate) fn attached(mut ep: EndpointRecord, ns: &NamespaceRecord) -> EndpointRecord {
    ep.namespace = Some(ns.id);
    ep.state = EndpointState::Attached;
    ep
}

/// `ep` detached; a leased address goes with the lease.
pub(crate) fn detached(mut ep: EndpointRecord) -> EndpointRecord {
    ep.namespace = None;
    ep.vm_device = None;
    ep.handed_off = None;
    ep.state = EndpointState::Created;
    if ep.lease.take().is_some() {
        ep.ip_configurations.clear();
        ep.routes.clear();
    }
    ep
}
