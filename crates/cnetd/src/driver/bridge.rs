//! Bridge-backed networks (NAT, Internal, Private) and their veth endpoints.
//!
//! Invariants:
//! - The bridge has a fixed MAC derived from the network ID, so the gateway's
//!   MAC never changes when ports come and go.
//! - Setting up is idempotent and never re-creates an existing bridge.
//! - An endpoint's kernel state is exactly: a veth pair (inside: the
//!   endpoint's name, MAC, MTU, addresses, routes; outside: `cnv…` on the
//!   bridge) plus its firewall elements, owned by [`crate::firewall`].

use cnet_dataplane::link::{self, BridgeSpec, RouteSpec, VethSpec};
use cnet_dataplane::reaper::Reaper;
use cnet_dataplane::{sysctl, DataplaneError};
use cnet_model::validate::gateway_of;
use cnet_model::{Endpoint, Network, NetworkType};

pub fn bridge_spec(net: &Network) -> BridgeSpec {
    BridgeSpec {
        name: net.derived_bridge_name(),
        mac: net.bridge_mac().to_string(),
        mtu: net.mtu(),
        addrs: net
            .subnets()
            .filter_map(|s| gateway_of(net, s).map(|gw| (gw, s.ip_address_prefix.prefix_len())))
            .collect(),
    }
}

/// Creates (or completes) the network's bridge and the sysctls it needs.
pub fn setup_network(net: &Network) -> Result<(), DataplaneError> {
    let spec = bridge_spec(net);
    link::ensure_bridge(&spec)?;
    let has_v6 = net.subnets().any(|s| s.ip_address_prefix.addr().is_ipv6());
    match net.r#type {
        NetworkType::Nat => {
            sysctl::set("net/ipv4/ip_forward", "1")?;
            if has_v6 {
                sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
            }
            // Lets the host publish to 127.0.0.1 through this bridge only;
            // the `martians` chain drops 127/8 arriving from outside.
            sysctl::set(&format!("net/ipv4/conf/{}/route_localnet", spec.name), "1")?;
        }
        NetworkType::Private => {
            // No host address at all, not even link-local.
            sysctl::set(&format!("net/ipv6/conf/{}/disable_ipv6", spec.name), "1")?;
        }
        _ => {}
    }
    Ok(())
}

pub fn teardown_network(net: &Network) -> Result<(), DataplaneError> {
    link::delete_link(None, &net.derived_bridge_name())
}

pub fn veth_spec(ep: &Endpoint, net: &Network, netns_path: &str) -> VethSpec {
    VethSpec {
        netns_path: netns_path.to_string(),
        ifname: ep.interface_name().to_string(),
        host_name: ep.derived_host_name(),
        bridge: net.derived_bridge_name(),
        mac: ep.mac_address.map(|m| m.to_string()).unwrap_or_default(),
        mtu: ep.mtu().unwrap_or(net.mtu()),
        addrs: ep.ip_configurations.iter().map(|c| (c.ip_address, c.prefix_length)).collect(),
        routes: ep
            .routes
            .iter()
            .map(|r| RouteSpec {
                destination: (r.destination_prefix.addr(), r.destination_prefix.prefix_len()),
                via: r.next_hop,
                metric: r.metric,
            })
            .collect(),
        hairpin: net.r#type == NetworkType::Nat,
    }
}

/// Creates the endpoint's veth pair. When a name is taken by a pair the
/// reaper has not deleted yet (an endpoint re-attached right after a detach),
/// waits for the reaper and tries once more.
pub fn attach_endpoint(ep: &Endpoint, net: &Network, netns_path: &str, reaper: &Reaper) -> Result<(), DataplaneError> {
    let spec = veth_spec(ep, net, netns_path);
    match link::create_veth(&spec) {
        Err(e) if e.is_exists() && reaper.pending() => {
            reaper.settle();
            link::create_veth(&spec)
        }
        result => result,
    }
}

/// Cuts the endpoint off (veth down, off the bridge) and hands the pair to
/// the reaper, which deletes it in the background with other deletions
/// (deleting the host side removes both).
pub fn detach_endpoint(ep: &Endpoint, reaper: &Reaper) -> Result<(), DataplaneError> {
    reaper.delete(&ep.derived_host_name())
}
