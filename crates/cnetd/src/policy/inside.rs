//! ACLs of Transparent containers, in the container's own namespace.
//!
//! A Transparent container's adapter is a macvlan of the uplink that lives
//! only in its namespace: its frames to the LAN and to other macvlans never
//! pass a hook of the host's, so the host's `inet cnetpol` cannot see them.
//! Its ACL chains go instead into a table `inet cnetpol` of its namespace,
//! compiled as on the host ([`super::acl`]), with the same IP sets
//! ([`super::sets`]) and the same counter names, but dispatched from the
//! namespace's own hooks: `input` for In (`iifname . ip daddr`, the
//! container's link and its address) and `output` at −150 for Out
//! (`oifname . ip saddr`), both after conntrack.
//!
//! Invariants:
//! - A namespace's table holds the programs of exactly the Transparent
//!   endpoints of that namespace that have ACLs, and the sets they name.
//!   A change of some endpoints' rules only rewrites their chains, as on
//!   the host (one netlink batch); any other change, and one whose batch
//!   fails (the table deleted under us), replaces the whole table in one
//!   transaction (a table of one namespace is small). A failed change
//!   leaves the old table.
//! - Established and related flows are accepted first: a change never cuts
//!   a connection that was open.
//! - A namespace without such endpoints has no table (the last one's
//!   removal deletes it).
//! - A network-wide change (NetworkACLs, IP sets) is one transaction per
//!   namespace, not one for the network: a failure part-way leaves the
//!   namespaces done so far with the new rules and reports the rest; the
//!   model keeps what each namespace's kernel has.
//! - A container that holds `CAP_NET_ADMIN` in its namespace can delete
//!   its table. `cnet diag` reports a missing table, and a restart of
//!   cnetd puts it back.
//! - DisableICC: an isolated container's table holds the addresses of
//!   every other attached endpoint of its network (`members`, containers
//!   and VMs) and drops traffic to and from them on its link. Every
//!   change of the network's members rewrites the tables of its isolated
//!   containers whose peers changed; one that fails is logged, not
//!   returned (another endpoint's request must not fail for it).
//! - A packet socket (`CAP_NET_RAW`, which Docker grants by default)
//!   sends frames past the namespace's `inet` hooks, and so past its Out
//!   ACLs. Every packet that passed them gets the mark bit [`PASSED`] in
//!   postrouting; a table `netdev cnetpol` of the namespace, with an
//!   egress chain on each link that has ACLs, drops IPv4 and IPv6 frames
//!   without it (and clears the bit on the others, so it never leaves the
//!   namespace).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;
use uuid::Uuid;

use super::acl::Program;
use super::script::set_script;
use super::sets::{self, NetSets};
use super::TABLE;
use crate::dataplane::{Dataplane, DataplaneError, DpResult};
use crate::state::{EndpointRecord, NetworkRecord};

/// The fixed part of a namespace's table.
pub const SKELETON: &str = r#"table inet cnetpol {
  map in4 { type ifname . ipv4_addr : verdict; }
  map out4 { type ifname . ipv4_addr : verdict; }
  map in6 { type ifname . ipv6_addr : verdict; }
  map out6 { type ifname . ipv6_addr : verdict; }
  chain input { type filter hook input priority -10; policy accept;
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
    meta nfproto ipv4 iifname . ip daddr vmap @in4
    meta nfproto ipv6 iifname . ip6 daddr vmap @in6
  }
  chain output { type filter hook output priority -150; policy accept;
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
    meta nfproto ipv4 oifname . ip saddr vmap @out4
    meta nfproto ipv6 oifname . ip6 saddr vmap @out6
  }
  chain postrouting { type filter hook postrouting priority 300; policy accept;
    meta mark set meta mark | 0x00100000
  }
  chain default_in {
    meta l4proto { tcp, udp, icmp, ipv6-icmp, igmp } return
    drop
  }
}
"#;

/// The mark bit of a packet that passed the namespace's hooks (set in the
/// skeleton's postrouting chain).
pub const PASSED: u32 = 0x0010_0000;

/// The start of every namespace script: both tables gone (each created
/// first, so that deleting it succeeds when it is not there).
pub fn reset_script() -> String {
    format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable netdev {TABLE} {{}}\ndelete table netdev {TABLE}\n"
    )
}

/// One endpoint's part of its namespace's table.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    program: Program,
    /// The leaves of each set its program names.
    sets: BTreeMap<String, Vec<IpNet>>,
    /// Its network.
    network: Uuid,
    /// DisableICC: the addresses of the other endpoints of its network,
    /// which it exchanges no traffic with (`None`: it is not isolated).
    peers: Option<BTreeSet<IpAddr>>,
}

/// The addresses of every attached endpoint of each Transparent network
/// (containers and VMs), by network and endpoint: the peers of its
/// isolated endpoints.
type Members = BTreeMap<Uuid, BTreeMap<Uuid, Vec<IpAddr>>>;

/// The addresses of network `net`'s endpoints other than `id`.
fn peers_of(members: &Members, net: Uuid, id: Uuid) -> BTreeSet<IpAddr> {
    members
        .get(&net)
        .into_iter()
        .flatten()
        .filter(|(e, _)| **e != id)
        .flat_map(|(_, ips)| ips.iter().copied())
        .collect()
}

/// Each namespace's endpoints with ACLs, by namespace path.
type Model = BTreeMap<String, BTreeMap<Uuid, Entry>>;

pub struct Inside {
    dp: Arc<dyn Dataplane>,
    model: Mutex<Model>,
    /// Locked after `model`, when both are.
    members: Mutex<Members>,
}

/// `ep`'s entry: its program on its own link, and the sets it names.
/// `ep`'s entry: its program on its own link, the sets it names, and
/// (DisableICC) its peers among `members`.
fn entry_of(ep: &EndpointRecord, net: &NetworkRecord, sets: &NetSets, members: &Members) -> DpResult<Option<Entry>> {
    let Some(mut program) = super::program_on(ep, net, sets, ep.interface_name.as_str())? else { return Ok(None) };
    // Isolation is the peers' set here, not the host's `noicc` sets.
    let peers = std::mem::take(&mut program.isolated).then(|| peers_of(members, net.id, ep.id));
    let sets = program.sets.iter().map(|n| (n.clone(), sets.contents.get(n).cloned().unwrap_or_default())).collect();
    Ok(Some(Entry { program, sets, network: net.id, peers }))
}

/// The script that takes a namespace's table from `cur` to `next` when
/// only endpoints' rules differ (the same endpoints, sets and peers): each
/// changed program's chains rewritten. `None` when more changed.
fn rules_change(cur: &BTreeMap<Uuid, Entry>, next: &BTreeMap<Uuid, Entry>) -> Option<String> {
    if !cur.keys().eq(next.keys()) {
        return None;
    }
    let mut s = String::new();
    for (id, new) in next {
        let old = &cur[id];
        if old.sets != new.sets || old.peers != new.peers || old.program.switch != new.program.switch {
            return None;
        }
        if old.program != new.program {
            s += &set_script(&new.program, Some(&old.program));
        }
    }
    Some(s).filter(|s| !s.is_empty())
}

/// Whether the namespace at `path` is cnetd's own (a path to the host's
/// namespace, or a stale `/proc/PID/ns/net` whose PID is now a host process).
pub fn is_own(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    ino(path).is_some_and(|i| Some(i) == ino("/proc/self/ns/net"))
}

/// The script that replaces a namespace's table with `entries` (deletes
/// it when there are none).
fn script(entries: &BTreeMap<Uuid, Entry>) -> String {
    let mut s = reset_script();
    if entries.is_empty() {
        return s;
    }
    s += SKELETON;
    let mut declared = BTreeSet::new();
    for e in entries.values() {
        for (name, leaves) in &e.sets {
            if declared.insert(name) {
                sets::declare(&mut s, name, leaves);
            }
        }
    }
    for e in entries.values() {
        s += &set_script(&e.program, None);
    }
    // DisableICC: after the ACLs' dispatch, nothing to or from a peer.
    for e in entries.values() {
        let Some(peers) = &e.peers else { continue };
        let link = &e.program.switch;
        for (v4, family, kind) in [(true, "ip", "ipv4_addr"), (false, "ip6", "ipv6_addr")] {
            let set = format!("icc_{}_{}", e.program.tag, if v4 { 4 } else { 6 });
            let _ = writeln!(s, "add set inet {TABLE} {set} {{ type {kind}; }}");
            let mine: Vec<String> = peers.iter().filter(|a| a.is_ipv4() == v4).map(|a| a.to_string()).collect();
            if !mine.is_empty() {
                let _ = writeln!(s, "add element inet {TABLE} {set} {{ {} }}", mine.join(", "));
            }
            let _ = writeln!(s, "add rule inet {TABLE} input iifname \"{link}\" {family} saddr @{set} counter drop");
            let _ = writeln!(s, "add rule inet {TABLE} output oifname \"{link}\" {family} daddr @{set} counter drop");
        }
    }
    // Frames from packet sockets: never marked, dropped on the links with ACLs.
    let _ = writeln!(s, "add table netdev {TABLE}");
    for e in entries.values() {
        let (chain, link) = (format!("raw_{}", e.program.tag), &e.program.switch);
        let _ = writeln!(
            s,
            "add chain netdev {TABLE} {chain} {{ type filter hook egress device \"{link}\" priority -310; policy accept; }}"
        );
        let _ = writeln!(
            s,
            "add rule netdev {TABLE} {chain} meta protocol {{ ip, ip6 }} meta mark & {PASSED:#010x} == 0 counter drop"
        );
        let _ = writeln!(s, "add rule netdev {TABLE} {chain} meta mark set meta mark & {:#010x}", !PASSED);
    }
    s
}

impl Inside {
    pub fn new(dp: Arc<dyn Dataplane>) -> Self {
        Inside { dp, model: Mutex::new(Model::new()), members: Mutex::new(Members::new()) }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `ep` (attached, on Transparent network `net`) has its
    /// addresses now; `None` when it left.
    fn note(&self, net: Uuid, id: Uuid, ips: Option<Vec<IpAddr>>) -> bool {
        let mut members = self.members();
        let now = members.entry(net).or_default();
        let changed = match ips {
            Some(ips) => now.insert(id, ips.clone()).as_ref() != Some(&ips),
            None => now.remove(&id).is_some(),
        };
        members.retain(|_, m| !m.is_empty());
        changed
    }

    /// Gives every isolated endpoint of network `net` but `except` its
    /// peers as they are now. A namespace that cannot take its table is
    /// logged (its isolation then lags), not returned: another endpoint's
    /// attachment must not fail for it.
    fn refresh_peers(&self, model: &mut Model, net: Uuid, except: Uuid) {
        let members = self.members().clone();
        let mut changes: BTreeMap<String, Vec<(Uuid, Option<Entry>)>> = BTreeMap::new();
        for (netns, entries) in model.iter() {
            for (id, e) in entries {
                if *id == except || e.network != net || e.peers.is_none() {
                    continue;
                }
                let peers = Some(peers_of(&members, net, *id));
                if e.peers != peers {
                    changes.entry(netns.clone()).or_default().push((*id, Some(Entry { peers, ..e.clone() })));
                }
            }
        }
        for (netns, changes) in changes {
            if let Err(e) = self.apply(model, &netns, changes) {
                tracing::error!("giving the isolated endpoints in namespace {netns} their new peers failed: {e}");
            }
        }
    }

    /// Notes the addresses of `ep`, a VM on Transparent network `net` (it
    /// has no table, but it is a peer of the network's isolated endpoints).
    pub fn member(&self, ep: &EndpointRecord, net: &NetworkRecord) {
        if self.note(net.id, ep.id, Some(ep.ips().collect())) {
            self.refresh_peers(&mut self.model(), net.id, ep.id);
        }
    }

    /// Brings namespace `netns`'s table to the model with `changes` made
    /// (each endpoint's new entry, or none); the model only when the
    /// kernel took it. A namespace that is gone took its table with it.
    /// cnetd's own namespace is refused: its `inet cnetpol` is the host's.
    fn apply(&self, model: &mut Model, netns: &str, changes: Vec<(Uuid, Option<Entry>)>) -> DpResult<()> {
        if is_own(netns) {
            return Err(DataplaneError::Invalid {
                what: format!("the namespace {netns}"),
                reason: "it is cnetd's own: a Transparent endpoint's ACLs go in a container's namespace".into(),
            });
        }
        let mut next = model.get(netns).cloned().unwrap_or_default();
        for (id, e) in changes {
            match e {
                Some(e) => next.insert(id, e),
                None => next.remove(&id),
            };
        }
        if model.get(netns).map_or(next.is_empty(), |cur| *cur == next) {
            return Ok(());
        }
        if !self.dp.netns_exists(netns) {
            model.remove(netns);
            return Ok(());
        }
        // Only rules changed: those endpoints' chains, as on the host (one
        // batch, no libnftables); else, or when that fails (the table was
        // deleted under us), the whole table.
        let rules_only = model.get(netns).and_then(|cur| rules_change(cur, &next));
        if rules_only.is_none_or(|s| self.dp.acl_apply_in(netns, &s).is_err()) {
            self.dp.acl_apply_in(netns, &script(&next))?;
        }
        if next.is_empty() {
            model.remove(netns);
        } else {
            model.insert(netns.to_string(), next);
        }
        Ok(())
    }

    /// Programs what `ep` (attached to the namespace at `netns`, on
    /// Transparent network `net`) has now; removes what it had when it has
    /// no ACLs left.
    pub fn set(&self, ep: &EndpointRecord, net: &NetworkRecord, netns: &str) -> DpResult<()> {
        let sets = super::sets_of(net)?;
        let mut model = self.model();
        let moved = self.note(net.id, ep.id, Some(ep.ips().collect()));
        let entry = entry_of(ep, net, &sets, &self.members())?;
        if moved {
            self.refresh_peers(&mut model, net.id, ep.id);
        }
        // An endpoint moved to another namespace leaves the old one first.
        let elsewhere: Vec<String> =
            model.iter().filter(|(ns, m)| *ns != netns && m.contains_key(&ep.id)).map(|(ns, _)| ns.clone()).collect();
        for ns in elsewhere {
            self.apply(&mut model, &ns, vec![(ep.id, None)])?;
        }
        self.apply(&mut model, netns, vec![(ep.id, entry)])
    }

    /// Removes endpoint `id`'s part, wherever it is; nothing when it has none.
    pub fn remove(&self, id: Uuid) -> DpResult<()> {
        let mut model = self.model();
        let spaces: Vec<String> = model.iter().filter(|(_, m)| m.contains_key(&id)).map(|(ns, _)| ns.clone()).collect();
        for ns in spaces {
            self.apply(&mut model, &ns, vec![(id, None)])?;
        }
        let nets: Vec<Uuid> = self.members().iter().filter(|(_, m)| m.contains_key(&id)).map(|(n, _)| *n).collect();
        for net in nets {
            self.note(net, id, None);
            self.refresh_peers(&mut model, net, id);
        }
        Ok(())
    }

    /// Programs network `net`'s change for `eps` (its attached endpoints,
    /// each with its namespace's path), one transaction per namespace.
    /// Every namespace is tried; the first error is returned.
    pub fn network_changed(&self, net: &NetworkRecord, eps: &[(EndpointRecord, String)]) -> DpResult<()> {
        let sets = super::sets_of(net)?;
        let mut model = self.model();
        let mut by_space: BTreeMap<&str, Vec<(Uuid, Option<Entry>)>> = BTreeMap::new();
        for (ep, netns) in eps {
            by_space.entry(netns.as_str()).or_default().push((ep.id, entry_of(ep, net, &sets, &self.members())?));
        }
        let mut first = None;
        for (netns, changes) in by_space {
            if let Err(e) = self.apply(&mut model, netns, changes) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Fills the model without touching the kernel (start-up, before [`Inside::reload`]).
    pub fn preload(&self, ep: &EndpointRecord, net: &NetworkRecord, netns: &str) {
        self.preload_member(ep, net);
        let members = self.members().clone();
        match super::sets_of(net).and_then(|sets| entry_of(ep, net, &sets, &members)) {
            Ok(Some(e)) => drop(self.model().entry(netns.to_string()).or_default().insert(ep.id, e)),
            Ok(None) => {}
            Err(e) => tracing::error!("{e}: its ACLs are not enforced"),
        }
    }

    /// Notes `ep`'s addresses on Transparent network `net` without touching
    /// the kernel (start-up): the isolated endpoints preloaded before it
    /// have it as a peer.
    pub fn preload_member(&self, ep: &EndpointRecord, net: &NetworkRecord) {
        self.note(net.id, ep.id, Some(ep.ips().collect()));
        let members = self.members().clone();
        let mut model = self.model();
        for (id, e) in model.values_mut().flat_map(|m| m.iter_mut()) {
            if let Some(p) = e.peers.as_mut().filter(|_| e.network == net.id) {
                *p = peers_of(&members, net.id, *id);
            }
        }
    }

    /// Replaces every namespace's table with the model; one whose
    /// namespace is gone is skipped with a warning (`cnet diag` finds its
    /// endpoint).
    pub fn reload(&self) -> DpResult<()> {
        let model = self.model();
        for (netns, entries) in model.iter() {
            if !self.dp.netns_exists(netns) || is_own(netns) {
                tracing::warn!(
                    "the namespace {netns} of a Transparent endpoint is gone or cnetd's own: not loading its ACLs"
                );
                continue;
            }
            // One namespace that cannot take its table (gone since the
            // check) must not keep cnetd from starting; diag finds it.
            if let Err(e) = self.dp.acl_apply_in(netns, &script(entries)) {
                tracing::error!("loading the ACLs of namespace {netns} failed: {e}");
            }
        }
        Ok(())
    }

    /// Deletes the table of each namespace of `spaces` that has one and
    /// that the model has no endpoint in: left by a crash between the
    /// kernel's change and the store's (an endpoint deleted, or its last
    /// ACL removed), which no later change would touch. Start-up calls it
    /// after [`Inside::reload`]; cnetd's own namespace is never swept (its
    /// `inet cnetpol` is the host's table). Returns the namespaces swept.
    pub fn sweep<'a>(&self, spaces: impl Iterator<Item = &'a str>) -> DpResult<Vec<String>> {
        let model = self.model();
        let mut out = Vec::new();
        for netns in spaces {
            if model.contains_key(netns) || is_own(netns) || !self.dp.netns_exists(netns) {
                continue;
            }
            let swept = self.dp.acl_exists_in(netns).and_then(|there| {
                if there {
                    self.dp.acl_apply_in(netns, &script(&BTreeMap::new()))?;
                }
                Ok(there)
            });
            match swept {
                Ok(true) => out.push(netns.to_string()),
                Ok(false) => {}
                Err(e) => tracing::warn!("looking for a stale ACL table in namespace {netns} failed: {e}"),
            }
        }
        Ok(out)
    }

    /// The namespace whose table has endpoint `id`'s chains, if any.
    pub fn netns_of(&self, id: Uuid) -> Option<String> {
        self.model().iter().find(|(_, m)| m.contains_key(&id)).map(|(ns, _)| ns.clone())
    }

    /// Endpoints whose namespace lacks the table they need.
    pub fn missing(&self) -> DpResult<Vec<Uuid>> {
        let model = self.model();
        let mut out = Vec::new();
        for (netns, entries) in model.iter().filter(|(ns, _)| self.dp.netns_exists(ns)) {
            if !self.dp.acl_exists_in(netns)? {
                out.extend(entries.keys().copied());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnet_model::acl::AclPolicy;

    fn program(rules: serde_json::Value) -> Program {
        let rules: Vec<cnet_model::acl::AclRule> =
            serde_json::from_value::<Vec<AclPolicy>>(rules).unwrap().iter().map(|a| a.rule().unwrap()).collect();
        let src = super::super::acl::Source { rules: &rules, tiers: &[], sets: None };
        super::super::acl::compile(Uuid::nil(), "eth0", &["198.18.0.7".parse().unwrap()], &src, false).unwrap()
    }

    #[test]
    fn a_namespaces_table_is_replaced_whole_and_dispatches_on_the_containers_own_link() {
        let p =
            program(serde_json::json!([{"Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "22"}]));
        let entries = BTreeMap::from([(
            Uuid::nil(),
            Entry { program: p, sets: BTreeMap::new(), network: Uuid::nil(), peers: None },
        )]);
        let s = script(&entries);
        assert!(s.starts_with(&(reset_script() + "table inet cnetpol {")), "{s}");
        assert!(s.contains("chain input { type filter hook input priority -10;"), "{s}");
        assert!(s.contains("meta nfproto ipv4 iifname . ip daddr vmap @in4"), "{s}");
        assert!(s.contains("meta nfproto ipv4 oifname . ip saddr vmap @out4"), "{s}");
        assert!(
            s.contains("add element inet cnetpol in4 { \"eth0\" . 198.18.0.7 : jump ep_0000000000000000_in }"),
            "{s}"
        );
        assert!(s.contains("meta l4proto 6 th dport 22 counter name \"acl_0000000000000000\" drop"), "{s}");
        // What passed the hooks is marked; a frame on the link without the mark came from a packet socket.
        assert!(s.contains(&format!("meta mark set meta mark | {PASSED:#010x}")), "{s}");
        assert!(
            s.contains("add chain netdev cnetpol raw_0000000000000000 { type filter hook egress device \"eth0\""),
            "{s}"
        );
        assert!(s.contains("meta protocol { ip, ip6 } meta mark & 0x00100000 == 0 counter drop"), "{s}");
        assert!(s.contains("meta mark set meta mark & 0xffefffff"), "{s}");
        // DisableICC: the peers' addresses in sets of its own, dropped both ways on its link.
        let peers: BTreeSet<IpAddr> = ["198.18.0.8".parse().unwrap(), "2001:db8::8".parse().unwrap()].into();
        let lone = Entry {
            program: program(serde_json::json!([])),
            sets: BTreeMap::new(),
            network: Uuid::nil(),
            peers: Some(peers),
        };
        let s = script(&BTreeMap::from([(Uuid::nil(), lone)]));
        assert!(s.contains("add set inet cnetpol icc_0000000000000000_4 { type ipv4_addr; }"), "{s}");
        assert!(s.contains("add element inet cnetpol icc_0000000000000000_4 { 198.18.0.8 }"), "{s}");
        assert!(s.contains("add element inet cnetpol icc_0000000000000000_6 { 2001:db8::8 }"), "{s}");
        assert!(
            s.contains("add rule inet cnetpol input iifname \"eth0\" ip saddr @icc_0000000000000000_4 counter drop"),
            "{s}"
        );
        assert!(
            s.contains("add rule inet cnetpol output oifname \"eth0\" ip6 daddr @icc_0000000000000000_6 counter drop"),
            "{s}"
        );
        assert!(!s.contains("noicc"), "not the host's sets: {s}");
        // A change of rules only rewrites that endpoint's chains; anything more is a whole table.
        let p2 =
            program(serde_json::json!([{"Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "23"}]));
        let one = |program: Program| {
            BTreeMap::from([(Uuid::nil(), Entry { program, sets: BTreeMap::new(), network: Uuid::nil(), peers: None })])
        };
        let (before, after) = (
            one(program(
                serde_json::json!([{"Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "22"}]),
            )),
            one(p2),
        );
        let change = rules_change(&before, &after).expect("rules only");
        assert!(
            change.contains("flush chain inet cnetpol ep_0000000000000000_in") && change.contains("th dport 23"),
            "{change}"
        );
        assert!(cnet_dataplane::nftwrite::parse(&change).is_some(), "sent by the netlink writer: {change}");
        assert_eq!(rules_change(&before, &before), None, "nothing to do");
        assert_eq!(rules_change(&before, &BTreeMap::new()), None, "an endpoint gone: the whole table");
        let mut isolated = after.clone();
        isolated.get_mut(&Uuid::nil()).unwrap().peers = Some(BTreeSet::new());
        assert_eq!(rules_change(&after, &isolated), None, "peers changed: the whole table");
        // No endpoint left: both tables go.
        assert_eq!(script(&BTreeMap::new()), reset_script());
        assert_eq!(
            reset_script(),
            "table inet cnetpol {}\ndelete table inet cnetpol\ntable netdev cnetpol {}\ndelete table netdev cnetpol\n"
        );
    }
}
