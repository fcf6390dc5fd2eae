//! L2Bridge and L2Tunnel networks: endpoints with addresses of the LAN's
//! subnet whose frames on the wire all carry the host's MAC.
//!
//! How: the endpoints' veths are on a bridge of their own (`cnb…`, no
//! address); the host routes between that bridge and the uplink. On the
//! way out, the host forwards an endpoint's packet with the uplink's MAC as
//! source; on the way in, the LAN sends to the host's MAC (the host answers
//! ARP for every endpoint address on the uplink: one proxy neighbour entry
//! each) and the host forwards to the endpoint's own MAC. Inside, the
//! bridge answers ARP for everything beyond it (`proxy_arp`), so an
//! endpoint's gateway and LAN peers resolve to the bridge. The physical
//! switch only ever learns the host's MAC. Why routing rather than MAC
//! rewriting on a bridge that enslaves the uplink: the uplink keeps its
//! addresses and configuration (nothing of the host's own networking
//! moves), and per-endpoint state is one route and one proxy entry.
//!
//! L2Tunnel: the same, and nothing is switched locally. Bridge ports are
//! isolated (no frame between two endpoints), and a policy rule sends
//! everything that comes in from the bridge to a table whose only route is
//! the uplink's gateway: a packet from one endpoint to another of the same
//! host goes out to the gateway and comes back (hairpinned by the physical
//! network), so an external SDN sees and can police all of it.
//!
//! IPv4 only in this build (IPv6 needs a proxy entry per neighbour on both
//! sides); VLANs and DHCP are Transparent's.
//!
//! Invariants:
//! - The uplink keeps its addresses; cnet sets `proxy_delay` 0 on it (proxy
//!   answers without the default 0.8 s delay) and adds only proxy entries.
//! - An endpoint's kernel state is its veth (as on a NAT bridge), one host
//!   route to its address through the bridge, one proxy entry on the uplink.

use cnet_model::VmNicOptions;
use std::net::IpAddr;

use cnet_dataplane::{Addr, HostRoute, Rule};
use cnet_model::findings::{Finding, FindingKind};
use cnet_model::names::stable_hash;
use cnet_model::NetworkType;

use super::bridge::{bridge_spec, name, Bridge};
use super::{check_uplink, endpoint_subject, host_ipv4, network_subject, Links, NetworkDriver, Repair};
use crate::dataplane::{Dataplane, DpResult, FwElem};
use crate::error::{Result, ServiceError};
use crate::state::{EndpointRecord, NamespaceRecord, NetworkRecord};

pub struct L2Bridge;

/// The priority of L2Tunnel rules: before the main table (32766).
const RULE_PRIORITY: u32 = 30_000;

/// The routing table of an L2Tunnel network: derived from its ID, clear
/// of the reserved tables (0, 253–255).
pub fn table_of(net: &NetworkRecord) -> u32 {
    1_000_000 + (stable_hash(net.id.as_bytes()) % 1_000_000) as u32
}

fn rule(net: &NetworkRecord) -> DpResult<Rule> {
    Ok(Rule { iif: name(&net.bridge)?, table: table_of(net), priority: RULE_PRIORITY })
}

/// L2Tunnel's only routes: to each subnet's gateway on the uplink.
fn tunnel_routes(net: &NetworkRecord) -> DpResult<Vec<HostRoute>> {
    let dev = name(net.uplink())?;
    Ok(net
        .gateways()
        .filter(|(_, gw)| gw.is_ipv4())
        .map(|(_, gw)| HostRoute {
            dev: dev.clone(),
            destination: Addr { ip: "0.0.0.0".parse().expect("an address"), prefix_len: 0 },
            via: Some(gw),
            src: None,
            table: table_of(net),
        })
        .collect())
}

fn endpoint_routes(net: &NetworkRecord, ep: &EndpointRecord, src: Option<IpAddr>) -> DpResult<Vec<HostRoute>> {
    let dev = name(&net.bridge)?;
    Ok(ep
        .ips()
        .filter(|ip| ip.is_ipv4())
        .map(|ip| HostRoute {
            dev: dev.clone(),
            destination: Addr { ip, prefix_len: 32 },
            via: None,
            src,
            table: HostRoute::MAIN,
        })
        .collect())
}

/// Routes and proxy entries of an attached endpoint.
fn program(dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord) -> DpResult<()> {
    let src = host_ipv4(dp, net)?;
    for r in endpoint_routes(net, ep, src)? {
        dp.route_replace(&r)?;
        dp.proxy_add(net.uplink(), r.destination.ip)?;
    }
    Ok(())
}

fn unprogram(dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord) -> DpResult<()> {
    let routes = endpoint_routes(net, ep, None)?;
    super::all_steps(routes.iter().flat_map(|r| [dp.proxy_delete(net.uplink(), r.destination.ip), dp.route_delete(r)]))
}

/// What is missing of an endpoint's routes and proxy entries, in words.
fn missing(dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord) -> DpResult<Vec<String>> {
    let have = dp.routes(&net.bridge, HostRoute::MAIN)?;
    let proxies = dp.proxies(net.uplink())?;
    let mut out = Vec::new();
    for r in endpoint_routes(net, ep, None)? {
        if !have.iter().any(|h| h.destination == r.destination) {
            out.push(format!("host route {r}"));
        }
        if !proxies.contains(&r.destination.ip) {
            out.push(format!("proxy ARP entry {} on {}", r.destination.ip, net.uplink()));
        }
    }
    Ok(out)
}

impl NetworkDriver for L2Bridge {
    fn types(&self) -> &'static [NetworkType] {
        &[NetworkType::L2Bridge, NetworkType::L2Tunnel]
    }

    fn validate(&self, net: &cnet_model::Network) -> Result<()> {
        if net.subnets().any(|s| s.ip_address_prefix.addr().is_ipv6()) {
            return Err(ServiceError::unsupported(format!(
                "{} networks are IPv4 only in this build: remove the IPv6 subnet (a Transparent network carries IPv6)",
                net.r#type
            )));
        }
        Ok(())
    }

    fn setup(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        let mut spec = bridge_spec(net)?;
        spec.addrs.clear();
        dp.ensure_bridge(&spec)?;
        let (br, up) = (&net.bridge, net.uplink());
        dp.sysctl_set("net/ipv4/ip_forward", "1")?;
        dp.sysctl_set(&format!("net/ipv6/conf/{br}/disable_ipv6"), "1")?;
        dp.sysctl_set(&format!("net/ipv4/conf/{br}/proxy_arp"), "1")?;
        // Only the endpoints' own addresses (the /32 routes) come in from the bridge.
        dp.sysctl_set(&format!("net/ipv4/conf/{br}/rp_filter"), "1")?;
        dp.sysctl_set(&format!("net/ipv4/neigh/{br}/proxy_delay"), "0")?;
        dp.sysctl_set(&format!("net/ipv4/neigh/{up}/proxy_delay"), "0")?;
        if net.kind == NetworkType::L2Tunnel {
            for r in tunnel_routes(net)? {
                dp.route_replace(&r)?;
            }
            dp.rule_ensure(&rule(net)?)?;
        }
        Ok(())
    }

    fn update(&self, dp: &dyn Dataplane, _old: &NetworkRecord, new: &NetworkRecord) -> DpResult<()> {
        self.setup(dp, new)
    }

    fn teardown(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        if net.kind == NetworkType::L2Tunnel {
            dp.rule_delete(&rule(net)?)?;
            for r in tunnel_routes(net)? {
                dp.route_delete(&r)?;
            }
        }
        dp.delete_link(&net.bridge)
    }

    /// Routes on the bridge and proxy entries on the uplink for addresses
    /// of the network's subnets that no endpoint has.
    fn sweep(&self, dp: &dyn Dataplane, net: &NetworkRecord, eps: &[&EndpointRecord]) -> DpResult<Vec<String>> {
        let owned: Vec<IpAddr> = eps.iter().flat_map(|e| e.ips()).collect();
        let ours = |ip: &IpAddr| net.subnets.iter().any(|s| s.ip_address_prefix.contains(ip)) && !owned.contains(ip);
        let mut out = Vec::new();
        for r in dp.routes(&net.bridge, HostRoute::MAIN)? {
            if r.destination.prefix_len == 32 && ours(&r.destination.ip) {
                dp.route_delete(&r)?;
                out.push(format!("host route {r}"));
            }
        }
        for ip in dp.proxies(net.uplink())?.into_iter().filter(|ip| ours(ip)) {
            dp.proxy_delete(net.uplink(), ip)?;
            out.push(format!("proxy ARP entry {ip} on {}", net.uplink()));
        }
        Ok(out)
    }

    /// The bridge is isolated from other networks like a NAT bridge, and
    /// open to the LAN: forwarding between it and the uplink passes.
    fn firewall(&self, net: &NetworkRecord) -> Vec<FwElem> {
        let (br, up) = (&net.bridge, net.uplink());
        vec![
            FwElem { set: "bridges", key: format!("\"{br}\""), value: None },
            FwElem { set: "intra", key: format!("\"{br}\" . \"{br}\""), value: None },
            FwElem { set: "intra", key: format!("\"{br}\" . \"{up}\""), value: None },
            FwElem { set: "intra", key: format!("\"{up}\" . \"{br}\""), value: None },
        ]
    }

    fn attach(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, netns_path: &str) -> DpResult<()> {
        Bridge.attach(dp, net, ep, netns_path)?;
        if let Err(e) = program(dp, net, ep) {
            let _ = self.detach(dp, net, ep, Some(netns_path));
            return Err(e);
        }
        Ok(())
    }

    fn vm_nics(&self) -> bool {
        true
    }

    fn attach_vm(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        vm: &VmNicOptions,
    ) -> DpResult<Option<String>> {
        Bridge.attach_vm(dp, net, ep, vm)?;
        if let Err(e) = program(dp, net, ep) {
            let _ = self.detach(dp, net, ep, None);
            return Err(e);
        }
        Ok(None)
    }

    fn reserved(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<Vec<IpAddr>> {
        super::uplink_addresses(dp, net)
    }

    /// The veth goes first (the endpoint is cut off at once), then its
    /// routes and proxy entries.
    fn detach(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        netns: Option<&str>,
    ) -> DpResult<()> {
        super::all_steps([Bridge.detach(dp, net, ep, netns), unprogram(dp, net, ep)])
    }

    fn network_links(&self, net: &NetworkRecord) -> Vec<String> {
        vec![net.bridge.clone()]
    }

    fn endpoint_links(&self, ep: &EndpointRecord) -> Vec<String> {
        vec![ep.host_interface_name.clone()]
    }

    fn check_network(&self, dp: &dyn Dataplane, net: &NetworkRecord, links: &Links) -> DpResult<Vec<Finding>> {
        let mut out: Vec<Finding> = check_uplink(net, links).into_iter().collect();
        out.extend(super::check_link(net, links, "bridge", &net.bridge));
        if dp.sysctl_get("net/ipv4/ip_forward").as_deref() != Some("1") {
            out.push(Finding::new(
                network_subject(net),
                FindingKind::Mismatch,
                format!("network {}: net.ipv4.ip_forward is off", net.name),
            ));
        }
        if net.kind == NetworkType::L2Tunnel && links.contains_key(net.uplink()) {
            if !dp.rules()?.contains(&rule(net)?) {
                out.push(Finding::new(
                    network_subject(net),
                    FindingKind::Missing,
                    format!("network {}: rule iif {} lookup {} is missing", net.name, net.bridge, table_of(net)),
                ));
            }
            let have = dp.routes(net.uplink(), table_of(net))?;
            for r in tunnel_routes(net)? {
                if !have.iter().any(|h| h.destination == r.destination && h.via == r.via) {
                    out.push(Finding::new(
                        network_subject(net),
                        FindingKind::Missing,
                        format!("network {}: route {r} is missing", net.name),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn check_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Vec<Finding>> {
        let mut out = Bridge.check_endpoint(dp, net, ep, ns, links)?;
        for what in missing(dp, net, ep)? {
            out.push(Finding::new(
                endpoint_subject(ep),
                FindingKind::Missing,
                format!("endpoint {}: {what} is missing", ep.display_name()),
            ));
        }
        Ok(out)
    }

    fn repair_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Repair> {
        let adapter = Bridge.repair_endpoint(dp, net, ep, ns, links)?;
        if matches!(adapter, Repair::Degraded(_)) {
            return Ok(adapter);
        }
        let gaps = missing(dp, net, ep)?;
        if gaps.is_empty() {
            return Ok(adapter);
        }
        program(dp, net, ep)?;
        Ok(Repair::Repaired(format!("{} of endpoint {}", gaps.join(", "), ep.display_name())))
    }
}
