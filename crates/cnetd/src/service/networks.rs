//! Networks: create (the switch and its firewall elements), modify (subnets,
//! DNS, IP sets and NetworkACLs: [`super::network_policies`]), delete (firewall state before links, so no DNAT ever points into a
//! switch that is being removed).

use ipnet::IpNet;
use uuid::Uuid;

use cnet_model::validate;
use cnet_model::{Dns, ErrorCode, Network, NetworkType, Subnet};

use super::network_policies::{change_policies, NetworkPolicyChange};
use super::{not_busy, NetworkFilter, Service};
use crate::error::{Result, ServiceError};
use crate::state::records::OverlayHost;
use crate::state::{Intent, NetworkRecord, Objects, Stored};

/// A change to a live network (the typed form of an HCN modify request).
#[derive(Clone, Debug, PartialEq)]
pub enum NetworkChange {
    AddSubnet(Subnet),
    RemoveSubnet(IpNet),
    UpdateDns(Dns),
    /// Its `SetPolicy` and `NetworkACL` policies.
    Policies(NetworkPolicyChange),
}

/// The other networks, as the model's validation wants them.
fn others(o: &Objects, except: Uuid) -> Vec<Network> {
    o.networks.values().filter(|s| s.record.id != except).map(|s| s.record.to_wire()).collect()
}

impl Service {
    /// A physical network's uplink must be a link of this host that is not
    /// one of cnet's own.
    fn check_uplink(&self, net: &Network) -> Result<()> {
        let Some(up) = net.adapter_name() else { return Ok(()) };
        let link = self.dp.link(up).map_err(|e| ServiceError::kernel("looking up the uplink", e))?;
        let Some(link) = link else {
            return Err(ServiceError::invalid(format!(
                "uplink {up} (NetAdapterName) does not exist on this host: name an existing interface (ip link lists them)"
            )));
        };
        let ours = crate::reconcile::OWN_PREFIXES.iter().any(|p| up.starts_with(p)) && up.len() >= 13;
        if ours || link.master.is_some() {
            return Err(ServiceError::invalid(format!(
                "uplink {up} (NetAdapterName) is {}: name the host's LAN interface",
                if ours {
                    "one of cnet's own links".to_string()
                } else {
                    format!("a port of {}", link.master.unwrap_or_default())
                }
            )));
        }
        Ok(())
    }

    pub fn get_network(&self, key: &str) -> Result<NetworkRecord> {
        let o = self.state.read();
        Ok(o.network(o.network_id(key)?)?.record.clone())
    }

    pub fn list_networks(&self, f: &NetworkFilter) -> Result<Vec<NetworkRecord>> {
        let ty = f.r#type.as_deref().map(str::parse::<NetworkType>).transpose()?;
        let o = self.state.read();
        Ok(o.networks
            .values()
            .map(|s| &s.record)
            .filter(|n| f.name.as_deref().is_none_or(|x| n.name.as_str() == x))
            .filter(|n| ty.is_none_or(|t| n.kind == t))
            .cloned()
            .collect())
    }

    pub fn create_network(&self, net: Network) -> Result<NetworkRecord> {
        self.create_network_from(net, true)
    }

    /// This host as an Overlay network's tunnel end, from its membership.
    fn overlay_host(&self) -> Result<OverlayHost> {
        let m = self.cluster.get().ok_or_else(|| {
            ServiceError::unsupported(
                "an Overlay network spans hosts: start cnetd with --etcd ENDPOINTS on every host (docs/overlay.md)",
            )
        })?;
        let h = m.host();
        let vtep_mac = h
            .vtep_mac
            .parse()
            .map_err(|_| ServiceError::invalid(format!("this host's VTEP MAC {} is not a MAC", h.vtep_mac)))?;
        Ok(OverlayHost { provider: h.provider_address, vtep_mac })
    }

    /// The MTU an Overlay network's endpoints get on this host: the MTU of
    /// the link holding the provider address, less VXLAN's overhead (50
    /// bytes over IPv4, 70 over IPv6).
    fn overlay_mtu(&self, provider: std::net::IpAddr) -> Result<u32> {
        let dp = self.dp.as_ref();
        let kernel = |e| ServiceError::kernel("reading the underlay's MTU", e);
        for link in dp.links().map_err(kernel)? {
            if dp.addresses(&link.name).map_err(kernel)?.iter().any(|a| a.ip == provider) {
                let overhead = if provider.is_ipv4() { 50 } else { 70 };
                return Ok(link.mtu.saturating_sub(overhead).max(1280));
            }
        }
        Err(ServiceError::invalid(format!(
            "no link of this host has the provider address {provider}: start cnetd with --provider-address set to this host's underlay address"
        )))
    }

    /// Creates a network; an Overlay one is also published to the cluster
    /// (`publish`), unless it comes from there (a mirror).
    fn create_network_from(&self, mut net: Network, publish: bool) -> Result<NetworkRecord> {
        let overlay_host = match net.r#type {
            NetworkType::Overlay => Some(self.overlay_host()?),
            _ => None,
        };
        if let (Some(host), None) = (&overlay_host, net.mtu) {
            // Made here, published with the network: every host's endpoints
            // get the same MTU.
            net.mtu = Some(self.overlay_mtu(host.provider)?);
        }
        if let Some(vni) = net.vni().filter(|_| net.r#type == NetworkType::Overlay) {
            let o = self.state.read();
            if let Some(other) = o.networks.values().find(|s| s.record.id != net.id && s.record.vni() == Some(vni)) {
                return Err(ServiceError::invalid(format!(
                    "VNI {vni} is network {}'s ({}): give this network another VSID",
                    other.record.id, other.record.name
                )));
            }
        }
        if net.auto_delete && net.r#type == NetworkType::Overlay {
            return Err(ServiceError::invalid(
                "AutoDelete is for networks of one host: an Overlay network spans hosts; omit AutoDelete",
            ));
        }
        let driver = self.drivers.get(net.r#type)?;
        driver.validate(&net)?;
        super::dns::check_dns_request(&net)?;
        if let Some(why) = self.caps.missing_for(&net) {
            return Err(ServiceError::unsupported(format!("this host cannot build network {}: {why}", net.name)));
        }
        self.check_uplink(&net)?;
        let dhcp_server = net.flags & crate::dhcp::server::ENABLE_DHCP_SERVER != 0;
        if dhcp_server && !matches!(net.r#type, NetworkType::Nat | NetworkType::Internal) {
            return Err(ServiceError::unsupported(format!(
                "EnableDhcpServer (flag 2) needs a NAT or Internal network, where the host has the gateway address to answer from; {} is {}",
                net.name, net.r#type
            )));
        }
        let rec = self.state.change(|o, ch| {
            if net.id.is_nil() {
                net.id = Uuid::new_v4();
            } else if o.networks.contains_key(&net.id) {
                return Err(ServiceError::new(
                    ErrorCode::NetworkAlreadyExists,
                    format!("network {} already exists", net.id),
                ));
            }
            let others = others(o, net.id);
            validate::validate_network(&net, &others.iter().collect::<Vec<_>>())?;
            let bridge = net.derived_bridge_name();
            if o.networks.values().any(|s| s.record.bridge == bridge) {
                return Err(ServiceError::invalid(
                    "the network ID collides with another network's bridge name: omit ID",
                ));
            }
            let mut rec = NetworkRecord::from_wire(&net, bridge)?;
            crate::policy::sets::of_network(&rec).map_err(ServiceError::invalid)?;
            rec.overlay_host = overlay_host.clone();
            ch.put_network(Stored::with(rec.clone(), Intent::Create));
            Ok(rec)
        })?;
        let dp = self.dp.as_ref();
        let programmed = driver.setup(dp, &rec).and_then(|_| self.firewall.set(rec.id, driver.firewall(&rec)));
        if let Err(e) = programmed {
            let _ = self.firewall.remove(rec.id);
            let _ = driver.teardown(dp, &rec);
            self.state.write(|ch| ch.delete_network(rec.id))?;
            let _ = self.firewall.delete_if_unused();
            return Err(ServiceError::kernel(&format!("creating network {}", rec.name), e));
        }
        self.state.write(|ch| ch.put_network(Stored::done(rec.clone())))?;
        if rec.flags & crate::dhcp::server::ENABLE_DHCP_SERVER != 0 {
            self.dhcp_sockets.sync(&self.state.read());
        }
        self.sync_dns();
        // Local first, then the cluster: this host's own follower then finds
        // the network already here. A refusal there (a VNI taken) undoes it.
        if let (true, Some(m), Some(vni)) = (publish, self.cluster.get(), rec.vni()) {
            let definition = serde_json::to_value(rec.to_wire()).expect("a network serialises");
            if let Err(e) = m.create_network(rec.id, vni, &definition) {
                let _ = self.delete_network_from(&rec.id.to_string(), false);
                let code = if e.contains("VNI") { ErrorCode::InvalidParameter } else { ErrorCode::DegradedOperation };
                return Err(ServiceError::new(code, format!("publishing network {} to the cluster: {e}", rec.name)));
            }
        }
        Ok(rec)
    }

    /// The cluster view changed: its networks become this host's, and each
    /// Overlay network's VXLAN device gets the entries of its remote hosts.
    /// One at a time, each from the latest view.
    pub fn cluster_changed(&self) {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = self.cluster.get() else { return };
        let (view, me) = (m.view(), m.host().id);
        self.mirror_networks(&view.networks);
        let overlays: Vec<NetworkRecord> = self
            .state
            .read()
            .networks
            .values()
            .filter(|s| s.record.kind == NetworkType::Overlay && s.intent.is_none())
            .map(|s| s.record.clone())
            .collect();
        let mut peers: Vec<std::net::IpAddr> = view.hosts.values().map(|h| h.provider_address).collect();
        for net in &overlays {
            let eps = self.remote_endpoints(net.id);
            peers.extend(eps.iter().map(|e| e.provider));
            match crate::driver::overlay::sync_remotes(self.dp.as_ref(), net, &view.remote_hosts(net.id, me), &eps) {
                Ok((ops, _)) if ops.is_empty() => {}
                Ok((ops, skipped)) => {
                    tracing::info!(network = %net.name, changes = ops.len(), ?ops, "remote hosts programmed");
                    for s in skipped {
                        tracing::warn!(network = %net.name, "left out: {s}");
                    }
                }
                Err(e) => tracing::warn!(network = %net.name, "programming remote hosts: {e}"),
            }
            self.release_empty_blocks(net);
        }
        let ports: std::collections::BTreeSet<u16> =
            overlays.iter().map(|n| n.vxlan_port.unwrap_or(crate::driver::overlay::VXLAN_PORT)).collect();
        let tunnels = if ports.is_empty() { vec![] } else { crate::firewall::tunnel_elems(&ports, &peers) };
        if let Err(e) = self.firewall.set(crate::firewall::TUNNEL_OWNER, tunnels) {
            tracing::warn!("accepting VXLAN from the cluster's hosts only: {e}");
        }
    }

    /// Makes the cluster's networks this host's own: creates those it lacks,
    /// deletes the Overlay networks the cluster no longer has (when no local
    /// endpoint uses them). Failures are logged; the next change retries.
    pub fn mirror_networks(&self, nets: &std::collections::BTreeMap<Uuid, serde_json::Value>) {
        for (id, def) in nets {
            if self.state.read().networks.contains_key(id) {
                continue;
            }
            match serde_json::from_value::<Network>(def.clone()) {
                Ok(net) => match self.create_network_from(net, false) {
                    Ok(rec) => {
                        tracing::info!(network = %rec.name, id = %rec.id, "network from the cluster created here")
                    }
                    Err(e) => tracing::warn!(%id, "network from the cluster not created here: {}", e.message),
                },
                Err(e) => tracing::warn!(%id, "the cluster's definition of network {id} is not a network: {e}"),
            }
        }
        let gone: Vec<Uuid> = self
            .state
            .read()
            .networks
            .values()
            .filter(|s| s.record.kind == NetworkType::Overlay && !nets.contains_key(&s.record.id))
            .map(|s| s.record.id)
            .collect();
        for id in gone {
            if let Err(e) = self.delete_network_from(&id.to_string(), false) {
                tracing::warn!(%id, "network deleted in the cluster stays here: {}", e.message);
            }
        }
    }

    pub fn delete_network(&self, key: &str) -> Result<()> {
        self.delete_network_from(key, true)
    }

    /// Deletes a network; an Overlay one goes from the cluster first
    /// (`publish`; refused while any host has endpoints on it).
    fn delete_network_from(&self, key: &str, publish: bool) -> Result<()> {
        let overlay = {
            let o = self.state.read();
            o.network_id(key).ok().and_then(|id| o.networks.get(&id)).map(|s| s.record.clone())
        }
        .filter(|n| n.kind == NetworkType::Overlay);
        if let (true, Some(net), Some(m)) = (publish, &overlay, self.cluster.get()) {
            let has_local = self.state.read().endpoints.values().any(|e| e.record.network == net.id);
            if !has_local {
                if let Some(vni) = net.vni() {
                    m.delete_network(net.id, vni).map_err(|e| {
                        let code = if e.contains("still has endpoints") {
                            ErrorCode::EntityHasReferences
                        } else {
                            ErrorCode::DegradedOperation
                        };
                        ServiceError::new(code, format!("deleting network {} from the cluster: {e}", net.name))
                    })?;
                }
            }
        }
        let net = self.state.change(|o, ch| {
            let Ok(id) = o.network_id(key) else { return Ok(None) };
            let s = o.network(id)?;
            if s.intent != Some(Intent::Delete) {
                not_busy(s.intent, || format!("network {}", s.record.name))?;
            }
            let users: Vec<String> =
                o.endpoints.values().filter(|e| e.record.network == id).map(|e| e.record.display_name()).collect();
            if !users.is_empty() {
                return Err(ServiceError::new(
                    ErrorCode::EntityHasReferences,
                    format!(
                        "network {} still has {} endpoint(s) ({}): delete them first",
                        s.record.name,
                        users.len(),
                        users.join(", ")
                    ),
                ));
            }
            // Its route objects go with it (they list only its endpoints).
            for r in o.routes.values().filter(|r| r.record.network == id) {
                ch.delete_route(r.record.id);
            }
            ch.put_network(Stored::with(s.record.clone(), Intent::Delete));
            Ok(Some(s.record.clone()))
        })?;
        match net {
            Some(net) => self.finish_network_delete(&net),
            None => Ok(()),
        }
    }

    /// An `AutoDelete` network goes once its last endpoint has: the
    /// runtime that made it may have forgotten it. Another endpoint arriving
    /// meanwhile keeps it (the delete is refused).
    pub(crate) fn delete_if_abandoned(&self, net: &NetworkRecord) {
        let unused = {
            let o = self.state.read();
            o.networks.get(&net.id).is_some_and(|s| s.record.auto_delete && s.intent.is_none())
                && !o.endpoints.values().any(|e| e.record.network == net.id)
        };
        if !unused {
            return;
        }
        match self.delete_network(&net.id.to_string()) {
            Ok(()) => tracing::info!(network = %net.name, "deleted with its last endpoint (AutoDelete)"),
            Err(e) if e.code == ErrorCode::EntityHasReferences => {}
            Err(e) => tracing::warn!(network = %net.name, "AutoDelete failed: {}", e.message),
        }
    }

    /// Firewall state goes before the switch; the record goes last.
    pub(crate) fn finish_network_delete(&self, net: &NetworkRecord) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.firewall.remove(net.id) {
            errors.push(e.to_string());
        }
        match self.driver(net) {
            Ok(driver) => {
                if let Err(e) = driver.teardown(self.dp.as_ref(), net) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(e.message),
        }
        if !errors.is_empty() {
            return Err(ServiceError::new(
                ErrorCode::DegradedOperation,
                format!(
                    "deleting network {} failed; it stays marked for deletion and a retry or restart finishes it: {}",
                    net.name,
                    errors.join("; ")
                ),
            ));
        }
        self.state.write(|ch| ch.delete_network(net.id))?;
        let _ = self.firewall.delete_if_unused();
        self.sync_dns();
        Ok(())
    }

    pub fn modify_network(&self, key: &str, change: NetworkChange) -> Result<NetworkRecord> {
        let (old, new, eps) = self.state.change(|o, ch| {
            let id = o.network_id(key)?;
            let s = o.network(id)?;
            not_busy(s.intent, || format!("network {}", s.record.name))?;
            let old = s.record.clone();
            let mut net = old.to_wire();
            match change {
                NetworkChange::AddSubnet(sub) => match net.ipams.first_mut() {
                    Some(ipam) => ipam.subnets.push(sub),
                    None => net.ipams.push(cnet_model::Ipam { r#type: "Static".into(), subnets: vec![sub] }),
                },
                NetworkChange::RemoveSubnet(prefix) => {
                    let used = o
                        .endpoints
                        .values()
                        .map(|e| &e.record)
                        .any(|e| e.network == id && e.ips().any(|ip| prefix.contains(&ip)));
                    if used {
                        return Err(ServiceError::new(
                            ErrorCode::EntityHasReferences,
                            format!("endpoints still use subnet {prefix}: delete them first"),
                        ));
                    }
                    let before = net.subnets().count();
                    for ipam in &mut net.ipams {
                        ipam.subnets.retain(|x| x.ip_address_prefix != prefix);
                    }
                    if net.subnets().count() == before {
                        return Err(ServiceError::new(
                            ErrorCode::InvalidSubnet,
                            format!("network {} has no subnet {prefix}", net.name),
                        ));
                    }
                }
                NetworkChange::UpdateDns(dns) => net.dns = Some(dns),
                NetworkChange::Policies(change) => change_policies(o, id, &mut net, change)?,
            }
            let others = others(o, id);
            validate::validate_network(&net, &others.iter().collect::<Vec<_>>())?;
            let vlans = |subnets: &mut dyn Iterator<Item = &Subnet>| -> Vec<Option<cnet_model::Isolation>> {
                subnets.map(|s| s.vlan()).collect()
            };
            let has_endpoints = o.endpoints.values().any(|e| e.record.network == id);
            if has_endpoints && vlans(&mut old.subnets.iter()).iter().chain(vlans(&mut net.subnets()).iter()).any(|v| v.is_some())
                && old.subnets.len() != net.subnets().count()
            {
                return Err(ServiceError::new(
                    ErrorCode::EntityHasReferences,
                    format!(
                        "network {} has endpoints: subnets with VLAN policies are added or removed only without them (their VLANs would change)",
                        net.name
                    ),
                ));
            }
            let mut new = NetworkRecord::from_wire(&net, old.bridge.clone())?;
            new.last_allocated.clone_from(&old.last_allocated);
            new.overlay_host.clone_from(&old.overlay_host);
            crate::policy::sets::of_network(&new).map_err(ServiceError::invalid)?;
            let eps: Vec<_> =
                o.endpoints.values().map(|e| &e.record).filter(|e| e.network == id).cloned().collect();
            for ep in &eps {
                validate::check_acls(&ep.policies, &net).map_err(|e| {
                    ServiceError::new(e.error_code, format!("endpoint {}: {}", ep.display_name(), e.error))
                })?;
                if ep.vm_device.is_some() {
                    super::refuse_vm_acls(ep, &new)?;
                }
            }
            ch.put_network(Stored::with(new.clone(), Intent::Modify));
            // Each with the path of its namespace (empty for a VM's).
            let path = |ep: &crate::state::EndpointRecord| {
                ep.namespace.and_then(|n| o.namespaces.get(&n)).map(|n| n.record.netns_path.clone()).unwrap_or_default()
            };
            let eps: Vec<_> = eps.into_iter().filter(|e| e.in_kernel()).map(|e| {
                let p = path(&e);
                (e, p)
            }).collect();
            Ok((old, new, eps))
        })?;
        let driver = self.driver(&new)?;
        let dp = self.dp.as_ref();
        let result = driver
            .update(dp, &old, &new)
            .and_then(|_| self.firewall.set(new.id, driver.firewall(&new)))
            .and_then(|_| self.policies.network_changed(&new, &eps));
        match result {
            Ok(()) => {
                self.state.write(|ch| ch.put_network(Stored::done(new.clone())))?;
                self.sync_dns();
                Ok(new)
            }
            Err(e) => {
                // Back to the old kernel state as far as it goes; start-up repair does the rest.
                let _ = driver.update(dp, &new, &old);
                let _ = self.firewall.set(old.id, driver.firewall(&old));
                let _ = self.policies.network_changed(&old, &eps);
                self.state.write(|ch| ch.put_network(Stored::done(old.clone())))?;
                Err(ServiceError::kernel("modifying network", e))
            }
        }
    }
}
