//! Overlay networks in the service: endpoint addresses from this host's
//! blocks, empty blocks given back.
//!
//! Invariants:
//! - An Overlay endpoint's addresses lie in blocks this host holds in etcd:
//!   a block is claimed (one etcd transaction) before any address of it is
//!   handed out; addresses are then allocated locally with no round trip.
//! - Choosing addresses and giving a block back happen under one lock
//!   (`Service::blocks`), so a block is never given back while an address of
//!   it is being handed out, and only when no endpoint of this host has an
//!   address in it.
//! - With etcd unreachable, endpoints are still created from the blocks
//!   already held; only a claim needs etcd, and its failure says so.
//! - Inside the compartment an endpoint has its address as a host prefix
//!   (/32, /128), the gateway as an on-link host route and the default route
//!   via the gateway: every packet goes to the gateway (the DR MAC, the same
//!   on every host) and is routed by the host, locally or through the
//!   tunnel to the host holding the destination's block. No ARP or NDP
//!   ever crosses hosts.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::MutexGuard;

use ipnet::IpNet;

use cnet_model::{Endpoint, ErrorCode, IpSubnet, Network, NetworkType};

use super::Service;
use crate::error::{Result, ServiceError};
use crate::state::NetworkRecord;

/// Whether `block` of `subnet` (gateway `gw`) has an address not in `used`.
fn has_free(subnet: &cnet_model::Subnet, gw: IpAddr, block: IpNet, used: &HashSet<IpAddr>) -> bool {
    block
        .hosts()
        .chain([block.network(), block.broadcast()])
        .any(|ip| cnet_model::alloc::is_assignable(subnet, Some(gw), ip) && !used.contains(&ip) && block.contains(&ip))
}

/// The network as allocation must see it: each subnet's addresses come
/// only from `blocks` (as with `IpSubnets`).
pub(super) fn restricted(net: &Network, blocks: &[IpNet]) -> Network {
    let mut net = net.clone();
    for ipam in &mut net.ipams {
        for s in &mut ipam.subnets {
            s.ip_subnets = blocks
                .iter()
                .filter(|b| s.ip_address_prefix.contains(*b))
                .map(|b| IpSubnet { ip_address_prefix: *b, flags: 0 })
                .collect();
        }
    }
    net
}

/// Host prefixes and the on-link gateway route (see the module docs), in
/// place of the subnet's prefix the allocation gave.
pub(super) fn routed_inside(ep: &mut Endpoint) {
    for c in &mut ep.ip_configurations {
        c.prefix_length = if c.ip_address.is_ipv4() { 32 } else { 128 };
    }
    let gateways: Vec<IpAddr> = ep.routes.iter().filter_map(|r| r.next_hop).collect();
    let mut routes: Vec<cnet_model::Route> = Vec::new();
    for gw in gateways {
        let host = IpNet::from(gw);
        if !routes.iter().any(|r| r.destination_prefix == host) {
            routes.push(cnet_model::Route { next_hop: None, destination_prefix: host, metric: 0 });
        }
    }
    routes.append(&mut ep.routes);
    ep.routes = routes;
}

impl Service {
    /// Network `key` as `GET /networks/{id}` answers it: an Overlay
    /// network with a `RemoteSubnetRoute` policy per block another
    /// registered host holds (what its VXLAN device routes).
    pub fn network_answer(&self, key: &str) -> Result<Network> {
        let rec = self.get_network(key)?;
        let mut wire = rec.to_wire();
        if let (NetworkType::Overlay, Some(m), Some(vni)) = (rec.kind, self.cluster.get(), rec.vni()) {
            for r in m.view().remote_hosts(rec.id, m.host().id) {
                let Ok(mac) = r.host.vtep_mac.parse() else { continue };
                for b in r.blocks {
                    wire.policies.push(cnet_model::NetworkPolicy::RemoteSubnetRoute(cnet_model::RemoteSubnetRoute {
                        destination_prefix: b,
                        isolation_id: vni,
                        provider_address: r.host.provider_address,
                        distributed_router_mac_address: mac,
                    }));
                }
            }
        }
        Ok(wire)
    }

    /// A remote endpoint's addresses are not in a block this host holds
    /// (those are this host's to hand out).
    pub(super) fn check_remote_addresses(&self, net: &NetworkRecord, ep: &Endpoint) -> Result<()> {
        let own = self.cluster.get().map(|m| m.own_blocks(net.id)).unwrap_or_default();
        for c in &ep.ip_configurations {
            if let Some(b) = own.iter().find(|b| b.contains(&c.ip_address)) {
                return Err(ServiceError::new(
                    ErrorCode::AddrInvalidOrReserved,
                    format!(
                        "address {} is in block {b}, which this host holds: a remote endpoint's address lives on another host",
                        c.ip_address
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The remote endpoints of network `net`, as its tunnel entries need them.
    pub(crate) fn remote_endpoints(&self, net: uuid::Uuid) -> Vec<crate::driver::overlay::RemoteEndpoint> {
        let o = self.state.read();
        o.endpoints
            .values()
            .map(|s| &s.record)
            .filter(|e| e.network == net && e.flags & cnet_model::endpoint::REMOTE_ENDPOINT != 0)
            .filter_map(|e| {
                Some(crate::driver::overlay::RemoteEndpoint {
                    ips: e.ips().collect(),
                    mac: cnet_dataplane::Mac(e.mac.0),
                    provider: cnet_model::endpoint::provider_in(&e.policies)?,
                })
            })
            .collect()
    }

    fn blocks_lock(&self) -> MutexGuard<'_, ()> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before an endpoint `ep` is made on Overlay network `net`: the lock
    /// that allocation holds and this host's blocks of `net`, with one more
    /// claimed for every subnet whose held blocks have no address free.
    pub(super) fn overlay_blocks(
        &self,
        net: &NetworkRecord,
        ep: &Endpoint,
    ) -> Result<(MutexGuard<'_, ()>, Vec<IpNet>)> {
        let m = self.cluster.get().ok_or_else(|| {
            ServiceError::unsupported(format!(
                "network {} is an Overlay network: cnetd must run with --etcd to give it endpoints",
                net.name
            ))
        })?;
        let guard = self.blocks_lock();
        let mut blocks = m.own_blocks(net.id);
        let used: HashSet<IpAddr> = {
            let o = self.state.read();
            o.endpoints.values().filter(|e| e.record.network == net.id).flat_map(|e| e.record.ips()).collect()
        };
        for c in &ep.ip_configurations {
            if !blocks.iter().any(|b| b.contains(&c.ip_address)) {
                return Err(ServiceError::new(
                    ErrorCode::AddrInvalidOrReserved,
                    format!(
                        "address {} is not in a block this host holds of Overlay network {} (it holds {}): omit it, and the host hands out one of its own",
                        c.ip_address,
                        net.name,
                        if blocks.is_empty() { "none".into() } else { blocks.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ") }
                    ),
                ));
            }
        }
        let families: Vec<bool> = ep.ip_configurations.iter().map(|c| c.ip_address.is_ipv4()).collect();
        for s in &net.subnets {
            let prefix = s.ip_address_prefix;
            if families.contains(&prefix.addr().is_ipv4()) {
                continue;
            }
            let gw = s.gateway();
            if blocks.iter().any(|b| prefix.contains(b) && has_free(s, gw, *b, &used)) {
                continue;
            }
            let block = m.claim_block(net.id, prefix).map_err(|e| {
                let code = if e.contains("every block") {
                    ErrorCode::AddressPoolExhausted
                } else {
                    ErrorCode::DegradedOperation
                };
                ServiceError::new(code, format!("claiming a block of {prefix} of network {}: {e}", net.name))
            })?;
            blocks.push(block);
        }
        Ok((guard, blocks))
    }

    /// Gives back the blocks of Overlay network `net` that no endpoint of
    /// this host has an address in (in the background; see
    /// [`crate::cluster::Membership::release_block`]).
    pub(crate) fn release_empty_blocks(&self, net: &NetworkRecord) {
        if net.kind != NetworkType::Overlay {
            return;
        }
        let Some(m) = self.cluster.get() else { return };
        let _guard = self.blocks_lock();
        let used: Vec<IpAddr> = {
            let o = self.state.read();
            o.endpoints.values().filter(|e| e.record.network == net.id).flat_map(|e| e.record.ips()).collect()
        };
        for b in m.own_blocks(net.id) {
            if !used.iter().any(|ip| b.contains(ip)) {
                m.release_block(net.id, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_endpoint_is_routed_through_the_gateway() {
        let mut ep: Endpoint = serde_json::from_value(serde_json::json!({
            "HostComputeNetwork": "ov",
            "IpConfigurations": [{"IpAddress": "10.99.1.70", "PrefixLength": 24}, {"IpAddress": "fd99::46", "PrefixLength": 64}],
            "Routes": [{"NextHop": "10.99.1.1", "DestinationPrefix": "0.0.0.0/0"}, {"NextHop": "fd99::1", "DestinationPrefix": "::/0"}]
        }))
        .unwrap();
        routed_inside(&mut ep);
        let prefixes: Vec<u8> = ep.ip_configurations.iter().map(|c| c.prefix_length).collect();
        assert_eq!(prefixes, vec![32, 128]);
        let routes: Vec<String> = ep
            .routes
            .iter()
            .map(|r| format!("{} via {:?}", r.destination_prefix, r.next_hop.map(|h| h.to_string())))
            .collect();
        assert_eq!(
            routes,
            vec![
                "10.99.1.1/32 via None",
                "fd99::1/128 via None",
                "0.0.0.0/0 via Some(\"10.99.1.1\")",
                "::/0 via Some(\"fd99::1\")"
            ],
            "the gateways on-link first, so that the default routes can use them"
        );
    }

    #[test]
    fn allocation_sees_only_the_blocks_inside_each_subnet() {
        let net: Network = serde_json::from_value(serde_json::json!({
            "Name": "ov", "Type": "Overlay",
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.99.1.0/24"}, {"IpAddressPrefix": "fd99::/64"}]}]
        }))
        .unwrap();
        let blocks: Vec<IpNet> = vec!["10.99.1.64/26".parse().unwrap(), "fd99::40/122".parse().unwrap()];
        let r = restricted(&net, &blocks);
        let got: Vec<Vec<String>> =
            r.subnets().map(|s| s.ip_subnets.iter().map(|b| b.ip_address_prefix.to_string()).collect()).collect();
        assert_eq!(got, vec![vec!["10.99.1.64/26"], vec!["fd99::40/122"]]);
    }

    #[test]
    fn a_block_is_full_when_every_assignable_address_is_used() {
        let s: cnet_model::Subnet =
            serde_json::from_value(serde_json::json!({"IpAddressPrefix": "10.99.1.0/30"})).unwrap();
        let gw: IpAddr = "10.99.1.1".parse().unwrap();
        let block: IpNet = "10.99.1.0/30".parse().unwrap();
        let mut used = HashSet::new();
        assert!(has_free(&s, gw, block, &used), ".2 is free");
        used.insert("10.99.1.2".parse().unwrap());
        assert!(!has_free(&s, gw, block, &used), "network, gateway and broadcast are never free");
    }
}
