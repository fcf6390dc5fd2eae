//! Endpoint policies in the kernel: the nftables table `inet cnetpol`, of
//! which this module is the one owner, and ([`qos`]) the tc token buckets
//! of QoS. Drivers do not program policies; the service hands this module
//! each attached endpoint with its switch.
//!
//! The table's base chains dispatch through verdict maps keyed by
//! (switch, endpoint address): `out4`/`out6` at prerouting −150 (before
//! any DNAT, so an Out rule sees the destination the endpoint chose),
//! `in4`/`in6` in forward and output (after DNAT, so a published port is
//! matched on the endpoint's own port). Each endpoint with ACLs has two
//! chains of its own; one change rewrites only those, so its cost does not
//! grow with the number of endpoints, and a packet's cost is one lookup
//! plus that endpoint's rules, for the first packet of a flow only.
//!
//! Invariants:
//! - The model ([`Policies`]) holds every endpoint's compiled program;
//!   every kernel change updates model and kernel under one lock, in one
//!   nft transaction (a failed change leaves both as they were).
//! - Established and related flows are accepted before any dispatch:
//!   replies of an allowed flow pass, and a policy change never cuts a
//!   connection that was already open.
//! - Neighbour discovery always passes (an ACL cannot break IPv6 on the link).
//! - The table exists while some endpoint has ACLs (the last one's removal
//!   deletes it), and is restored whole
//!   from the model when someone deletes it ([`Policies::check_and_repair`]).

pub mod acl;
pub mod qos;
pub mod spoof;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use cnet_model::acl::AclDirection;
use cnet_model::endpoint::acls_in;
use uuid::Uuid;

use crate::dataplane::{Dataplane, DataplaneError, DpResult};
use crate::state::{EndpointRecord, NetworkRecord};
use acl::Program;

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

#[derive(Default)]
struct Model {
    programs: BTreeMap<Uuid, Program>,
    /// Whether the table is in the kernel.
    loaded: bool,
}

pub struct Policies {
    dp: Arc<dyn Dataplane>,
    model: Mutex<Model>,
}

/// The compiled policies of `ep` on `net`, or `None` when it has none.
pub fn program_of(ep: &EndpointRecord, net: &NetworkRecord) -> DpResult<Option<Program>> {
    let invalid = |reason: String| DataplaneError::Invalid { what: format!("endpoint {}", ep.display_name()), reason };
    let rules = acls_in(&ep.policies).map(|a| a.rule()).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
    let isolated = ep.flags & cnet_model::endpoint::DISABLE_ICC != 0;
    if rules.is_empty() && !isolated {
        return Ok(None);
    }
    let ips: Vec<_> = ep.ips().collect();
    acl::compile(ep.id, &net.bridge, &ips, &rules, isolated).map(Some).map_err(invalid)
}

impl Policies {
    pub fn new(dp: Arc<dyn Dataplane>) -> Self {
        Policies { dp, model: Mutex::new(Model::default()) }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Programs what `ep` (attached, on `net`) has now; removes what it had
    /// when it has no policies left.
    pub fn set(&self, ep: &EndpointRecord, net: &NetworkRecord) -> DpResult<()> {
        let Some(new) = program_of(ep, net)? else { return self.remove(ep.id) };
        let mut model = self.model();
        if !model.loaded {
            let mut all = model.programs.clone();
            all.insert(ep.id, new.clone());
            self.dp.pol_apply(&load_script(all.values()))?;
            model.loaded = true;
        } else {
            self.dp.pol_apply(&set_script(&new, model.programs.get(&ep.id)))?;
        }
        model.programs.insert(ep.id, new);
        Ok(())
    }

    /// Removes what endpoint `id` has in the table; nothing when it has nothing.
    pub fn remove(&self, id: Uuid) -> DpResult<()> {
        let mut model = self.model();
        let Some(old) = model.programs.remove(&id) else { return Ok(()) };
        let done = if !model.loaded {
            Ok(())
        } else if model.programs.is_empty() {
            // The last one: the table goes.
            self.load(&mut model)
        } else {
            self.dp.pol_apply(&remove_script(&old))
        };
        if done.is_err() {
            model.programs.insert(id, old);
        }
        done
    }

    /// Fills the model without touching the kernel (start-up, before [`Policies::reload`]).
    pub fn preload(&self, ep: &EndpointRecord, net: &NetworkRecord) {
        match program_of(ep, net) {
            Ok(Some(p)) => {
                self.model().programs.insert(ep.id, p);
            }
            Ok(None) => {}
            Err(e) => tracing::error!("{e}: its ACLs are not enforced"),
        }
    }

    /// Replaces the table with the model (none when no endpoint has ACLs).
    pub fn reload(&self) -> DpResult<()> {
        let mut model = self.model();
        self.load(&mut model)
    }

    fn load(&self, model: &mut Model) -> DpResult<()> {
        if model.programs.is_empty() {
            self.dp.pol_apply(&format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"))?;
            model.loaded = false;
        } else {
            self.dp.pol_apply(&load_script(model.programs.values()))?;
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

/// Replaces the table with the skeleton and `programs`, in one transaction.
fn load_script<'a>(programs: impl Iterator<Item = &'a Program>) -> String {
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n{SKELETON}");
    for p in programs {
        s += &set_script(p, None);
    }
    s
}

/// `key` or `key : verdict`.
fn element(key: &str, verdict: &Option<String>) -> String {
    match verdict {
        Some(v) => format!("{key} : {v}"),
        None => key.to_string(),
    }
}

/// Brings endpoint `new.tag`'s chains and elements from `old` to `new`.
pub fn set_script(new: &Program, old: Option<&Program>) -> String {
    let mut s = String::new();
    if new.has_acls {
        for dir in [AclDirection::In, AclDirection::Out] {
            let _ = writeln!(s, "add chain inet {TABLE} {}", new.chain(dir));
            let _ = writeln!(s, "flush chain inet {TABLE} {}", new.chain(dir));
        }
        let _ = writeln!(s, "add counter inet {TABLE} {}", new.counter());
        for (dir, rules) in [(AclDirection::In, &new.rules_in), (AclDirection::Out, &new.rules_out)] {
            for r in rules {
                let _ = writeln!(s, "add rule inet {TABLE} {} {r}", new.chain(dir));
            }
        }
    }
    let wanted = new.dispatch();
    let gone: Vec<_> = old
        .map(|o| o.dispatch())
        .unwrap_or_default()
        .into_iter()
        .filter(|(m, k, _)| !wanted.iter().any(|(wm, wk, _)| wm == m && wk == k))
        .collect();
    remove_elements(&mut s, &gone);
    for (set, key, verdict) in &wanted {
        let _ = writeln!(s, "add element inet {TABLE} {set} {{ {} }}", element(key, verdict));
    }
    if let Some(old) = old.filter(|o| o.has_acls && !new.has_acls) {
        remove_chains(&mut s, old);
    }
    s
}

/// Deletes `elems`; each is added first, so that deleting one that is gone succeeds.
fn remove_elements(s: &mut String, elems: &[(&'static str, String, Option<String>)]) {
    for (set, key, verdict) in elems {
        let _ = writeln!(s, "add element inet {TABLE} {set} {{ {} }}", element(key, verdict));
        let _ = writeln!(s, "delete element inet {TABLE} {set} {{ {key} }}");
    }
}

/// Deletes `old`'s chains and counter (nothing refers to them any more).
fn remove_chains(s: &mut String, old: &Program) {
    for dir in [AclDirection::In, AclDirection::Out] {
        let _ = writeln!(s, "add chain inet {TABLE} {}", old.chain(dir));
        let _ = writeln!(s, "flush chain inet {TABLE} {}", old.chain(dir));
        let _ = writeln!(s, "delete chain inet {TABLE} {}", old.chain(dir));
    }
    let _ = writeln!(s, "add counter inet {TABLE} {}", old.counter());
    let _ = writeln!(s, "delete counter inet {TABLE} {}", old.counter());
}

/// Removes endpoint `old.tag`'s elements, chains and counter.
pub fn remove_script(old: &Program) -> String {
    let mut s = String::new();
    remove_elements(&mut s, &old.dispatch());
    if old.has_acls {
        remove_chains(&mut s, old);
    }
    s
}
