//! Anti-spoofing, on by default: an endpoint sends only from its own MAC
//! and its own addresses. This module is the one owner of the nftables
//! table `bridge cnetpol`.
//!
//! The bridge family sees the endpoint's own switch port (its veth's host
//! end or its TAP), where the `inet` hooks see only the bridge; and its
//! prerouting hook at −300 runs before br_netfilter and conntrack, so a
//! spoofed frame is dropped before it creates any state. The table is
//! elements only: a guarded port, its MAC, its addresses and its counter;
//! no per-endpoint chain, so an attach costs the same at any scale.
//!
//! Invariants:
//! - Every port in `guarded` has its counter in `spoof_ctr`, added in the
//!   same transaction (a port without one would pass: a failed counter
//!   lookup ends the rule before its drop).
//! - A port in `ipguard` is checked on its source addresses too (ARP's
//!   sender, IPv4, IPv6): those of the endpoints of its namespace; one only
//!   in `guarded` (an endpoint whose address a DHCP server hands out) on its
//!   MAC alone. 0.0.0.0 (DHCP), `::` (DAD)
//!   and link-local IPv6 always pass; VLAN-tagged frames never do.
//! - The model holds every guarded endpoint; the table exists while it is
//!   not empty and is rebuilt whole from it when someone deletes it.
//! - Transparent endpoints have no port on a host switch: each is guarded
//!   by a chain of its own on its adapter's egress hook, in the table
//!   `netdev cnetguard` of the namespace the adapter is in (a container's
//!   macvlan: its namespace; a VM's macvtap: cnetd's), with the same
//!   checks as the ports here. The egress hook runs before tc, so the VLAN
//!   programs tag only what the guard let through. A container that holds
//!   `CAP_NET_ADMIN` in its namespace can remove its guard; on a host
//!   switch it cannot.
//! - An endpoint with the flag `AllowSpoofing` is not guarded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use cnet_dataplane::nftobj::Family;
use cnet_model::{MacAddr, NetworkType};
use uuid::Uuid;

use crate::dataplane::{Dataplane, DpResult};
use crate::state::records::IpamType;
use crate::state::{EndpointRecord, NetworkRecord};

/// The table's name (in the bridge family).
pub const TABLE: &str = "cnetpol";

/// The table of egress guards (in the netdev family), one per namespace.
pub const EGRESS_TABLE: &str = "cnetguard";

/// The fixed part of the table.
pub const SKELETON: &str = r#"table bridge cnetpol {
  set guarded { type ifname; }
  set ipguard { type ifname; }
  set own_mac { type ifname . ether_addr; }
  set own_ip4 { type ifname . ipv4_addr; }
  set own_ip6 { type ifname . ipv6_addr; }
  map spoof_ctr { type ifname : counter; }
  chain prerouting { type filter hook prerouting priority -300; policy accept;
    iifname != @guarded accept
    iifname . ether saddr != @own_mac counter name iifname map @spoof_ctr drop
    ether type arp iifname . arp saddr ether != @own_mac counter name iifname map @spoof_ctr drop
    ether type { 8021q, 8021ad } counter name iifname map @spoof_ctr drop
    iifname != @ipguard accept
    ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @own_ip4 counter name iifname map @spoof_ctr drop
    ether type ip ip saddr != 0.0.0.0 iifname . ip saddr != @own_ip4 counter name iifname map @spoof_ctr drop
    ether type ip6 ip6 saddr != { ::, fe80::/10 } iifname . ip6 saddr != @own_ip6 counter name iifname map @spoof_ctr drop
  }
}
"#;

/// Where a guard is enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A port of a host switch (a veth's host end, a TAP): elements of
    /// `bridge cnetpol`.
    Port(String),
    /// An adapter on no host switch: a chain on its egress in the table
    /// `netdev cnetguard` of the namespace at `netns` (`None`: cnetd's own).
    Egress { netns: Option<String>, ifname: String },
}

/// One endpoint's guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// 16 hex digits of the endpoint ID: names its counter.
    pub tag: String,
    pub place: Place,
    pub mac: MacAddr,
    /// Its addresses, or `None` when only the MAC is checked.
    pub ips: Option<Vec<IpAddr>>,
    /// Its namespace (a path): the endpoints of one namespace may send from
    /// each other's addresses (the namespace's routes pick the interface a
    /// reply leaves by, which need not be the one its address is on).
    pub group: Option<String>,
}

/// The guard of `ep` on `net`, attached to the namespace at `group`, or
/// `None` when it has none.
/// A VM's namespace has no path (`group` is `""`): its endpoints are each
/// a group of one.
pub fn guard_of(ep: &EndpointRecord, net: &NetworkRecord, group: Option<&str>) -> Option<Guard> {
    let remote = ep.flags & cnet_model::endpoint::REMOTE_ENDPOINT != 0;
    if remote || ep.flags & cnet_model::endpoint::ALLOW_SPOOFING != 0 {
        return None;
    }
    let place = match (net.kind, group) {
        // A VM's macvtap, in cnetd's namespace.
        (NetworkType::Transparent, Some("")) => {
            Place::Egress { netns: None, ifname: crate::driver::transparent::vm_link(ep) }
        }
        // A container's macvlan, in its namespace.
        (NetworkType::Transparent, Some(path)) => {
            Place::Egress { netns: Some(path.to_string()), ifname: ep.interface_name.to_string() }
        }
        // Handed off: its namespace is not known here.
        (NetworkType::Transparent, None) => return None,
        _ if ep.host_interface_name.is_empty() => return None,
        _ => Place::Port(ep.host_interface_name.clone()),
    };
    let group = group.filter(|g| !g.is_empty());
    Some(Guard {
        tag: super::acl::tag_of(ep.id),
        place,
        mac: ep.mac,
        // A leased address can change at a renewal; the MAC cannot.
        ips: (net.ipam != IpamType::Dhcp).then(|| ep.ips().collect()),
        group: group.map(str::to_string),
    })
}

type Model = BTreeMap<Uuid, Guard>;

impl Guard {
    /// Its counter of dropped frames.
    pub fn counter(&self) -> String {
        format!("spoof_{}", self.tag)
    }

    /// The addresses it may send from, with `model` the guards there are:
    /// its own and those of its namespace's other endpoints; `None` when
    /// only its MAC is checked.
    fn allowed(&self, model: &Model) -> Option<Vec<IpAddr>> {
        let mut out = self.ips.clone()?;
        for other in model.values().filter(|o| o.group.is_some() && o.group == self.group) {
            out.extend(other.ips.iter().flatten().filter(|ip| !out.contains(ip)).copied().collect::<Vec<_>>());
        }
        Some(out)
    }

    /// The namespace of its egress chain (`Some(None)`: cnetd's), or
    /// `None` when it guards a port.
    fn egress_netns(&self) -> Option<Option<&str>> {
        match &self.place {
            Place::Port(_) => None,
            Place::Egress { netns, .. } => Some(netns.as_deref()),
        }
    }

    /// Its egress chain's name.
    fn chain(&self) -> String {
        format!("g_{}", self.tag)
    }

    /// The rules of its egress chain in `model`: the same checks as the
    /// port guard's, with its addresses written out.
    fn egress_rules(&self, model: &Model) -> Vec<String> {
        let drop = format!("counter name \"{}\" drop", self.counter());
        let mac = self.mac;
        let mut out = vec![
            format!("ether saddr != {mac} {drop}"),
            format!("ether type arp arp saddr ether != {mac} {drop}"),
            format!("ether type {{ 8021q, 8021ad }} {drop}"),
        ];
        if let Some(ips) = self.allowed(model) {
            let list = |first: &[&str], v4: bool| {
                let own = ips.iter().filter(|ip| ip.is_ipv4() == v4).map(IpAddr::to_string);
                first.iter().map(|s| s.to_string()).chain(own).collect::<Vec<_>>().join(", ")
            };
            let (v4, v6) = (list(&["0.0.0.0"], true), list(&["::", "fe80::/10"], false));
            out.push(format!("ether type arp arp saddr ip != {{ {v4} }} {drop}"));
            out.push(format!("ether type ip ip saddr != {{ {v4} }} {drop}"));
            out.push(format!("ether type ip6 ip6 saddr != {{ {v6} }} {drop}"));
        }
        out
    }

    /// Its elements in `model`: (set or map, element); none for an egress guard.
    fn elements(&self, model: &Model) -> Vec<(&'static str, String)> {
        let Place::Port(port) = &self.place else { return vec![] };
        let port = format!("\"{port}\"");
        let mut out = vec![
            ("guarded", port.clone()),
            ("spoof_ctr", format!("{port} : \"{}\"", self.counter())),
            ("own_mac", format!("{port} . {}", self.mac)),
        ];
        if let Some(ips) = self.allowed(model) {
            out.push(("ipguard", port.clone()));
            for ip in ips {
                out.push((if ip.is_ipv4() { "own_ip4" } else { "own_ip6" }, format!("{port} . {ip}")));
            }
        }
        out
    }

    /// The element's key (what a delete names).
    fn key(elem: &str) -> &str {
        elem.split(" : ").next().unwrap_or(elem)
    }
}

/// Brings the table from `before` to `after` for the guards `ids`.
fn change_script(before: &Model, after: &Model, ids: &BTreeSet<Uuid>) -> String {
    let mut s = String::new();
    for id in ids {
        let (old, new) = (before.get(id), after.get(id));
        let was = old.map(|g| g.elements(before)).unwrap_or_default();
        let now = new.map(|g| g.elements(after)).unwrap_or_default();
        if let Some(n) = new {
            let _ = writeln!(s, "add counter bridge {TABLE} {}", n.counter());
        }
        // Deletes before adds: a map holds one value per key.
        for (set, e) in was.iter().filter(|x| !now.contains(x)) {
            // Added first, so that deleting one that is gone succeeds.
            let _ = writeln!(s, "add element bridge {TABLE} {set} {{ {e} }}");
            let _ = writeln!(s, "delete element bridge {TABLE} {set} {{ {} }}", Guard::key(e));
        }
        for (set, e) in now.iter().filter(|x| !was.contains(x)) {
            let _ = writeln!(s, "add element bridge {TABLE} {set} {{ {e} }}");
        }
        if let Some(o) = old.filter(|o| new.is_none_or(|n| n.counter() != o.counter())) {
            let _ = writeln!(s, "add counter bridge {TABLE} {}", o.counter());
            let _ = writeln!(s, "delete counter bridge {TABLE} {}", o.counter());
        }
    }
    s
}

/// The whole table for `model`, replacing what is there, in one transaction.
fn load_script(model: &Model) -> String {
    let ids = model.keys().copied().collect();
    format!("table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n{SKELETON}")
        + &change_script(&Model::new(), model, &ids)
}

/// The script that deletes the table (and succeeds when it is gone).
pub fn delete_script() -> String {
    format!("table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n")
}

/// The egress table of one namespace, from what it holds (`before`) to
/// `after`, in one transaction: every chain of `after` is rewritten (a
/// namespace has few endpoints, and each one's addresses are in the
/// others' rules), every one only in `before` deleted. `after` has guards:
/// the last one goes with the table ([`Dataplane::guard_delete`]).
fn egress_script(before: &Model, after: &Model) -> String {
    let t = EGRESS_TABLE;
    let mut s = format!("table netdev {t} {{}}\n");
    for (id, old) in before {
        if after.get(id).is_none_or(|new| new.place != old.place) {
            // Added first, so that deleting one that is gone succeeds.
            let (chain, counter) = (old.chain(), old.counter());
            let _ = writeln!(s, "add chain netdev {t} {chain}\ndelete chain netdev {t} {chain}");
            let _ = writeln!(s, "add counter netdev {t} {counter}\ndelete counter netdev {t} {counter}");
        }
    }
    for g in after.values() {
        let Place::Egress { ifname, .. } = &g.place else { continue };
        let chain = g.chain();
        let _ = writeln!(s, "add counter netdev {t} {}", g.counter());
        let _ = writeln!(
            s,
            "add chain netdev {t} {chain} {{ type filter hook egress device \"{ifname}\" priority -300; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain netdev {t} {chain}");
        for rule in g.egress_rules(after) {
            let _ = writeln!(s, "add rule netdev {t} {chain} {rule}");
        }
    }
    s
}

/// The guards of one namespace's egress table (`None`: cnetd's).
fn in_space(model: &Model, space: Option<&str>) -> Model {
    model.iter().filter(|(_, g)| g.egress_netns() == Some(space)).map(|(i, g)| (*i, g.clone())).collect()
}

/// The guards there are: those of switch ports, and those on egress hooks.
#[derive(Default)]
struct Models {
    ports: Model,
    egress: Model,
}

/// The guards of attached endpoints, in the model and in the kernel.
pub struct Guards {
    dp: Arc<dyn Dataplane>,
    model: Mutex<Models>,
}

impl Guards {
    pub fn new(dp: Arc<dyn Dataplane>) -> Self {
        Guards { dp, model: Mutex::new(Models::default()) }
    }

    fn model(&self) -> MutexGuard<'_, Models> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Guards `ep` (attached, on `net`, in the namespace at `group`) as it is now.
    pub fn set(&self, ep: &EndpointRecord, net: &NetworkRecord, group: Option<&str>) -> DpResult<()> {
        self.change(ep.id, guard_of(ep, net, group))
    }

    /// Removes endpoint `ep`'s guard (on `net`, in the namespace at
    /// `group`); nothing when it has none. An egress guard is removed from
    /// the kernel even when the model lacks it: one whose attach was cut
    /// by a crash is in its namespace's table, and no load replaces that
    /// table (a load touches only the namespaces with guards).
    pub fn remove(&self, ep: &EndpointRecord, net: Option<&NetworkRecord>, group: Option<&str>) -> DpResult<()> {
        if let Some(g) = net.and_then(|n| guard_of(ep, n, group)).filter(|g| g.egress_netns().is_some()) {
            self.model().egress.entry(ep.id).or_insert(g);
        }
        self.change(ep.id, None)
    }

    /// One endpoint's guard from what it is to `new`.
    fn change(&self, id: Uuid, new: Option<Guard>) -> DpResult<()> {
        let mut m = self.model();
        let old = m.ports.get(&id).or_else(|| m.egress.get(&id)).cloned();
        if old == new {
            return Ok(());
        }
        let on_port = |g: &Option<Guard>| g.clone().filter(|g| g.egress_netns().is_none());
        let on_egress = |g: &Option<Guard>| g.clone().filter(|g| g.egress_netns().is_some());
        self.change_port(&mut m.ports, id, on_port(&old), on_port(&new))?;
        self.change_egress(&mut m.egress, id, on_egress(&old), on_egress(&new))
    }

    /// A port guard from `old` to `new`, with its namespace's other guards
    /// (their allowed addresses follow), in one transaction.
    fn change_port(&self, model: &mut Model, id: Uuid, old: Option<Guard>, new: Option<Guard>) -> DpResult<()> {
        if old == new {
            return Ok(());
        }
        // Only the guards of the changed one's namespace depend on it: the
        // script is made from those alone, whatever the number of endpoints.
        let groups: Vec<&String> = [&old, &new].into_iter().flatten().filter_map(|g| g.group.as_ref()).collect();
        let before: Model = model
            .iter()
            .filter(|(i, g)| **i == id || g.group.as_ref().is_some_and(|x| groups.contains(&x)))
            .map(|(i, g)| (*i, g.clone()))
            .collect();
        let mut after = before.clone();
        match &new {
            Some(g) => after.insert(id, g.clone()),
            None => after.remove(&id),
        };
        let ids: BTreeSet<Uuid> = before.keys().chain(after.keys()).copied().collect();
        let script = if new.is_none() && model.len() == 1 {
            delete_script()
        } else if model.is_empty() {
            load_script(&after)
        } else {
            change_script(&before, &after, &ids)
        };
        self.dp.pol_apply(&script)?;
        match new {
            Some(g) => model.insert(id, g),
            None => model.remove(&id),
        };
        Ok(())
    }

    /// An egress guard from `old` to `new`: the egress table of each
    /// namespace it leaves or joins, each in one transaction. A namespace
    /// that is gone took its table with it.
    fn change_egress(&self, model: &mut Model, id: Uuid, old: Option<Guard>, new: Option<Guard>) -> DpResult<()> {
        if old == new {
            return Ok(());
        }
        let spaces: BTreeSet<Option<String>> = [&old, &new]
            .into_iter()
            .flatten()
            .filter_map(|g| g.egress_netns().map(|n| n.map(str::to_string)))
            .collect();
        for space in &spaces {
            let before = in_space(model, space.as_deref());
            let mut after = before.clone();
            after.remove(&id);
            if let Some(g) = new.as_ref().filter(|g| g.egress_netns() == Some(space.as_deref())) {
                after.insert(id, g.clone());
            }
            let gone = space.as_deref().is_some_and(|p| !self.dp.netns_exists(p));
            if after.is_empty() {
                if !gone {
                    self.dp.guard_delete(space.as_deref())?;
                }
            } else {
                self.dp.guard_apply(space.as_deref(), &egress_script(&before, &after))?;
            }
        }
        match new {
            Some(g) => model.insert(id, g),
            None => model.remove(&id),
        };
        Ok(())
    }

    /// Fills the model without touching the kernel (start-up, before [`Guards::reload`]).
    pub fn preload(&self, ep: &EndpointRecord, net: &NetworkRecord, group: Option<&str>) {
        if let Some(g) = guard_of(ep, net, group) {
            let mut m = self.model();
            match g.place {
                Place::Port(_) => m.ports.insert(ep.id, g),
                Place::Egress { .. } => m.egress.insert(ep.id, g),
            };
        }
    }

    /// Replaces the tables with the model (none when nothing is guarded):
    /// the switch ports' table, and the egress table of every namespace
    /// with a guard (one whose namespace is gone is skipped, with a warning:
    /// `cnet diag` finds its endpoint).
    pub fn reload(&self) -> DpResult<()> {
        let m = self.model();
        self.load(&m.ports)?;
        let spaces: BTreeSet<Option<&str>> = m.egress.values().filter_map(Guard::egress_netns).collect();
        for space in spaces {
            if space.is_some_and(|p| !self.dp.netns_exists(p)) {
                tracing::warn!(
                    "the namespace {} of a Transparent endpoint is gone: not guarding it",
                    space.unwrap_or_default()
                );
                continue;
            }
            self.load_egress(&m.egress, space)?;
        }
        Ok(())
    }

    fn load(&self, model: &Model) -> DpResult<()> {
        let script = if model.is_empty() { delete_script() } else { load_script(model) };
        self.dp.pol_apply(&script)
    }

    /// Replaces one namespace's egress table with the model.
    fn load_egress(&self, model: &Model, space: Option<&str>) -> DpResult<()> {
        let t = EGRESS_TABLE;
        let fresh = format!("table netdev {t} {{}}\ndelete table netdev {t}\n");
        self.dp.guard_apply(space, &(fresh + &egress_script(&Model::new(), &in_space(model, space))))
    }

    /// Whether a table of cnetd's namespace was gone; restores it when
    /// someone deleted it (the switch ports' one, and the egress one of the
    /// VMs' macvtaps). The containers' namespaces are not the host's
    /// firewall's to change.
    pub fn check_and_repair(&self) -> DpResult<bool> {
        let m = self.model();
        let mut repaired = false;
        if !m.ports.is_empty() && !self.dp.pol_exists(Family::Bridge)? {
            tracing::warn!("the nftables table bridge {TABLE} was deleted by someone else: restoring it");
            self.load(&m.ports)?;
            repaired = true;
        }
        let own = m.egress.values().any(|g| g.egress_netns() == Some(None));
        if own && !self.dp.pol_exists(Family::Netdev)? {
            tracing::warn!("the nftables table netdev {EGRESS_TABLE} was deleted by someone else: restoring it");
            self.load_egress(&m.egress, None)?;
            repaired = true;
        }
        Ok(repaired)
    }

    /// The endpoints whose guard is not in the kernel: its counter, made in
    /// the same transaction as the rest of it, is gone (with its table,
    /// when someone deleted that: the host's firewall, or a container with
    /// `CAP_NET_ADMIN` in its own namespace). A guard whose namespace is
    /// gone is left to that namespace's own finding.
    pub fn missing(&self) -> DpResult<Vec<Uuid>> {
        let guards: Vec<(Uuid, Guard)> = {
            let m = self.model();
            m.ports.iter().chain(m.egress.iter()).map(|(id, g)| (*id, g.clone())).collect()
        };
        let mut out = Vec::new();
        for (id, g) in guards {
            let gone = |p: &String| !self.dp.netns_exists(p);
            if matches!(&g.place, Place::Egress { netns: Some(p), .. } if gone(p)) {
                continue;
            }
            if self.counter_of(&g)?.is_none() {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Guard `g`'s drop counter as the kernel has it (`None`: not there).
    fn counter_of(&self, g: &Guard) -> DpResult<Option<cnet_dataplane::nftobj::Counter>> {
        match &g.place {
            Place::Port(_) => self.dp.pol_counter(Family::Bridge, &g.counter()),
            Place::Egress { netns, .. } => self.dp.guard_counter(netns.as_deref(), &g.counter()),
        }
    }

    /// The frames endpoint `id`'s guard dropped (0 when it has none).
    pub fn drops(&self, id: Uuid) -> DpResult<u64> {
        let guard = {
            let m = self.model();
            m.ports.get(&id).or_else(|| m.egress.get(&id)).cloned()
        };
        let Some(g) = guard else { return Ok(0) };
        Ok(self.counter_of(&g)?.map_or(0, |c| c.packets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(n: u128, ips: Option<&[&str]>, group: Option<&str>) -> (Uuid, Guard) {
        let id = Uuid::from_u128(n);
        let g = Guard {
            tag: super::super::acl::tag_of(id),
            place: Place::Port(format!("cnv{n}")),
            mac: format!("02:00:00:00:00:0{n}").parse().unwrap(),
            ips: ips.map(|l| l.iter().map(|s| s.parse().unwrap()).collect()),
            group: group.map(str::to_string),
        };
        (id, g)
    }

    fn script(before: &[(Uuid, Guard)], after: &[(Uuid, Guard)], ids: &[Uuid]) -> String {
        let m = |l: &[(Uuid, Guard)]| l.iter().cloned().collect::<Model>();
        change_script(&m(before), &m(after), &ids.iter().copied().collect())
    }

    #[test]
    fn a_guard_is_its_port_mac_addresses_and_counter_in_one_script() {
        let (id, g) = guard(1, Some(&["10.0.0.2", "fd00::2"]), None);
        let tag = &g.tag;
        assert_eq!(
            script(&[], &[(id, g.clone())], &[id]),
            format!(
                "add counter bridge cnetpol spoof_{tag}\n\
                 add element bridge cnetpol guarded {{ \"cnv1\" }}\n\
                 add element bridge cnetpol spoof_ctr {{ \"cnv1\" : \"spoof_{tag}\" }}\n\
                 add element bridge cnetpol own_mac {{ \"cnv1\" . 02:00:00:00:00:01 }}\n\
                 add element bridge cnetpol ipguard {{ \"cnv1\" }}\n\
                 add element bridge cnetpol own_ip4 {{ \"cnv1\" . 10.0.0.2 }}\n\
                 add element bridge cnetpol own_ip6 {{ \"cnv1\" . fd00::2 }}\n"
            )
        );
        let removal = script(&[(id, g.clone())], &[], &[id]);
        assert!(removal.contains("delete element bridge cnetpol spoof_ctr { \"cnv1\" }\n"), "{removal}");
        assert!(removal.ends_with(&format!("delete counter bridge cnetpol spoof_{tag}\n")), "{removal}");
        assert_eq!(removal.matches("delete element").count(), 6);
    }

    #[test]
    fn a_dhcp_endpoint_is_checked_on_its_mac_only_and_a_change_touches_only_what_changed() {
        let (id, mac_only) = guard(1, None, None);
        let s = script(&[], &[(id, mac_only)], &[id]);
        assert!(!s.contains("ipguard") && !s.contains("own_ip"), "{s}");
        let (_, a) = guard(1, Some(&["10.0.0.2"]), None);
        let (_, b) = guard(1, Some(&["10.0.0.3"]), None);
        let change = script(&[(id, a)], &[(id, b.clone())], &[id]);
        assert_eq!(
            change,
            format!(
                "add counter bridge cnetpol {}\n\
                 add element bridge cnetpol own_ip4 {{ \"cnv1\" . 10.0.0.2 }}\n\
                 delete element bridge cnetpol own_ip4 {{ \"cnv1\" . 10.0.0.2 }}\n\
                 add element bridge cnetpol own_ip4 {{ \"cnv1\" . 10.0.0.3 }}\n",
                b.counter()
            )
        );
    }

    #[test]
    fn the_endpoints_of_one_namespace_may_send_from_each_others_addresses_and_no_one_elses() {
        let (a, ga) = guard(1, Some(&["10.1.0.2"]), Some("/run/netns/x"));
        let (b, gb) = guard(2, Some(&["10.2.0.2"]), Some("/run/netns/x"));
        let (c, gc) = guard(3, Some(&["10.1.0.3"]), Some("/run/netns/y"));
        let after: Model = [(a, ga.clone()), (b, gb.clone()), (c, gc.clone())].into();
        assert_eq!(ga.allowed(&after), Some(vec!["10.1.0.2".parse().unwrap(), "10.2.0.2".parse().unwrap()]));
        assert_eq!(gc.allowed(&after), Some(vec!["10.1.0.3".parse().unwrap()]), "another namespace's are not");
        // b joins a's namespace: a's port may now send from b's address too.
        let s = script(&[(a, ga.clone()), (c, gc.clone())], &[(a, ga), (b, gb), (c, gc)], &[a, b]);
        assert!(s.contains("add element bridge cnetpol own_ip4 { \"cnv1\" . 10.2.0.2 }"), "{s}");
        assert!(s.contains("add element bridge cnetpol own_ip4 { \"cnv2\" . 10.1.0.2 }"), "{s}");
        assert!(!s.contains("cnv3"), "{s}");
    }
    fn egress(n: u128, ns: Option<&str>, ips: &[&str]) -> (Uuid, Guard) {
        let (id, mut g) = guard(n, Some(ips), ns);
        g.place = Place::Egress { netns: ns.map(str::to_string), ifname: format!("eth{n}") };
        (id, g)
    }

    #[test]
    fn an_egress_guard_is_a_chain_on_its_adapter_that_allows_its_namespaces_addresses() {
        let (a, ga) = egress(1, Some("/run/netns/x"), &["198.18.0.2"]);
        let (b, gb) = egress(2, Some("/run/netns/x"), &["198.19.0.2", "fd00::2"]);
        let both: Model = [(a, ga.clone()), (b, gb.clone())].into();
        let s = egress_script(&Model::new(), &both);
        let (ta, tb) = (&ga.tag, &gb.tag);
        assert!(s.starts_with("table netdev cnetguard {}\n"), "{s}");
        assert!(!s.contains("delete table"), "{s}");
        let chain = format!(
            "add chain netdev cnetguard g_{ta} {{ type filter hook egress device \"eth1\" priority -300; policy accept; }}\n\
             flush chain netdev cnetguard g_{ta}\n\
             add rule netdev cnetguard g_{ta} ether saddr != 02:00:00:00:00:01 counter name \"spoof_{ta}\" drop\n"
        );
        assert!(s.contains(&chain), "{s}");
        let v4 = format!(
            "g_{ta} ether type ip ip saddr != {{ 0.0.0.0, 198.18.0.2, 198.19.0.2 }} counter name \"spoof_{ta}\" drop"
        );
        assert!(s.contains(&v4), "a may send from b's address too: {s}");
        let v6 =
            format!("g_{tb} ether type ip6 ip6 saddr != {{ ::, fe80::/10, fd00::2 }} counter name \"spoof_{tb}\" drop");
        assert!(s.contains(&v6), "{s}");
        assert!(s.contains(&format!("add counter netdev cnetguard spoof_{tb}\n")), "{s}");

        // b leaves: its chain and counter go, and a no longer allows b's address.
        let only_a: Model = [(a, ga.clone())].into();
        let r = egress_script(&both, &only_a);
        assert!(
            r.contains(&format!("add chain netdev cnetguard g_{tb}\ndelete chain netdev cnetguard g_{tb}\n")),
            "{r}"
        );
        assert!(r.contains(&format!("delete counter netdev cnetguard spoof_{tb}\n")), "{r}");
        assert!(!r.contains("198.19.0.2"), "{r}");
    }

    #[test]
    fn the_last_egress_guard_of_a_namespace_goes_with_its_table_and_a_gone_namespace_is_left() {
        use crate::dataplane::fake::FakeDataplane;
        let fake = Arc::new(FakeDataplane::new());
        let guards = Guards::new(fake.clone());
        let (ns, other) = ("/run/netns/x", "/run/netns/y");
        fake.add_netns(ns);
        fake.add_netns(other);
        let (a, ga) = egress(1, Some(ns), &["198.18.0.2"]);
        let (b, gb) = egress(2, Some(ns), &["198.18.0.3"]);
        let (c, gc) = egress(3, Some(other), &["198.18.0.4"]);
        for (id, g) in [(a, &ga), (b, &gb), (c, &gc)] {
            guards.change(id, Some(g.clone())).unwrap();
        }
        let calls = || fake.calls().into_iter().filter(|c| c.starts_with("guard_")).collect::<Vec<_>>();
        let before = calls().len();
        guards.change(a, None).unwrap();
        assert!(calls()[before].starts_with(&format!("guard_apply {ns} ")), "b stays: {:?}", calls());
        guards.change(b, None).unwrap();
        assert_eq!(calls().last().unwrap(), &format!("guard_delete {ns}"), "the last one: the table goes");
        assert!(!fake.objects().egress_guards.contains_key(ns));
        assert!(fake.objects().egress_guards.contains_key(other), "another namespace's table stays");

        // A namespace that is gone took its table with it: nothing to delete.
        fake.tamper(|o| {
            o.namespaces.remove(other);
        });
        let before = calls().len();
        guards.change(c, None).unwrap();
        assert_eq!(calls().len(), before, "{:?}", calls());
    }

    #[test]
    fn a_dhcp_egress_guard_checks_the_mac_only_and_no_port_elements_are_made_for_it() {
        let (id, mut g) = egress(1, None, &[]);
        g.ips = None;
        let m: Model = [(id, g.clone())].into();
        let rules = g.egress_rules(&m);
        assert_eq!(rules.len(), 3, "MAC, ARP sender MAC, no VLAN tags: {rules:?}");
        assert!(g.elements(&m).is_empty(), "not an element of the switch ports' table");
        assert_eq!(in_space(&m, None).len(), 1, "cnetd's own namespace");
        assert!(in_space(&m, Some("/run/netns/x")).is_empty());
    }
}
