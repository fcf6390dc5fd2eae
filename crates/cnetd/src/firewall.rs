//! The firewall: one private nftables table `inet cnet` whose chains never
//! change; networks and endpoints only add and remove set and map elements.
//!
//! Invariants:
//! - [`Firewall`] holds the element model (what should be in each set and
//!   map); every kernel change updates model and kernel under one lock, in one
//!   atomic `nft` transaction, so a full re-render always matches the model.
//! - A full render replaces the table atomically (`add; delete; define`):
//!   packets see the old table or the new one, never none, and conntrack keeps
//!   the NAT bindings of existing connections.
//! - Deleting an element that is already gone succeeds (add-then-delete).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Mutex;

use cnet_dataplane::{nft, DataplaneError};
use cnet_model::{Endpoint, Network, NetworkType};
use uuid::Uuid;

pub const TABLE: &str = "cnet";

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
  chain martians { type filter hook prerouting priority -300; policy accept;
    iifname != "lo" ip daddr 127.0.0.0/8 drop
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
    ct status dnat ip saddr 127.0.0.0/8 masquerade
    ct status dnat ip saddr @masq4 ip daddr @masq4 masquerade
    ct status dnat ip6 saddr @masq6 ip6 daddr @masq6 masquerade
    ip saddr @masq4 oifname != @bridges masquerade fully-random
    ip6 saddr @masq6 oifname != @bridges masquerade fully-random
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

/// One element of a set or map, written as nft writes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Elem {
    pub set: &'static str,
    /// The key (what `delete element` takes).
    pub key: String,
    /// The mapped value, for maps.
    pub value: Option<String>,
}

impl Elem {
    fn text(&self) -> String {
        match &self.value {
            Some(v) => format!("{} : {}", self.key, v),
            None => self.key.clone(),
        }
    }
}

/// The elements a network contributes.
pub fn network_elems(net: &Network, bridge: &str) -> Vec<Elem> {
    // With br_netfilter loaded (the default on many hosts), frames bridged
    // between two ports of one network pass the inet forward hook with the
    // bridge as both input and output: `intra` lets them through.
    let mut out = vec![
        Elem { set: "bridges", key: format!("\"{bridge}\""), value: None },
        Elem { set: "intra", key: format!("\"{bridge}\" . \"{bridge}\""), value: None },
    ];
    if net.r#type != NetworkType::Nat {
        out.push(Elem { set: "isolated", key: format!("\"{bridge}\""), value: None });
    } else {
        for s in net.subnets() {
            let set = if s.ip_address_prefix.addr().is_ipv4() { "masq4" } else { "masq6" };
            out.push(Elem { set, key: s.ip_address_prefix.to_string(), value: None });
        }
    }
    out
}

/// The elements an attached endpoint contributes: its port mappings, one per
/// port and address family.
pub fn endpoint_elems(ep: &Endpoint) -> Vec<Elem> {
    let mut out = Vec::new();
    for m in ep.port_mappings() {
        for c in &ep.ip_configurations {
            let v4 = c.ip_address.is_ipv4();
            if let Some(vip) = m.vip {
                if vip.is_ipv4() != v4 {
                    continue;
                }
            }
            for (ext, int) in m.ports() {
                let key = format!("{} . {ext}", m.protocol);
                let (set, key) = match (m.vip, v4) {
                    (Some(vip), true) => ("pm4vip", format!("{vip} . {key}")),
                    (Some(vip), false) => ("pm6vip", format!("{vip} . {key}")),
                    (None, true) => ("pm4", key),
                    (None, false) => ("pm6", key),
                };
                out.push(Elem { set, key, value: Some(format!("{} . {int}", c.ip_address)) });
            }
        }
    }
    out
}

#[derive(Default)]
struct Model {
    owners: BTreeMap<Uuid, Vec<Elem>>,
    /// `nft -t list table` right after our last full render: the skeleton as
    /// the kernel holds it (terse listings leave out elements).
    baseline: Option<String>,
}

#[derive(Default)]
pub struct Firewall {
    model: Mutex<Model>,
}

fn add_lines(script: &mut String, elems: &[Elem]) {
    for e in elems {
        let _ = writeln!(script, "add element inet {TABLE} {} {{ {} }}", e.set, e.text());
    }
}

fn delete_lines(script: &mut String, elems: &[Elem]) {
    // Add first so that deleting an element that is already gone succeeds.
    add_lines(script, elems);
    for e in elems {
        let _ = writeln!(script, "delete element inet {TABLE} {} {{ {} }}", e.set, e.key);
    }
}

impl Firewall {
    /// Sets what `owner` (a network or endpoint ID) contributes, replacing what
    /// it had, in one transaction. Re-renders the whole table if the
    /// incremental change fails (the table was deleted or flushed).
    pub fn set(&self, owner: Uuid, elems: Vec<Elem>) -> Result<(), DataplaneError> {
        let mut model = self.model.lock().unwrap();
        let old = model.owners.get(&owner).cloned().unwrap_or_default();
        if old == elems {
            return Ok(());
        }
        if model.baseline.is_none() {
            // No table loaded yet (first network, or after the last one went):
            // load the whole table with this owner's elements.
            set_owner(&mut model, owner, elems);
            return render(&mut model);
        }
        let gone: Vec<Elem> = old.iter().filter(|e| !elems.contains(e)).cloned().collect();
        let new: Vec<Elem> = elems.iter().filter(|e| !old.contains(e)).cloned().collect();
        let mut script = String::new();
        delete_lines(&mut script, &gone);
        add_lines(&mut script, &new);
        let result = nft::apply(&script);
        match result {
            Ok(()) => {
                set_owner(&mut model, owner, elems);
                Ok(())
            }
            Err(e) if table_missing(&e) => {
                set_owner(&mut model, owner, elems);
                render(&mut model)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes what `owner` contributes.
    pub fn remove(&self, owner: Uuid) -> Result<(), DataplaneError> {
        self.set(owner, Vec::new())
    }

    /// Loads the model without touching the kernel (start-up, before [`Firewall::render`]).
    pub fn preload(&self, owner: Uuid, elems: Vec<Elem>) {
        set_owner(&mut self.model.lock().unwrap(), owner, elems);
    }

    /// Replaces the whole table with the skeleton and every element of the model.
    pub fn render(&self) -> Result<(), DataplaneError> {
        render(&mut self.model.lock().unwrap())
    }

    /// Removes the table when nothing contributes to it any more. Checked
    /// under the model's lock, so a concurrent [`Firewall::set`] either sees
    /// no table and loads it, or keeps this from deleting it.
    pub fn delete_table_if_unused(&self) -> Result<(), DataplaneError> {
        let mut model = self.model.lock().unwrap();
        if !model.owners.is_empty() {
            return Ok(());
        }
        model.baseline = None;
        nft::apply(&format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"))
    }

    /// Whether the table is as we left it; re-renders it when someone deleted,
    /// flushed or edited it. Returns whether a repair was made.
    pub fn check_and_repair(&self) -> Result<bool, DataplaneError> {
        let mut model = self.model.lock().unwrap();
        let Some(baseline) = model.baseline.clone() else { return Ok(false) };
        if terse_listing()? == Some(baseline) {
            return Ok(false);
        }
        tracing::warn!("the nftables table inet {TABLE} was changed by someone else: restoring it");
        render(&mut model)?;
        Ok(true)
    }

    /// Elements of one owner that the kernel lacks.
    pub fn owner_drift(&self, owner: Uuid) -> Result<Vec<String>, DataplaneError> {
        let want = self.model.lock().unwrap().owners.get(&owner).cloned().unwrap_or_default();
        if want.is_empty() {
            return Ok(vec![]);
        }
        let Some(dump) = nft::table_json("inet", TABLE)? else {
            return Ok(vec![format!("nftables table inet {TABLE} is missing")]);
        };
        let actual = elements_of(&dump);
        Ok(want
            .iter()
            .filter(|e| !actual.get(e.set).is_some_and(|have| have.contains(&e.text())))
            .map(|e| format!("nftables {}: element {} is missing", e.set, e.text()))
            .collect())
    }

    /// Differences between the model and the kernel, in words.
    pub fn drift(&self) -> Result<Vec<String>, DataplaneError> {
        let model = self.model.lock().unwrap();
        let Some(dump) = nft::table_json("inet", TABLE)? else {
            return Ok(if model.baseline.is_some() {
                vec![format!("nftables table inet {TABLE} is missing")]
            } else {
                vec![]
            });
        };
        let mut out = Vec::new();
        if let Some(baseline) = &model.baseline {
            if terse_listing()?.as_ref() != Some(baseline) {
                out.push(format!("nftables table inet {TABLE}: chains or rules differ from what cnetd loaded"));
            }
        }
        let actual = elements_of(&dump);
        let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for e in model.owners.values().flatten() {
            expected.entry(e.set).or_default().push(e.text());
        }
        for (set, want) in &expected {
            let have = actual.get(*set).cloned().unwrap_or_default();
            for w in want.iter().filter(|w| !have.contains(w)) {
                out.push(format!("nftables {set}: element {w} is missing"));
            }
        }
        for (set, have) in &actual {
            let want = expected.get(set.as_str()).cloned().unwrap_or_default();
            for h in have.iter().filter(|h| !want.contains(h)) {
                out.push(format!("nftables {set}: element {h} is not owned by any object"));
            }
        }
        Ok(out)
    }
}

fn set_owner(model: &mut Model, owner: Uuid, elems: Vec<Elem>) {
    if elems.is_empty() {
        model.owners.remove(&owner);
    } else {
        model.owners.insert(owner, elems);
    }
}

fn render(model: &mut Model) -> Result<(), DataplaneError> {
    let mut script = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n{SKELETON}");
    let all: Vec<Elem> = model.owners.values().flatten().cloned().collect();
    add_lines(&mut script, &all);
    nft::apply(&script)?;
    model.baseline = terse_listing()?;
    Ok(())
}

fn table_missing(e: &DataplaneError) -> bool {
    matches!(e, DataplaneError::Failed { stderr, .. } if stderr.contains("No such file or directory"))
}

fn terse_listing() -> Result<Option<String>, DataplaneError> {
    nft::table_terse("inet", TABLE)
}

/// Set and map elements of an `nft -j list table` dump, written as [`Elem::text`] writes them.
fn elements_of(dump: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    fn atom(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) if s.parse::<IpAddr>().is_ok() => s.clone(),
            serde_json::Value::String(s) => {
                if ["tcp", "udp", "sctp"].contains(&s.as_str()) {
                    s.clone()
                } else {
                    format!("\"{s}\"")
                }
            }
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Object(o) if o.contains_key("concat") => {
                o["concat"].as_array().map(|a| a.iter().map(atom).collect::<Vec<_>>().join(" . ")).unwrap_or_default()
            }
            serde_json::Value::Object(o) if o.contains_key("prefix") => {
                format!("{}/{}", o["prefix"]["addr"].as_str().unwrap_or(""), o["prefix"]["len"])
            }
            other => other.to_string(),
        }
    }
    let mut out = BTreeMap::new();
    for item in dump["nftables"].as_array().into_iter().flatten() {
        let obj = if item.get("set").is_some() { &item["set"] } else { &item["map"] };
        let Some(name) = obj["name"].as_str() else { continue };
        let elems: Vec<String> = obj["elem"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| match e.as_array() {
                Some(pair) if pair.len() == 2 => format!("{} : {}", atom(&pair[0]), atom(&pair[1])),
                _ => atom(e),
            })
            .collect();
        out.insert(name.to_string(), elems);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_json_elements_read_back_as_we_write_them() {
        let dump = serde_json::json!({"nftables": [
            {"map": {"name": "pm4", "elem": [[{"concat": ["tcp", 8080]}, {"concat": ["10.0.0.2", 80]}]]}},
            {"set": {"name": "masq4", "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}]}},
            {"set": {"name": "bridges", "elem": ["cnb1"]}}
        ]});
        let got = elements_of(&dump);
        assert_eq!(got["pm4"], vec!["tcp . 8080 : 10.0.0.2 . 80"]);
        assert_eq!(got["masq4"], vec!["10.0.0.0/24"]);
        assert_eq!(got["bridges"], vec!["\"cnb1\""]);
    }

    #[test]
    fn a_port_range_on_a_dual_stack_endpoint_maps_every_port_in_both_families() {
        let ep: Endpoint = serde_json::from_value(serde_json::json!({
            "HostComputeNetwork": "n",
            "IpConfigurations": [{"IpAddress": "10.0.0.2", "PrefixLength": 24}, {"IpAddress": "fd00::2", "PrefixLength": 64}],
            "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080, "PortCount": 2}}]
        }))
        .unwrap();
        let texts: Vec<String> = endpoint_elems(&ep).iter().map(|e| format!("{} {}", e.set, e.text())).collect();
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
}
