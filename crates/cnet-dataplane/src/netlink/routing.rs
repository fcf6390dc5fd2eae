//! Host routing for the physical networks: routes in any table, proxy
//! neighbour entries (the host answers ARP/ND for an address on a link) and
//! policy rules by input interface.
//!
//! Invariants (as for every [`Rtnl`] request): adds replace an equal entry
//! and succeed when it is there; deletes succeed when it is gone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::{failed, family, is_not_found, Rtnl};
use crate::{Addr, HostRoute, IfName, Result, Rule};

fn route_message(index: u32, r: &HostRoute) -> RouteMessage {
    let Addr { ip: dst, prefix_len: len } = r.destination;
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst);
    m.header.destination_prefix_length = len;
    if r.table < 256 {
        m.header.table = r.table as u8;
    } else {
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        m.attributes.push(RouteAttribute::Table(r.table));
    }
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = if r.via.is_some() { RouteScope::Universe } else { RouteScope::Link };
    m.header.kind = RouteType::Unicast;
    if len > 0 {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
    }
    if let Some(via) = r.via {
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(via)));
    }
    if let Some(src) = r.src {
        m.attributes.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    m
}

fn neighbour_message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(&ip);
    m.header.ifindex = index;
    m.header.flags = NeighbourFlags::Proxy;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    m
}

fn rule_message(iif: &str, table: u32, priority: u32, v6: bool) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family =
        if v6 { netlink_packet_route::AddressFamily::Inet6 } else { netlink_packet_route::AddressFamily::Inet };
    m.header.action = RuleAction::ToTable;
    if table < 256 {
        m.header.table = table as u8;
    }
    m.attributes.push(RuleAttribute::Table(table));
    m.attributes.push(RuleAttribute::Iifname(iif.to_string()));
    m.attributes.push(RuleAttribute::Priority(priority));
    m
}

impl Rtnl {
    /// Adds or replaces a route.
    pub fn replace_route(&mut self, r: &HostRoute) -> Result<()> {
        let index = self.require_index(r.dev.as_str())?;
        self.request(
            || format!("adding route {r}"),
            RouteNetlinkMessage::NewRoute(route_message(index, r)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Deletes a route; succeeds when it (or its link) is gone.
    pub fn delete_route(&mut self, r: &HostRoute) -> Result<()> {
        let Some(index) = self.index(r.dev.as_str())? else { return Ok(()) };
        match self.exchange(RouteNetlinkMessage::DelRoute(route_message(index, r)), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(failed(format!("deleting route {r}"), e)),
        }
    }

    /// The routes through link `dev` in table `table`.
    pub fn routes_in(&mut self, dev: &IfName, table: u32) -> Result<Vec<HostRoute>> {
        let Some(index) = self.index(dev.as_str())? else { return Ok(vec![]) };
        let answers = self
            .exchange(RouteNetlinkMessage::GetRoute(RouteMessage::default()), NLM_F_DUMP)
            .map_err(|e| failed("listing routes", e))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            let (mut dst, mut via, mut src, mut oif) = (None, None, None, None);
            let mut t = u32::from(r.header.table);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(a) => dst = ip_of(a),
                    RouteAttribute::Gateway(a) => via = ip_of(a),
                    RouteAttribute::PrefSource(a) => src = ip_of(a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(x) => t = *x,
                    _ => {}
                }
            }
            if oif != Some(index) || t != table || r.header.kind != RouteType::Unicast {
                continue;
            }
            let unspecified = match r.header.address_family {
                netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            out.push(HostRoute {
                dev: dev.clone(),
                destination: Addr { ip: dst.unwrap_or(unspecified), prefix_len: r.header.destination_prefix_length },
                via,
                src,
                table,
            });
        }
        Ok(out)
    }

    /// Makes the host answer ARP (or ND) for `ip` on link `dev`.
    pub fn add_proxy_neighbour(&mut self, dev: &str, ip: IpAddr) -> Result<()> {
        let index = self.require_index(dev)?;
        self.request(
            || format!("adding proxy neighbour {ip} on {dev}"),
            RouteNetlinkMessage::NewNeighbour(neighbour_message(index, ip)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes a proxy neighbour entry; succeeds when it is gone.
    pub fn delete_proxy_neighbour(&mut self, dev: &str, ip: IpAddr) -> Result<()> {
        let Some(index) = self.index(dev)? else { return Ok(()) };
        match self.exchange(RouteNetlinkMessage::DelNeighbour(neighbour_message(index, ip)), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(failed(format!("deleting proxy neighbour {ip} on {dev}"), e)),
        }
    }

    /// The proxy neighbour entries on link `dev`.
    pub fn proxy_neighbours(&mut self, dev: &str) -> Result<Vec<IpAddr>> {
        let Some(index) = self.index(dev)? else { return Ok(vec![]) };
        let mut q = NeighbourMessage::default();
        q.header.flags = NeighbourFlags::Proxy;
        let answers = self
            .exchange(RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)
            .map_err(|e| failed("listing proxy neighbours", e))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds the IPv4 rule (`v6`: IPv6) unless an equal one is there.
    pub fn ensure_rule(&mut self, rule: &Rule, v6: bool) -> Result<()> {
        if self.rules(v6)?.contains(rule) {
            return Ok(());
        }
        self.request(
            || format!("adding rule iif {} lookup {}", rule.iif, rule.table),
            RouteNetlinkMessage::NewRule(rule_message(rule.iif.as_str(), rule.table, rule.priority, v6)),
            NLM_F_CREATE,
        )
    }

    /// Deletes the rule; succeeds when it is gone.
    pub fn delete_rule(&mut self, rule: &Rule, v6: bool) -> Result<()> {
        match self
            .exchange(RouteNetlinkMessage::DelRule(rule_message(rule.iif.as_str(), rule.table, rule.priority, v6)), 0)
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(failed(format!("deleting rule iif {} lookup {}", rule.iif, rule.table), e)),
        }
    }

    /// The rules of one family that match on an input interface.
    pub fn rules(&mut self, v6: bool) -> Result<Vec<Rule>> {
        let mut q = RuleMessage::default();
        q.header.family =
            if v6 { netlink_packet_route::AddressFamily::Inet6 } else { netlink_packet_route::AddressFamily::Inet };
        let answers =
            self.exchange(RouteNetlinkMessage::GetRule(q), NLM_F_DUMP).map_err(|e| failed("listing rules", e))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRule(r) = m else { continue };
            let (mut iif, mut table, mut priority) = (None, u32::from(r.header.table), 0);
            for a in &r.attributes {
                match a {
                    RuleAttribute::Iifname(n) => iif = IfName::new(n.clone()).ok(),
                    RuleAttribute::Table(t) => table = *t,
                    RuleAttribute::Priority(p) => priority = *p,
                    _ => {}
                }
            }
            if let Some(iif) = iif {
                out.push(Rule { iif, table, priority });
            }
        }
        Ok(out)
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
