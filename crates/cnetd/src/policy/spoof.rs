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
//! - Transparent endpoints have no port on a host switch and are not
//!   guarded here; an endpoint with the flag `AllowSpoofing` is not either.

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

/// One endpoint's guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// 16 hex digits of the endpoint ID: names its counter.
    pub tag: String,
    /// Its switch port.
    pub port: String,
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
pub fn guard_of(ep: &EndpointRecord, net: &NetworkRecord, group: Option<&str>) -> Option<Guard> {
    let remote = ep.flags & cnet_model::endpoint::REMOTE_ENDPOINT != 0;
    if remote || ep.flags & cnet_model::endpoint::ALLOW_SPOOFING != 0 || net.kind == NetworkType::Transparent {
        return None;
    }
    if ep.host_interface_name.is_empty() {
        return None;
    }
    Some(Guard {
        tag: super::acl::tag_of(ep.id),
        port: ep.host_interface_name.clone(),
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

    /// Its elements in `model`: (set or map, element).
    fn elements(&self, model: &Model) -> Vec<(&'static str, String)> {
        let port = format!("\"{}\"", self.port);
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

/// The guards of attached endpoints, in the model and in the kernel.
pub struct Guards {
    dp: Arc<dyn Dataplane>,
    model: Mutex<Model>,
}

impl Guards {
    pub fn new(dp: Arc<dyn Dataplane>) -> Self {
        Guards { dp, model: Mutex::new(Model::new()) }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Guards `ep` (attached, on `net`, in the namespace at `group`) as it is now.
    pub fn set(&self, ep: &EndpointRecord, net: &NetworkRecord, group: Option<&str>) -> DpResult<()> {
        self.change(ep.id, guard_of(ep, net, group))
    }

    /// Removes endpoint `id`'s guard; nothing when it has none.
    pub fn remove(&self, id: Uuid) -> DpResult<()> {
        self.change(id, None)
    }

    /// One endpoint's guard from what it is to `new`, with its namespace's
    /// other guards (their allowed addresses follow), in one transaction.
    fn change(&self, id: Uuid, new: Option<Guard>) -> DpResult<()> {
        let mut model = self.model();
        let old = model.get(&id).cloned();
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

    /// Fills the model without touching the kernel (start-up, before [`Guards::reload`]).
    pub fn preload(&self, ep: &EndpointRecord, net: &NetworkRecord, group: Option<&str>) {
        if let Some(g) = guard_of(ep, net, group) {
            self.model().insert(ep.id, g);
        }
    }

    /// Replaces the table with the model (none when nothing is guarded).
    pub fn reload(&self) -> DpResult<()> {
        let model = self.model();
        self.load(&model)
    }

    fn load(&self, model: &Model) -> DpResult<()> {
        let script = if model.is_empty() { delete_script() } else { load_script(model) };
        self.dp.pol_apply(&script)
    }

    /// Whether the table was there; restores it when someone deleted it.
    pub fn check_and_repair(&self) -> DpResult<bool> {
        let model = self.model();
        if model.is_empty() || self.dp.pol_exists(Family::Bridge)? {
            return Ok(false);
        }
        tracing::warn!("the nftables table bridge {TABLE} was deleted by someone else: restoring it");
        self.load(&model)?;
        Ok(true)
    }

    /// The name of endpoint `id`'s counter, when it is guarded.
    pub fn counter_of(&self, id: Uuid) -> Option<String> {
        self.model().get(&id).map(Guard::counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(n: u128, ips: Option<&[&str]>, group: Option<&str>) -> (Uuid, Guard) {
        let id = Uuid::from_u128(n);
        let g = Guard {
            tag: super::super::acl::tag_of(id),
            port: format!("cnv{n}"),
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
}
