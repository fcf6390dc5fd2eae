//! The firewall: one private nftables table `inet cnet` whose chains never
//! change; networks and endpoints only add and remove set and map elements.
//! This module is the one owner of that table.
//!
//! Invariants:
//! - [`Firewall`] holds the element model (what each owner — a network or
//!   an endpoint — contributes); every kernel change updates model and kernel
//!   under one lock, in one atomic transaction, so a full load always matches
//!   the model.
//! - A full load replaces the table atomically: packets see the old table or
//!   the new one, never none, and conntrack keeps existing NAT bindings.
//! - Deleting an element that is already gone succeeds.
//! - The host never sends ICMP redirects to endpoints: a route of theirs
//!   through the gateway (an `SDNRoute` with `NeedEncap`) stays one.
//! - The `dnat4`/`dnat6` sets are filled by the data path, not by owners:
//!   the first packet of every port-mapped flow (nat hooks see only first
//!   packets) adds the endpoint address it was DNAT'd to. So a detach knows,
//!   with one lookup, whether conntrack may hold flows leading to the
//!   endpoint, and only then pays for a conntrack walk. A full load carries
//!   these elements over.
//! - Owners may claim the same set key (one container publishing a port
//!   through each of its networks): the kernel holds the element of the
//!   owner that claimed the key first, and the next claimant's takes over,
//!   in the same transaction, when that owner lets go.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use cnet_dataplane::ErrorKind;
use uuid::Uuid;

use crate::dataplane::{Dataplane, DpResult, FwElem};
use crate::state::{EndpointRecord, NetworkRecord};
use cnet_model::findings::{Finding, FindingKind, Subject};

/// The fixed part of the table. Per-object data lives in the sets and maps.
const SKELETON: &str = r#"table inet cnet {
  set bridges { type ifname; }
  set isolated { type ifname; }
  set intra { type ifname . ifname; }
  set masq4 { type ipv4_addr; flags interval; }
  set masq6 { type ipv6_addr; flags interval; }
  map pm4 { type inet_proto . inet_service : ipv4_addr . inet_service; }
  map pm4vip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
  map pm6 { type inet_proto . inet_service : ipv6_addr . inet_service; }
  map pm6vip { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }
  set dnat4 { type ipv4_addr; flags dynamic; }
  set dnat6 { type ipv6_addr; flags dynamic; }
  set vxports { type inet_service; }
  set vteps4 { type ipv4_addr; }
  set vteps6 { type ipv6_addr; }
  set onat_exc4 { type ipv4_addr . ipv4_addr; flags interval; }
  set onat_exc6 { type ipv6_addr . ipv6_addr; flags interval; }
  set onat_only4 { type ipv4_addr; }
  set onat_only6 { type ipv6_addr; }
  set onat_dst4 { type ipv4_addr . ipv4_addr; flags interval; }
  set onat_dst6 { type ipv6_addr . ipv6_addr; flags interval; }
  map onat_vip4 { type ipv4_addr : ipv4_addr; }
  map onat_vip6 { type ipv6_addr : ipv6_addr; }
  set onat_masq4 { type ipv4_addr; }
  set onat_masq6 { type ipv6_addr; }
  set l4p_exc4 { type ifname . ipv4_addr . ipv4_addr; flags interval; }
  set l4p_exc6 { type ifname . ipv6_addr . ipv6_addr; flags interval; }
  set l4p_only4 { type ifname . ipv4_addr; }
  set l4p_only6 { type ifname . ipv6_addr; }
  set l4p_dst4 { type ifname . ipv4_addr . ipv4_addr; flags interval; }
  set l4p_dst6 { type ifname . ipv6_addr . ipv6_addr; flags interval; }
  map l4p_dnat4 { type ifname . ipv4_addr : ipv4_addr . inet_service; }
  map l4p_dnat6 { type ifname . ipv6_addr : ipv6_addr . inet_service; }
  map l4p_redir4 { type ifname . ipv4_addr : inet_service; }
  map l4p_redir6 { type ifname . ipv6_addr : inet_service; }
  chain tunnels { type filter hook input priority -10; policy accept;
    udp dport @vxports ip saddr != @vteps4 counter drop
    udp dport @vxports ip6 saddr != @vteps6 counter drop
  }
  chain martians { type filter hook prerouting priority -300; policy accept;
    iifname != "lo" ip daddr 127.0.0.0/8 drop
  }
  chain l4proxy { type nat hook prerouting priority -110; policy accept;
    meta l4proto != tcp return
    fib daddr type local return
    iifname . ip saddr . ip daddr @l4p_exc4 return
    iifname . ip6 saddr . ip6 daddr @l4p_exc6 return
    iifname . ip saddr @l4p_only4 iifname . ip saddr . ip daddr != @l4p_dst4 return
    iifname . ip6 saddr @l4p_only6 iifname . ip6 saddr . ip6 daddr != @l4p_dst6 return
    meta l4proto tcp dnat ip to iifname . ip saddr map @l4p_dnat4
    meta l4proto tcp dnat ip6 to iifname . ip6 saddr map @l4p_dnat6
    meta l4proto tcp meta nfproto ipv4 redirect to iifname . ip saddr map @l4p_redir4
    meta l4proto tcp meta nfproto ipv6 redirect to iifname . ip6 saddr map @l4p_redir6
  }
  chain prerouting { type nat hook prerouting priority -100; policy accept;
    fib daddr type local jump portmap
  }
  chain output { type nat hook output priority -100; policy accept;
    fib daddr type local jump portmap
  }
  chain portmap {
    meta l4proto != { tcp, udp, sctp } return
    meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pm4vip
    meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pm4
    meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pm6vip
    meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @pm6
  }
  chain postrouting { type nat hook postrouting priority 100; policy accept;
    ct status dnat meta nfproto ipv4 add @dnat4 { ip daddr }
    ct status dnat meta nfproto ipv6 add @dnat6 { ip6 daddr }
    ct status dnat ip saddr 127.0.0.0/8 masquerade
    ct status dnat ip saddr @masq4 ip daddr @masq4 masquerade
    ct status dnat ip6 saddr @masq6 ip6 daddr @masq6 masquerade
    ip saddr . ip daddr @onat_exc4 return
    ip6 saddr . ip6 daddr @onat_exc6 return
    ip saddr @onat_only4 ip saddr . ip daddr != @onat_dst4 return
    ip6 saddr @onat_only6 ip6 saddr . ip6 daddr != @onat_dst6 return
    oifname != @bridges snat ip to ip saddr map @onat_vip4
    oifname != @bridges snat ip6 to ip6 saddr map @onat_vip6
    ip saddr @onat_masq4 oifname != @bridges masquerade fully-random
    ip6 saddr @onat_masq6 oifname != @bridges masquerade fully-random
    ip saddr @masq4 oifname != @bridges masquerade fully-random
    ip6 saddr @masq6 oifname != @bridges masquerade fully-random
  }
  chain redirects { type filter hook output priority 0; policy accept;
    oifname @bridges icmp type redirect drop
    oifname @bridges icmpv6 type nd-redirect drop
  }
  chain forward { type filter hook forward priority 0; policy accept;
    ct state established,related accept
    ct status dnat accept
    iifname . oifname @intra accept
    iifname @isolated drop
    oifname @bridges drop
  }
}
"#;

/// The elements of a network whose switch is a bridge: the bridge is known,
/// frames between its ports pass, and either egress is masqueraded
/// (`masq`: the subnets) or the bridge is isolated.
pub fn switch_elems(bridge: &str, masq: Option<&[ipnet::IpNet]>) -> Vec<FwElem> {
    // With br_netfilter loaded (the default on many hosts), frames bridged
    // between two ports of one network pass the inet forward hook with the
    // bridge as both input and output: `intra` lets them through.
    let mut out = vec![
        FwElem { set: "bridges", key: format!("\"{bridge}\""), value: None },
        FwElem { set: "intra", key: format!("\"{bridge}\" . \"{bridge}\""), value: None },
    ];
    match masq {
        None => out.push(FwElem { set: "isolated", key: format!("\"{bridge}\""), value: None }),
        Some(subnets) => {
            for s in subnets {
                let set = if s.addr().is_ipv4() { "masq4" } else { "masq6" };
                out.push(FwElem { set, key: s.to_string(), value: None });
            }
        }
    }
    out
}

/// The owner of the tunnel elements (`tunnel_elems`), which come from the
/// cluster view rather than from one network.
pub const TUNNEL_OWNER: Uuid = Uuid::from_u128(0x636e_6574_2d74_756e_6e65_6c73_0000_0001);

/// Anti-spoofing on the tunnels: VXLAN to `ports` is accepted only from
/// `peers`, the provider addresses of the cluster's registered hosts.
pub fn tunnel_elems(ports: &std::collections::BTreeSet<u16>, peers: &[IpAddr]) -> Vec<FwElem> {
    let mut out: Vec<FwElem> =
        ports.iter().map(|p| FwElem { set: "vxports", key: p.to_string(), value: None }).collect();
    for ip in peers {
        let set = if ip.is_ipv4() { "vteps4" } else { "vteps6" };
        out.push(FwElem { set, key: ip.to_string(), value: None });
    }
    out.sort_by(|a, b| (a.set, &a.key).cmp(&(b.set, &b.key)));
    out.dedup();
    out
}

/// The elements an attached endpoint on `net` contributes: its port
/// mappings, its outbound NAT and its L4 proxy.
pub fn endpoint_elems(ep: &EndpointRecord, net: &NetworkRecord) -> Vec<FwElem> {
    let mut out = port_mapping_elems(ep);
    out.extend(crate::policy::nat::outbound_nat_elems(ep));
    out.extend(crate::policy::nat::l4proxy_elems(ep, &net.bridge));
    out
}

/// An endpoint's port mappings, one element per port and address family.
pub fn port_mapping_elems(ep: &EndpointRecord) -> Vec<FwElem> {
    let mut out = Vec::new();
    for m in ep.port_mappings() {
        for c in &ep.ip_configurations {
            let v4 = c.ip_address.is_ipv4();
            if m.vip.is_some_and(|vip| vip.is_ipv4() != v4) {
                continue;
            }
            for (ext, int) in m.ports() {
                let key = format!("{} . {ext}", m.protocol);
                let (set, key) = match (m.vip, v4) {
                    (Some(vip), true) => ("pm4vip", format!("{vip} . {key}")),
                    (Some(vip), false) => ("pm6vip", format!("{vip} . {key}")),
                    (None, true) => ("pm4", key),
                    (None, false) => ("pm6", key),
                };
                out.push(FwElem { set, key, value: Some(format!("{} . {int}", c.ip_address)) });
            }
        }
    }
    out
}

/// Sets the data path fills (see the module docs).
const DATA_PATH_SETS: [&str; 2] = ["dnat4", "dnat6"];

/// The data path's record that a flow was DNAT'd to `ip`.
fn dnat_elem(ip: IpAddr) -> FwElem {
    FwElem { set: if ip.is_ipv4() { "dnat4" } else { "dnat6" }, key: ip.to_string(), value: None }
}

/// A set and a key in it: what the kernel holds one element of.
type Key = (&'static str, String);

fn key_of(e: &FwElem) -> Key {
    (e.set, e.key.clone())
}

#[derive(Default)]
struct Model {
    owners: BTreeMap<Uuid, Vec<FwElem>>,
    /// When each owner first contributed (a counter), and per key its
    /// claimants in that order: the first one's element is in the kernel.
    since: HashMap<Uuid, u64>,
    next: u64,
    claims: HashMap<Key, BTreeMap<u64, Uuid>>,
    /// The table's listing right after our last full load (chains and rules
    /// as the kernel holds them; listings leave out elements).
    baseline: Option<String>,
}

impl Model {
    /// Replaces what `owner` contributes.
    fn put(&mut self, owner: Uuid, elems: Vec<FwElem>) {
        let since = match self.since.get(&owner) {
            Some(s) => *s,
            None => {
                self.next += 1;
                self.next
            }
        };
        for e in self.owners.remove(&owner).unwrap_or_default() {
            let k = key_of(&e);
            if let Some(c) = self.claims.get_mut(&k) {
                c.remove(&since);
                if c.is_empty() {
                    self.claims.remove(&k);
                }
            }
        }
        if elems.is_empty() {
            self.since.remove(&owner);
            return;
        }
        self.since.insert(owner, since);
        for e in &elems {
            self.claims.entry(key_of(e)).or_default().insert(since, owner);
        }
        self.owners.insert(owner, elems);
    }

    /// The element the kernel holds for a key.
    fn winner(&self, k: &Key) -> Option<&FwElem> {
        let owner = self.claims.get(k)?.values().next()?;
        self.owners.get(owner)?.iter().find(|e| e.set == k.0 && e.key == k.1)
    }

    /// Every element the kernel holds.
    fn effective(&self) -> Vec<FwElem> {
        self.claims.keys().filter_map(|k| self.winner(k)).cloned().collect()
    }

    /// What the kernel holds for the keys of `elems`.
    fn winners_of<'a>(&self, elems: impl Iterator<Item = &'a FwElem>) -> BTreeSet<FwElem> {
        let keys: BTreeSet<Key> = elems.map(key_of).collect();
        keys.iter().filter_map(|k| self.winner(k)).cloned().collect()
    }
}

pub struct Firewall {
    dp: Arc<dyn Dataplane>,
    model: Mutex<Model>,
}

impl Firewall {
    pub fn new(dp: Arc<dyn Dataplane>) -> Self {
        Firewall { dp, model: Mutex::new(Model::default()) }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets what `owner` contributes, replacing what it had, in one
    /// transaction. Loads the whole table if it is missing (the first owner,
    /// or someone deleted it).
    pub fn set(&self, owner: Uuid, elems: Vec<FwElem>) -> DpResult<()> {
        let mut model = self.model();
        let old = model.owners.get(&owner).cloned().unwrap_or_default();
        if old == elems {
            return Ok(());
        }
        if model.baseline.is_none() {
            return self.load_with(&mut model, owner, elems);
        }
        let before = model.winners_of(old.iter().chain(&elems));
        model.put(owner, elems.clone());
        let after = model.winners_of(old.iter().chain(&elems));
        let gone: Vec<FwElem> = before.difference(&after).cloned().collect();
        let new: Vec<FwElem> = after.difference(&before).cloned().collect();
        let result = match self.dp.fw_update(&gone, &new) {
            Err(e) if e.kind() == ErrorKind::NotFound => self.load(&mut model),
            other => other,
        };
        if result.is_err() {
            model.put(owner, old);
        }
        result
    }

    /// A full load with `owner`'s elements replaced; the model changes only
    /// if the kernel took it.
    fn load_with(&self, model: &mut Model, owner: Uuid, elems: Vec<FwElem>) -> DpResult<()> {
        let old = model.owners.get(&owner).cloned();
        model.put(owner, elems);
        let loaded = self.load(model);
        if loaded.is_err() {
            model.put(owner, old.unwrap_or_default());
        }
        loaded
    }

    /// Removes what `owner` contributes.
    pub fn remove(&self, owner: Uuid) -> DpResult<()> {
        self.set(owner, Vec::new())
    }

    /// Fills the model without touching the kernel (start-up, before [`Firewall::reload`]).
    pub fn preload(&self, owner: Uuid, elems: Vec<FwElem>) {
        self.model().put(owner, elems);
    }

    /// Replaces the whole table with the skeleton and every element of the model.
    pub fn reload(&self) -> DpResult<()> {
        let mut model = self.model();
        self.load(&mut model)
    }

    fn load(&self, model: &mut Model) -> DpResult<()> {
        let mut all = model.effective();
        all.extend(self.data_path_elems()?);
        self.dp.fw_load(SKELETON, &all)?;
        model.baseline = self.dp.fw_listing()?;
        Ok(())
    }

    /// What the data path put into its sets, to carry over a full load.
    fn data_path_elems(&self) -> DpResult<Vec<FwElem>> {
        let Some(have) = self.dp.fw_elements()? else { return Ok(vec![]) };
        Ok(DATA_PATH_SETS
            .iter()
            .flat_map(|set| have.get(*set).into_iter().flatten().map(|key| (*set, key)))
            .map(|(set, key)| FwElem { set, key: key.clone(), value: None })
            .collect())
    }

    /// Whether a port-mapped flow was ever DNAT'd to `ip`.
    pub fn dnat_seen(&self, ip: IpAddr) -> DpResult<bool> {
        let _model = self.model();
        self.dp.fw_has_address(dnat_elem(ip).set, ip)
    }

    /// Whether a flow was DNAT'd to `ip`; forgets that it was.
    pub fn take_dnat_seen(&self, ip: IpAddr) -> DpResult<bool> {
        let _model = self.model();
        let elem = dnat_elem(ip);
        let seen = self.dp.fw_has_address(elem.set, ip)?;
        if seen {
            self.dp.fw_update(std::slice::from_ref(&elem), &[])?;
        }
        Ok(seen)
    }

    /// Removes the table when nothing contributes to it any more. Checked
    /// under the model's lock, so a concurrent [`Firewall::set`] either sees
    /// no table and loads it, or keeps this from deleting it.
    pub fn delete_if_unused(&self) -> DpResult<()> {
        let mut model = self.model();
        if !model.owners.is_empty() {
            return Ok(());
        }
        model.baseline = None;
        self.dp.fw_delete()
    }

    /// Whether the table is as we left it; reloads it when someone deleted,
    /// flushed or edited it. Returns whether a repair was made.
    pub fn check_and_repair(&self) -> DpResult<bool> {
        let mut model = self.model();
        let Some(baseline) = model.baseline.clone() else { return Ok(false) };
        if self.dp.fw_listing()? == Some(baseline) {
            return Ok(false);
        }
        tracing::warn!("the nftables table inet cnet was changed by someone else: restoring it");
        self.load(&mut model)?;
        Ok(true)
    }

    /// Elements of one owner that the kernel lacks.
    pub fn owner_drift(&self, owner: Uuid, subject: &Subject) -> DpResult<Vec<Finding>> {
        let want: Vec<FwElem> = {
            let model = self.model();
            let mine = model.owners.get(&owner).map(Vec::as_slice).unwrap_or_default();
            // Keys another owner claimed first are served by that one.
            mine.iter().filter(|e| model.winner(&key_of(e)) == Some(*e)).cloned().collect()
        };
        if want.is_empty() {
            return Ok(vec![]);
        }
        let Some(actual) = self.dp.fw_elements()? else {
            return Ok(vec![Finding::new(
                Subject::firewall(),
                FindingKind::Missing,
                "nftables table inet cnet is missing",
            )]);
        };
        Ok(want
            .iter()
            .filter(|e| !actual.get(e.set).is_some_and(|have| have.contains(&e.text())))
            .map(|e| {
                Finding::new(
                    subject.clone(),
                    FindingKind::Missing,
                    format!("nftables {}: element {} is missing", e.set, e.text()),
                )
            })
            .collect())
    }

    /// Differences between the model and the kernel.
    pub fn drift(&self) -> DpResult<Vec<Finding>> {
        let model = self.model();
        let fw = Subject::firewall();
        let Some(actual) = self.dp.fw_elements()? else {
            return Ok(if model.baseline.is_some() {
                vec![Finding::new(fw, FindingKind::Missing, "nftables table inet cnet is missing")]
            } else {
                vec![]
            });
        };
        let mut out = Vec::new();
        if let Some(baseline) = &model.baseline {
            if self.dp.fw_listing()?.as_ref() != Some(baseline) {
                out.push(Finding::new(
                    fw.clone(),
                    FindingKind::Mismatch,
                    "nftables table inet cnet: chains or rules differ from what cnetd loaded",
                ));
            }
        }
        let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for e in model.effective() {
            expected.entry(e.set).or_default().push(e.text());
        }
        for (set, want) in &expected {
            let have = actual.get(*set).cloned().unwrap_or_default();
            for w in want.iter().filter(|w| !have.contains(w)) {
                out.push(Finding::new(
                    fw.clone(),
                    FindingKind::Missing,
                    format!("nftables {set}: element {w} is missing"),
                ));
            }
        }
        for (set, have) in actual.iter().filter(|(set, _)| !DATA_PATH_SETS.contains(&set.as_str())) {
            let want = expected.get(set.as_str()).cloned().unwrap_or_default();
            for h in have.iter().filter(|h| !want.contains(h)) {
                out.push(Finding::new(
                    fw.clone(),
                    FindingKind::Orphan,
                    format!("nftables {set}: element {h} is not owned by any object"),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_range_on_a_dual_stack_endpoint_maps_every_port_in_both_families() {
        let ep: cnet_model::Endpoint = serde_json::from_value(serde_json::json!({
            "HostComputeNetwork": "n",
            "MacAddress": "0a:58:0a:00:00:02",
            "IpConfigurations": [{"IpAddress": "10.0.0.2", "PrefixLength": 24}, {"IpAddress": "fd00::2", "PrefixLength": 64}],
            "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080, "PortCount": 2}}]
        }))
        .unwrap();
        let rec = EndpointRecord::from_prepared(ep, Uuid::nil(), "cnv0".into()).unwrap();
        let texts: Vec<String> = port_mapping_elems(&rec).iter().map(|e| format!("{} {}", e.set, e.text())).collect();
        assert_eq!(
            texts,
            vec![
                "pm4 tcp . 8080 : 10.0.0.2 . 80",
                "pm4 tcp . 8081 : 10.0.0.2 . 81",
                "pm6 tcp . 8080 : fd00::2 . 80",
                "pm6 tcp . 8081 : fd00::2 . 81",
            ]
        );
    }

    fn elem(key: &str, value: &str) -> FwElem {
        FwElem { set: "pm4", key: key.into(), value: Some(value.into()) }
    }

    #[test]
    fn a_key_two_owners_claim_is_served_by_the_first_then_handed_to_the_next() {
        let dp = Arc::new(crate::dataplane::fake::FakeDataplane::new());
        let fw = Firewall::new(dp.clone());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let held = || dp.fw_elements().unwrap().unwrap_or_default().get("pm4").cloned().unwrap_or_default();
        fw.set(a, vec![elem("tcp . 8080", "10.0.0.2 . 80")]).unwrap();
        fw.set(b, vec![elem("tcp . 8080", "10.1.0.2 . 80"), elem("tcp . 9090", "10.1.0.2 . 90")]).unwrap();
        assert_eq!(held(), vec!["tcp . 8080 : 10.0.0.2 . 80", "tcp . 9090 : 10.1.0.2 . 90"]);
        assert!(fw.drift().unwrap().is_empty(), "{:?}", fw.drift());
        assert!(fw.owner_drift(b, &Subject::firewall()).unwrap().is_empty());
        fw.remove(a).unwrap();
        assert_eq!(held(), vec!["tcp . 8080 : 10.1.0.2 . 80", "tcp . 9090 : 10.1.0.2 . 90"]);
        // A's return does not take the key back from B.
        fw.set(a, vec![elem("tcp . 8080", "10.0.0.2 . 80")]).unwrap();
        assert_eq!(held(), vec!["tcp . 8080 : 10.1.0.2 . 80", "tcp . 9090 : 10.1.0.2 . 90"]);
        fw.remove(b).unwrap();
        assert_eq!(held(), vec!["tcp . 8080 : 10.0.0.2 . 80"]);
        fw.reload().unwrap();
        assert_eq!(held(), vec!["tcp . 8080 : 10.0.0.2 . 80"]);
        assert!(fw.drift().unwrap().is_empty());
    }
}
