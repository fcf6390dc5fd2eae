//! Endpoint policies in the kernel: the nftables table `inet cnetpol`, of
//! which this module is the one owner. Drivers do not program policies;
//! the service hands this module each attached endpoint with its network.
//!
//! The table's base chains dispatch through verdict maps keyed by
//! (switch, endpoint address): `out4`/`out6` at prerouting −150 (before
//! any DNAT, so an Out rule sees the destination the endpoint chose),
//! `in4`/`in6` in forward and output (after DNAT, so a published port is
//! matched on the endpoint's own port). Each endpoint with ACLs has two
//! chains of its own, and one more per tier ([`tiers`]); one change
//! rewrites only those, so its cost does not grow with the number of
//! endpoints, and a packet's cost is one lookup plus that endpoint's rules,
//! for the first packet of a flow only. The IP sets its rules name are
//! named sets of the table ([`sets`]).
//!
//! Invariants:
//! - The model holds every endpoint's compiled program and every set in
//!   the kernel with its contents and number of users; every kernel change
//!   updates model and kernel under one lock, in one nft transaction (a
//!   failed change leaves both as they were), however many endpoints and
//!   sets it touches.
//! - A set is in the kernel exactly while some program names it: created
//!   before the first rule naming it, deleted after the last one is gone,
//!   in the same transaction. Changing its members changes no rule.
//! - Established and related flows are accepted before any dispatch:
//!   replies of an allowed flow pass, and a policy change never cuts a
//!   connection that was already open.
//! - Neighbour discovery always passes (an ACL cannot break IPv6 on the link).
//! - The table exists while some endpoint has ACLs or DisableICC (the last
//!   one's removal deletes it), and is restored whole, sets included, from
//!   the model when someone deletes it ([`Policies::check_and_repair`]).
//! - A Transparent container's traffic never passes the host: its ACLs are
//!   in a table of its own namespace ([`inside`]). A Transparent VM's
//!   frames pass no hook with connection tracking: it has no ACLs (the
//!   service refuses them, and DisableICC, before any change).

pub mod acl;
pub mod inside;
pub mod nat;
pub mod qos;
mod script;
pub mod sets;
pub mod spoof;
mod tiers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use cnet_model::endpoint::{acls_in, tiers_in};
use cnet_model::NetworkType;
use ipnet::IpNet;
use uuid::Uuid;

use crate::dataplane::{Dataplane, DataplaneError, DpResult};
use crate::state::{EndpointRecord, NetworkRecord};
use acl::{Program, Source};
use script::{load_script, remove_script, set_script};
use sets::NetSets;

/// The table's name.
pub const TABLE: &str = "cnetpol";

/// The fixed part of the table.
pub const SKELETON: &str = r#"table inet cnetpol {
  map in4 { type ifname . ipv4_addr : verdict; }
  map out4 { type ifname . ipv4_addr : verdict; }
  map in6 { type ifname . ipv6_addr : verdict; }
  map out6 { type ifname . ipv6_addr : verdict; }
  set noicc4 { type ifname . ipv4_addr; }
  set noicc6 { type ifname . ipv6_addr; }
  chain prerouting { type filter hook prerouting priority -150; policy accept;
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
    meta nfproto ipv4 iifname . ip saddr vmap @out4
    meta nfproto ipv6 iifname . ip6 saddr vmap @out6
  }
  chain forward { type filter hook forward priority -10; policy accept;
    ct state established,related accept
    meta nfproto ipv4 iifname . ip saddr @noicc4 oifname . ip saddr @noicc4 counter drop
    meta nfproto ipv4 iifname . ip daddr @noicc4 oifname . ip daddr @noicc4 counter drop
    meta nfproto ipv6 iifname . ip6 saddr @noicc6 oifname . ip6 saddr @noicc6 counter drop
    meta nfproto ipv6 iifname . ip6 daddr @noicc6 oifname . ip6 daddr @noicc6 counter drop
    meta nfproto ipv4 oifname . ip daddr vmap @in4
    meta nfproto ipv6 oifname . ip6 daddr vmap @in6
  }
  chain output { type filter hook output priority -10; policy accept;
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
    meta nfproto ipv4 oifname . ip daddr vmap @in4
    meta nfproto ipv6 oifname . ip6 daddr vmap @in6
  }
  chain default_in {
    meta l4proto { tcp, udp, icmp, ipv6-icmp, igmp } return
    drop
  }
}
"#;

/// A set in the kernel.
#[derive(Clone, Debug, PartialEq)]
struct SetState {
    leaves: Vec<IpNet>,
    /// Programs that name it.
    users: usize,
}

#[derive(Default)]
struct Model {
    programs: BTreeMap<Uuid, Program>,
    sets: BTreeMap<String, SetState>,
    /// Whether the table is in the kernel.
    loaded: bool,
}

pub struct Policies {
    dp: Arc<dyn Dataplane>,
    model: Mutex<Model>,
    /// The Transparent containers' tables, in their namespaces.
    pub inside: inside::Inside,
}

fn invalid(what: String) -> impl Fn(String) -> DataplaneError {
    move |reason| DataplaneError::Invalid { what: what.clone(), reason }
}

/// The compiled policies of `ep` on `net` (whose sets are `sets`), or
/// `None` when it has none.
pub fn program_of(ep: &EndpointRecord, net: &NetworkRecord, sets: &NetSets) -> DpResult<Option<Program>> {
    program_on(ep, net, sets, &net.bridge)
}

/// Whether `ep` on `net` has ACL rules or tiers (its own or its network's).
pub fn has_acls(ep: &EndpointRecord, net: &NetworkRecord) -> bool {
    acls_in(&ep.policies).next().is_some() || !net.acls.is_empty() || tiers_in(&ep.policies).next().is_some()
}

/// Whether `ep` has the flag DisableICC.
pub fn isolated(ep: &EndpointRecord) -> bool {
    ep.flags & cnet_model::endpoint::DISABLE_ICC != 0
}

/// As [`program_of`], with its traffic seen on link `switch`.
fn program_on(ep: &EndpointRecord, net: &NetworkRecord, sets: &NetSets, switch: &str) -> DpResult<Option<Program>> {
    let invalid = invalid(format!("endpoint {}", ep.display_name()));
    let rules =
        acls_in(&ep.policies).chain(&net.acls).map(|a| a.rule()).collect::<Result<Vec<_>, _>>().map_err(&invalid)?;
    let tiers = tiers_in(&ep.policies).map(|t| t.tier()).collect::<Result<Vec<_>, _>>().map_err(&invalid)?;
    let isolated = isolated(ep);
    if rules.is_empty() && tiers.is_empty() && !isolated {
        return Ok(None);
    }
    let ips: Vec<_> = ep.ips().collect();
    let src = Source { rules: &rules, tiers: &tiers, sets: Some(&sets.names) };
    acl::compile(ep.id, switch, &ips, &src, isolated).map(Some).map_err(invalid)
}

/// `net`'s sets, or the error of a network whose sets cannot be built.
pub fn sets_of(net: &NetworkRecord) -> DpResult<NetSets> {
    sets::of_network(net).map_err(invalid(format!("the IP sets of network {}", net.name)))
}

impl Policies {
    pub fn new(dp: Arc<dyn Dataplane>) -> Self {
        Policies { inside: inside::Inside::new(dp.clone()), dp, model: Mutex::new(Model::default()) }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Programs what `ep` (attached, on `net`, to the namespace at `netns`:
    /// empty for a VM's, `None` when not known) has now; removes what it had
    /// when it has no policies left.
    pub fn set(&self, ep: &EndpointRecord, net: &NetworkRecord, netns: Option<&str>) -> DpResult<()> {
        if net.kind == NetworkType::Transparent {
            let vm = ep.vm_device.is_some() || netns == Some("");
            return match netns {
                _ if vm && (has_acls(ep, net) || isolated(ep)) => {
                    Err(invalid(format!("endpoint {}", ep.display_name()))(
                        "a VM endpoint on a Transparent network takes no ACLs and no DisableICC".into(),
                    ))
                }
                Some(path) if !vm => self.inside.set(ep, net, path),
                // A VM: no table, but a peer of the network's isolated endpoints.
                _ if vm => {
                    self.inside.member(ep, net);
                    Ok(())
                }
                // No namespace known: nothing to program.
                _ => Ok(()),
            };
        }
        let sets = sets_of(net)?;
        let new = program_of(ep, net, &sets)?;
        self.apply(vec![(ep.id, new)], &sets.contents, false)
    }

    /// Programs network `net`'s change (its sets, its NetworkACLs) for
    /// `eps`, its endpoints in the kernel with the paths of their
    /// namespaces, in one transaction (on a Transparent network, one per
    /// namespace: [`inside`]).
    pub fn network_changed(&self, net: &NetworkRecord, eps: &[(EndpointRecord, String)]) -> DpResult<()> {
        if net.kind == NetworkType::Transparent {
            let containers: Vec<_> =
                eps.iter().filter(|(ep, ns)| !ns.is_empty() && ep.vm_device.is_none()).cloned().collect();
            return self.inside.network_changed(net, &containers);
        }
        let eps: Vec<&EndpointRecord> = eps.iter().map(|(ep, _)| ep).collect();
        let sets = sets_of(net)?;
        let updates = eps.iter().map(|ep| Ok((ep.id, program_of(ep, net, &sets)?))).collect::<DpResult<Vec<_>>>()?;
        self.apply(updates, &sets.contents, true)
    }

    /// Removes what endpoint `id` has in the tables; nothing when it has nothing.
    pub fn remove(&self, id: Uuid) -> DpResult<()> {
        self.inside.remove(id)?;
        self.apply(vec![(id, None)], &BTreeMap::new(), false)
    }

    /// Moves the model and the kernel to `updates` (each endpoint's new
    /// program, or none), with `contents` the leaves of the sets of the
    /// network they are on: one transaction, or nothing on failure. Only a
    /// network's own change (`authoritative`) changes the members of a set
    /// in the kernel; an endpoint's takes them for the sets it adds, so an
    /// endpoint change that read its network just before a set changed
    /// cannot undo that change.
    fn apply(
        &self,
        updates: Vec<(Uuid, Option<Program>)>,
        contents: &BTreeMap<String, Vec<IpNet>>,
        authoritative: bool,
    ) -> DpResult<()> {
        let mut model = self.model();
        let updates: Vec<_> = updates.into_iter().filter(|(id, p)| model.programs.get(id) != p.as_ref()).collect();
        // The users each touched set gains or loses.
        let mut delta: BTreeMap<&str, isize> = BTreeMap::new();
        for (id, new) in &updates {
            for s in model.programs.get(id).iter().flat_map(|p| &p.sets) {
                *delta.entry(s).or_default() -= 1;
            }
            for s in new.iter().flat_map(|p| &p.sets) {
                *delta.entry(s).or_default() += 1;
            }
        }
        let touched: BTreeSet<&str> = delta
            .keys()
            .copied()
            .chain(contents.keys().map(|k| k.as_str()).filter(|k| authoritative && model.sets.contains_key(*k)))
            .collect();
        let mut next: BTreeMap<String, Option<SetState>> = BTreeMap::new();
        for name in touched {
            let old = model.sets.get(name);
            let users = (old.map_or(0, |o| o.users) as isize + delta.get(name).copied().unwrap_or(0)).max(0) as usize;
            let (given, kept) = (contents.get(name), old.map(|o| &o.leaves));
            let state = match (users, if authoritative { given.or(kept) } else { kept.or(given) }) {
                (0, _) => None,
                (_, Some(leaves)) => Some(SetState { leaves: leaves.clone(), users }),
                (_, None) => {
                    return Err(invalid(format!("IP set {name}"))("it is named by a rule but not known".into()))
                }
            };
            next.insert(name.to_string(), state);
        }
        if updates.is_empty() && next.iter().all(|(n, s)| model.sets.get(n) == s.as_ref()) {
            return Ok(());
        }
        let remaining = model.programs.len() as isize
            + updates
                .iter()
                .map(|(id, p)| p.is_some() as isize - model.programs.contains_key(id) as isize)
                .sum::<isize>();
        let script = if remaining == 0 {
            if model.loaded {
                empty_script()
            } else {
                String::new()
            }
        } else if !model.loaded {
            let mut programs = model.programs.clone();
            let mut sets = model.sets.clone();
            commit(&mut programs, &mut sets, updates.clone(), next.clone());
            load_script(programs.values(), sets.iter().map(|(n, s)| (n.as_str(), &s.leaves[..])))
        } else {
            let mut s = String::new();
            for (name, state) in &next {
                match (model.sets.get(name), state) {
                    (None, Some(new)) => sets::declare(&mut s, name, &new.leaves),
                    (Some(old), Some(new)) if old.leaves != new.leaves => {
                        sets::change(&mut s, name, &old.leaves, &new.leaves)
                    }
                    _ => {}
                }
            }
            for (id, new) in &updates {
                match (new, model.programs.get(id)) {
                    (Some(new), old) => s += &set_script(new, old),
                    (None, Some(old)) => s += &remove_script(old),
                    (None, None) => {}
                }
            }
            for (name, state) in &next {
                if state.is_none() && model.sets.contains_key(name) {
                    sets::delete(&mut s, name);
                }
            }
            s
        };
        if !script.is_empty() {
            self.dp.pol_apply(&script)?;
        }
        model.loaded = remaining > 0;
        let Model { programs, sets, .. } = &mut *model;
        commit(programs, sets, updates, next);
        Ok(())
    }

    /// Fills the model without touching the kernel (start-up, before
    /// [`Policies::reload`]); `netns` as for [`Policies::set`].
    pub fn preload(&self, ep: &EndpointRecord, net: &NetworkRecord, netns: Option<&str>) {
        if net.kind == NetworkType::Transparent {
            match netns.filter(|p| !p.is_empty() && ep.vm_device.is_none()) {
                Some(path) => self.inside.preload(ep, net, path),
                None => self.inside.preload_member(ep, net),
            }
            return;
        }
        let program = sets_of(net).and_then(|sets| Ok((program_of(ep, net, &sets)?, sets)));
        match program {
            Ok((Some(p), sets)) => {
                let mut model = self.model();
                for name in &p.sets {
                    let leaves = sets.contents.get(name).cloned().unwrap_or_default();
                    model.sets.entry(name.clone()).or_insert(SetState { leaves, users: 0 }).users += 1;
                }
                model.programs.insert(ep.id, p);
            }
            Ok((None, _)) => {}
            Err(e) => tracing::error!("{e}: its ACLs are not enforced"),
        }
    }

    /// Replaces the table with the model (none when no endpoint has ACLs),
    /// and the Transparent containers' tables with theirs.
    pub fn reload(&self) -> DpResult<()> {
        let mut model = self.model();
        self.load(&mut model)?;
        self.inside.reload()
    }

    fn load(&self, model: &mut Model) -> DpResult<()> {
        if model.programs.is_empty() {
            self.dp.pol_apply(&empty_script())?;
            model.loaded = false;
        } else {
            let sets = model.sets.iter().map(|(n, s)| (n.as_str(), &s.leaves[..]));
            self.dp.pol_apply(&load_script(model.programs.values(), sets))?;
            model.loaded = true;
        }
        Ok(())
    }

    /// Whether the table was there; restores it when someone deleted it.
    pub fn check_and_repair(&self) -> DpResult<bool> {
        let mut model = self.model();
        if !model.loaded || self.dp.pol_exists(cnet_dataplane::nftobj::Family::Inet)? {
            return Ok(false);
        }
        tracing::warn!("the nftables table inet {TABLE} was deleted by someone else: restoring it");
        self.load(&mut model)?;
        Ok(true)
    }
}

/// Deletes the table (creating it first, so that it succeeds when it is gone).
fn empty_script() -> String {
    format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
}

fn commit(
    programs: &mut BTreeMap<Uuid, Program>,
    sets: &mut BTreeMap<String, SetState>,
    updates: Vec<(Uuid, Option<Program>)>,
    next: BTreeMap<String, Option<SetState>>,
) {
    for (id, p) in updates {
        match p {
            Some(p) => programs.insert(id, p),
            None => programs.remove(&id),
        };
    }
    for (name, s) in next {
        match s {
            Some(s) => sets.insert(name, s),
            None => sets.remove(&name),
        };
    }
}
