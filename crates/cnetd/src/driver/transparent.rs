//! Transparent networks: every endpoint is on the LAN with its own MAC, as
//! a macvlan (bridge mode) of the uplink, created straight inside the
//! endpoint's namespace. Addresses are static (from the subnet) or leased
//! from the LAN's DHCP server ([`crate::dhcp`]).
//!
//! Why macvlan and not a bridge that enslaves the uplink: enslaving takes
//! the uplink's addresses out of use (they would have to move to the
//! bridge: the host's own networking changes under it), while a macvlan
//! leaves the uplink exactly as it was. It is also what the VM NIC's
//! macvtap builds on.
//!
//! A macvlan's parent cannot talk to its macvlans, so the host reaches its
//! endpoints through a macvlan of its own, the *shim* `cnh…`: no address,
//! a /32 (/128) route per endpoint address through it with the host's LAN
//! address as source, and `arp_filter` on, so the shim answers ARP only
//! for senders routed through it (the endpoints), never the LAN's queries
//! for the host's address (which stay the uplink's).
//!
//! VLANs: an endpoint of VLAN N (its `VLAN` policy, else its subnet's) is
//! an access port of VLAN N: eBPF programs on its macvlan tag every frame
//! it sends with N and let in only frames tagged N, untagged
//! (`cnet_dataplane::netlink::vlan`; no 802.1Q module or bridge VLAN
//! filtering needed, which many kernels lack). The uplink is the trunk.
//! Macvlans of different VLANs share the uplink but never see each other's
//! frames. The shim is untagged, so the host reaches only untagged
//! endpoints.
//!
//! Invariants:
//! - The uplink is never changed; the shim is cnet's, named from the
//!   network ID.
//! - An endpoint's kernel state is its macvlan (inside its namespace, with
//!   its VLAN's programs) plus one host route per address through the
//!   shim (untagged endpoints).

use cnet_model::VmNicOptions;
use std::net::IpAddr;

use cnet_dataplane::{Addr, HostRoute, IfName, Mac, MacvlanSpec, MacvtapSpec};
use cnet_model::findings::{Finding, FindingKind};
use cnet_model::NetworkType;

use super::bridge::{addr, name};
use super::{check_adapter, check_uplink, endpoint_subject, host_ipv4, host_mac, Links, NetworkDriver, Repair};
use crate::dataplane::{Dataplane, DpResult, FwElem};
use crate::state::{EndpointRecord, NamespaceRecord, NetworkRecord};

pub struct Transparent;

/// The host's macvlan on the uplink.
pub fn shim(net: &NetworkRecord) -> String {
    format!("cnh{}", &net.bridge[3..])
}

/// A VM endpoint's macvtap on the uplink: `cnm` + 11 hex digits of its ID.
pub fn vm_link(ep: &EndpointRecord) -> String {
    format!("cnm{:011x}", cnet_model::names::stable_hash(ep.id.as_bytes()) & 0xfff_ffff_ffff)
}

/// Whether some endpoint may be untagged (no subnet puts all on a VLAN).
fn has_untagged(net: &NetworkRecord) -> bool {
    net.subnets.is_empty() || net.subnets.iter().any(|s| s.vlan().is_none())
}

/// The host routes to an untagged endpoint through the shim (IPv4: over
/// IPv6 the endpoint could not resolve the host's address through the shim).
fn host_routes(net: &NetworkRecord, ep: &EndpointRecord, src: Option<IpAddr>) -> DpResult<Vec<HostRoute>> {
    if net.vlan_of(ep).is_some() {
        return Ok(vec![]);
    }
    let dev = name(&shim(net))?;
    Ok(ep
        .ips()
        .filter(|ip| ip.is_ipv4())
        .map(|ip| HostRoute {
            dev: dev.clone(),
            destination: Addr { ip, prefix_len: 32 },
            via: None,
            src: src.filter(|s| s.is_ipv4()),
            table: HostRoute::MAIN,
        })
        .collect())
}

fn add_host_routes(dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord) -> DpResult<()> {
    let src = host_ipv4(dp, net)?;
    for r in host_routes(net, ep, src)? {
        dp.route_replace(&r)?;
    }
    Ok(())
}

fn spec(net: &NetworkRecord, ep: &EndpointRecord, netns_path: &str) -> DpResult<MacvlanSpec> {
    Ok(MacvlanSpec {
        netns_path: netns_path.to_string(),
        ifname: name(ep.interface_name.as_str())?,
        parent: IfName::new(net.uplink())?,
        vlan: net.vlan_of(ep),
        mac: Mac(ep.mac.0),
        mtu: ep.effective_mtu(net),
        addrs: ep.ip_configurations.iter().map(|c| addr(c.ip_address, c.prefix_length)).collect(),
        routes: ep.all_routes(net).iter().map(super::bridge::route).collect(),
    })
}

/// Whether the adapter carries the programs of VLAN `vid`.
fn vlan_ok(dp: &dyn Dataplane, path: &str, ifname: &str, vid: u16) -> bool {
    dp.link_vlan(Some(path), ifname).ok().flatten() == Some(vid)
}

impl NetworkDriver for Transparent {
    fn types(&self) -> &'static [NetworkType] {
        &[NetworkType::Transparent]
    }

    fn has_host_link(&self) -> bool {
        false
    }

    fn vm_nics(&self) -> bool {
        true
    }

    /// A macvtap of the uplink with the guest's MAC (the LAN sees the
    /// guest's own MAC), reached by the host through the shim like a
    /// container endpoint.
    fn attach_vm(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        vm: &VmNicOptions,
    ) -> DpResult<Option<String>> {
        let device = dp.create_macvtap(&MacvtapSpec {
            name: name(&vm_link(ep))?,
            parent: name(net.uplink())?,
            mac: Mac(ep.mac.0),
            mtu: ep.effective_mtu(net),
            vlan: net.vlan_of(ep),
            owner: vm.owner,
            group: vm.group,
        })?;
        if let Err(e) = add_host_routes(dp, net, ep) {
            let _ = self.detach(dp, net, ep, None);
            return Err(e);
        }
        Ok(Some(device))
    }

    fn setup(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        let uplink = net.uplink();
        if has_untagged(net) {
            let shim = shim(net);
            dp.ensure_macvlan(&shim, uplink, host_mac(net), net.mtu())?;
            dp.sysctl_set(&format!("net/ipv4/conf/{shim}/arp_filter"), "1")?;
            if !net.subnets.iter().any(|s| s.ip_address_prefix.addr().is_ipv6()) {
                dp.sysctl_set(&format!("net/ipv6/conf/{shim}/disable_ipv6"), "1")?;
            }
        }
        Ok(())
    }

    fn update(&self, dp: &dyn Dataplane, _old: &NetworkRecord, new: &NetworkRecord) -> DpResult<()> {
        self.setup(dp, new)
    }

    fn teardown(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()> {
        dp.delete_link(&shim(net))
    }

    fn sweep(&self, dp: &dyn Dataplane, net: &NetworkRecord, eps: &[&EndpointRecord]) -> DpResult<Vec<String>> {
        if !has_untagged(net) {
            return Ok(vec![]);
        }
        let owned: Vec<IpAddr> = eps.iter().flat_map(|e| e.ips()).collect();
        let mut out = Vec::new();
        for r in dp.routes(&shim(net), HostRoute::MAIN)? {
            if r.destination.prefix_len == 32 && !owned.contains(&r.destination.ip) {
                dp.route_delete(&r)?;
                out.push(format!("host route {r}"));
            }
        }
        Ok(out)
    }

    /// Nothing is forwarded into the shim: other networks reach the LAN
    /// (and these endpoints) through the uplink, not through the host.
    fn firewall(&self, net: &NetworkRecord) -> Vec<FwElem> {
        if !has_untagged(net) {
            return vec![];
        }
        vec![FwElem { set: "bridges", key: format!("\"{}\"", shim(net)), value: None }]
    }

    fn attach(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, netns_path: &str) -> DpResult<()> {
        dp.create_macvlan(&spec(net, ep, netns_path)?)?;
        if let Err(e) = add_host_routes(dp, net, ep) {
            let _ = self.detach(dp, net, ep, Some(netns_path));
            return Err(e);
        }
        Ok(())
    }

    fn addresses_changed(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        old: &EndpointRecord,
        new: &EndpointRecord,
    ) -> DpResult<()> {
        add_host_routes(dp, net, new)?;
        let kept = host_routes(net, new, None)?;
        for r in
            host_routes(net, old, None)?.into_iter().filter(|r| !kept.iter().any(|k| k.destination == r.destination))
        {
            dp.route_delete(&r)?;
        }
        Ok(())
    }

    fn reserved(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<Vec<IpAddr>> {
        super::uplink_addresses(dp, net)
    }

    fn detach(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        netns: Option<&str>,
    ) -> DpResult<()> {
        let adapter = match netns {
            Some(path) => dp.release_inside(path, ep.interface_name.as_str(), Mac(ep.mac.0)),
            // A VM endpoint's macvtap (or nothing: an endpoint whose namespace is gone).
            None => dp.release_link(&vm_link(ep)),
        };
        let routes = host_routes(net, ep, None)?;
        super::all_steps(std::iter::once(adapter).chain(routes.iter().map(|r| dp.route_delete(r))))
    }

    fn network_links(&self, net: &NetworkRecord) -> Vec<String> {
        if has_untagged(net) {
            vec![shim(net)]
        } else {
            vec![]
        }
    }

    /// None on the host for a container endpoint (the macvlan is inside its
    /// namespace); a VM endpoint's macvtap.
    fn endpoint_links(&self, ep: &EndpointRecord) -> Vec<String> {
        vec![vm_link(ep)]
    }

    fn check_network(&self, _dp: &dyn Dataplane, net: &NetworkRecord, links: &Links) -> DpResult<Vec<Finding>> {
        let mut out: Vec<Finding> = check_uplink(net, links).into_iter().collect();
        out.extend(self.network_links(net).iter().filter_map(|l| super::check_link(net, links, "shim", l)));
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
        let mut out = if ns.kind.is_guest() {
            super::check_link(net, links, "VM NIC", &vm_link(ep))
                .map(|f| {
                    Finding::new(endpoint_subject(ep), f.kind, format!("endpoint {}: {}", ep.display_name(), f.message))
                })
                .into_iter()
                .collect()
        } else {
            check_adapter(dp, net, ep, ns)?
        };
        if let Some(lease) = &ep.lease {
            if crate::dhcp::now_unix() >= lease.expires_at() {
                out.push(Finding::new(
                    endpoint_subject(ep),
                    FindingKind::Mismatch,
                    format!(
                        "endpoint {}: its DHCP lease of {} has expired (the server did not renew it): detach and attach it again",
                        ep.display_name(),
                        lease.address
                    ),
                ));
            }
        }
        if let Some(vid) = net.vlan_of(ep) {
            let (at, link) = match ns.kind.is_guest() {
                true => (None, vm_link(ep)),
                false => (Some(ns.netns_path.as_str()), ep.interface_name.to_string()),
            };
            let there = match at {
                Some(path) => dp.netns_exists(path),
                None => links.contains_key(&link),
            };
            if there && dp.link_vlan(at, &link)? != Some(vid) {
                out.push(Finding::new(
                    endpoint_subject(ep),
                    FindingKind::Missing,
                    format!("endpoint {}: the VLAN {vid} programs are missing on {link}", ep.display_name()),
                ));
            }
        }
        let want = host_routes(net, ep, None)?;
        if let Some(first) = want.first() {
            let have = dp.routes(first.dev.as_str(), HostRoute::MAIN)?;
            for r in &want {
                if !have.iter().any(|h| h.destination == r.destination) {
                    out.push(Finding::new(
                        endpoint_subject(ep),
                        FindingKind::Missing,
                        format!("endpoint {}: host route {} is missing", ep.display_name(), r),
                    ));
                }
            }
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
        let path = &ns.netns_path;
        if ns.kind.is_guest() {
            let link = vm_link(ep);
            if links.contains_key(&link) {
                add_host_routes(dp, net, ep)?;
                if let Some(vid) = net.vlan_of(ep).filter(|vid| dp.link_vlan(None, &link).ok().flatten() != Some(*vid))
                {
                    dp.set_link_vlan(None, &link, vid)?;
                    return Ok(Repair::Repaired(format!("VLAN {vid} programs of VM endpoint {}", ep.display_name())));
                }
                return Ok(Repair::Intact);
            }
            // A new macvtap would be a new device (a new /dev/tapN): the VMM
            // has to be handed it again.
            return Ok(Repair::Degraded(format!(
                "the VM NIC {} of endpoint {} is gone: detach and attach the endpoint again",
                vm_link(ep),
                ep.display_name()
            )));
        }
        if !dp.netns_exists(path) {
            return Ok(Repair::Degraded(format!("namespace {path} is gone")));
        }
        let name = ep.display_name();
        match dp.inside(path, ep.interface_name.as_str())? {
            Some(i) if i.link.kind.as_deref() == Some("macvlan") => {
                let missing: Vec<Addr> = ep
                    .ip_configurations
                    .iter()
                    .map(|c| addr(c.ip_address, c.prefix_length))
                    .filter(|a| !i.addrs.contains(a))
                    .collect();
                let want = host_routes(net, ep, None)?;
                let have = match want.first() {
                    Some(r) => dp.routes(r.dev.as_str(), HostRoute::MAIN)?,
                    None => vec![],
                };
                let routes_ok = want.iter().all(|r| have.iter().any(|h| h.destination == r.destination));
                let ifname = ep.interface_name.as_str();
                let vlan = net.vlan_of(ep).filter(|vid| !vlan_ok(dp, path, ifname, *vid));
                if missing.is_empty() && routes_ok && vlan.is_none() {
                    return Ok(Repair::Intact);
                }
                if let Some(vid) = vlan {
                    dp.set_link_vlan(Some(path), ifname, vid)?;
                }
                dp.configure_inside(path, ifname, &missing, &[])?;
                add_host_routes(dp, net, ep)?;
                Ok(Repair::Repaired(format!("addresses, host routes and VLAN of endpoint {name}")))
            }
            Some(_) => Ok(Repair::Degraded(format!(
                "{} in {path} is not cnet's macvlan: remove it and attach again",
                ep.interface_name
            ))),
            None => match self.attach(dp, net, ep, path) {
                Ok(()) => Ok(Repair::Repaired(format!("macvlan of endpoint {name}"))),
                Err(e) => Ok(Repair::Degraded(e.to_string())),
            },
        }
    }
}
