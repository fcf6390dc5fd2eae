//! The real [`Dataplane`]: `cnet-dataplane` in cnetd's own namespace, with
//! the reaper deleting released links in the background, and conntrack
//! entries forgotten in the background too: a ctnetlink dump walks the
//! whole (host-wide) conntrack hash table — 262,144 buckets, 12 ms here,
//! whatever the number of entries — so the request path only queues its
//! matches; the thread gathers them for [`GATHER`] and one dump serves them
//! all (at most ~20 dumps a second under churn), and no dump is made while
//! cnetd's namespace tracks no connection at all. [`Dataplane::settle`]
//! waits for both.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};

use cnet_dataplane::reaper::Reaper;
use cnet_dataplane::{conntrack, link, netns, nft, sysctl, IfName};

use super::{
    Addr, BridgeSpec, Dataplane, DpResult, FlowMatch, FwElem, HostRoute, Inside, LinkInfo, Mac, MacvlanSpec,
    MacvtapSpec, PortFlags, Route, Rule, TapSpec, VethSpec,
};

/// cnet's nftables table (`inet cnet`).
pub const TABLE: &str = "cnet";

pub struct Kernel {
    reaper: Reaper,
    forgetter: Arc<Forgetter>,
}

impl Kernel {
    /// Starts the reaper and the conntrack forgetter in the calling thread's
    /// namespace (cnetd's own).
    pub fn start() -> Self {
        let forgetter = Arc::new(Forgetter::default());
        let worker = forgetter.clone();
        std::thread::Builder::new()
            .name("cnet-conntrack".into())
            .spawn(move || worker.run())
            .expect("cannot start the conntrack thread");
        Kernel { reaper: Reaper::start(), forgetter }
    }
}

/// How long the conntrack thread gathers matches before one dump.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// Conntrack matches waiting for the background dump.
#[derive(Default)]
struct Forgetter {
    /// Queued matches, and whether a batch is being worked on.
    queue: Mutex<(Vec<FlowMatch>, bool)>,
    changed: Condvar,
}

impl Forgetter {
    fn push(&self, flows: &[FlowMatch]) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).0.extend_from_slice(flows);
        self.changed.notify_all();
    }

    /// Waits until every match queued so far has been worked on.
    fn settle(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while !q.0.is_empty() || q.1 {
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn run(&self) {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                while q.0.is_empty() {
                    q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                q.1 = true;
            }
            std::thread::sleep(GATHER);
            let batch = std::mem::take(&mut self.queue.lock().unwrap_or_else(|e| e.into_inner()).0);
            // `nf_conntrack_count` is this namespace's number of entries.
            let tracked = sysctl::get("net/netfilter/nf_conntrack_count").is_none_or(|n| n != "0");
            if tracked {
                if let Err(e) = conntrack::forget(&batch) {
                    tracing::warn!("could not delete conntrack entries {batch:?}: {e}");
                }
            }
            self.queue.lock().unwrap_or_else(|e| e.into_inner()).1 = false;
            self.changed.notify_all();
        }
    }
}

fn ifname(name: &str) -> DpResult<IfName> {
    IfName::new(name)
}

fn add_lines(script: &mut String, elems: &[FwElem]) {
    for e in elems {
        let _ = writeln!(script, "add element inet {TABLE} {} {{ {} }}", e.set, e.text());
    }
}

impl Dataplane for Kernel {
    fn netns_exists(&self, path: &str) -> bool {
        netns::exists(path)
    }
    fn netns_create(&self, name: &str) -> DpResult<String> {
        netns::create(name)
    }
    fn netns_delete(&self, name: &str) -> DpResult<()> {
        netns::delete(name)
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> DpResult<()> {
        link::ensure_bridge(spec)
    }
    fn delete_link(&self, name: &str) -> DpResult<()> {
        link::delete_link(None, name)
    }
    fn create_macvtap(&self, spec: &MacvtapSpec) -> DpResult<String> {
        link::create_macvtap(spec)
    }
    fn ensure_vxlan(&self, spec: &cnet_dataplane::netlink::overlay::VxlanSpec) -> DpResult<()> {
        link::ensure_vxlan(spec)
    }
    fn overlay_entries(&self, dev: &str) -> DpResult<super::OverlayEntries> {
        let mut nl = cnet_dataplane::netlink::Rtnl::open()?;
        Ok(super::OverlayEntries {
            neighbours: nl.permanent_neighbours(dev)?.into_iter().collect(),
            fdb: nl.fdb(dev)?.into_iter().collect(),
            routes: nl.overlay_routes(dev)?.into_iter().collect(),
        })
    }
    fn apply_overlay(&self, dev: &str, op: &super::OverlayOp) -> DpResult<()> {
        use super::OverlayOp::*;
        let mut nl = cnet_dataplane::netlink::Rtnl::open()?;
        match *op {
            AddNeighbour(ip, mac) => nl.replace_neighbour(dev, ip, mac),
            AddFdb(mac, dst) => nl.replace_fdb(dev, mac, dst),
            AddRoute(dst, via) => nl.replace_overlay_route(dev, dst, via),
            DeleteRoute(dst, via) => nl.delete_overlay_route(dev, dst, via),
            DeleteFdb(mac, dst) => nl.delete_fdb(dev, mac, dst),
            DeleteNeighbour(ip) => nl.delete_neighbour(dev, ip),
        }
    }
    fn create_tap(&self, spec: &TapSpec, mtu: u32, bridge: &str, port: PortFlags) -> DpResult<()> {
        link::create_tap(spec, mtu, &ifname(bridge)?, port)
    }
    fn create_veth(&self, spec: &VethSpec) -> DpResult<()> {
        link::create_veth(spec)
    }
    fn enslave(&self, name: &str, bridge: &str, port: PortFlags) -> DpResult<()> {
        link::enslave(&ifname(name)?, &ifname(bridge)?, port)
    }
    fn create_macvlan(&self, spec: &MacvlanSpec) -> DpResult<()> {
        link::create_macvlan(spec)
    }
    fn ensure_macvlan(&self, name: &str, parent: &str, mac: Mac, mtu: u32) -> DpResult<()> {
        link::ensure_macvlan(&ifname(name)?, &ifname(parent)?, mac, mtu)
    }
    fn link_vlan(&self, netns_path: Option<&str>, ifname: &str) -> DpResult<Option<u16>> {
        rtnl_at(netns_path)?.vlan(ifname)
    }
    fn set_link_vlan(&self, netns_path: Option<&str>, ifname: &str, vid: u16) -> DpResult<()> {
        rtnl_at(netns_path)?.set_vlan(ifname, vid)
    }
    fn release_inside(&self, netns_path: &str, ifname: &str, mac: Mac) -> DpResult<()> {
        self.reaper.delete_inside(netns_path, ifname, mac)
    }
    fn configure_inside(&self, netns_path: &str, ifname: &str, addrs: &[Addr], routes: &[Route]) -> DpResult<()> {
        link::configure_inside(netns_path, ifname, addrs, routes)
    }
    fn unconfigure_inside(&self, netns_path: &str, ifname: &str, addrs: &[Addr]) -> DpResult<()> {
        for a in addrs {
            link::delete_address(Some(netns_path), ifname, *a)?;
        }
        Ok(())
    }
    fn route_replace(&self, r: &HostRoute) -> DpResult<()> {
        link::replace_route(r)
    }
    fn route_delete(&self, r: &HostRoute) -> DpResult<()> {
        link::delete_route(r)
    }
    fn routes(&self, dev: &str, table: u32) -> DpResult<Vec<HostRoute>> {
        link::routes_in(&ifname(dev)?, table)
    }
    fn proxy_add(&self, dev: &str, ip: IpAddr) -> DpResult<()> {
        link::add_proxy_neighbour(dev, ip)
    }
    fn proxy_delete(&self, dev: &str, ip: IpAddr) -> DpResult<()> {
        link::delete_proxy_neighbour(dev, ip)
    }
    fn proxies(&self, dev: &str) -> DpResult<Vec<IpAddr>> {
        link::proxy_neighbours(dev)
    }
    fn rule_ensure(&self, rule: &Rule) -> DpResult<()> {
        link::ensure_rule(rule)
    }
    fn rule_delete(&self, rule: &Rule) -> DpResult<()> {
        link::delete_rule(rule)
    }
    fn rules(&self) -> DpResult<Vec<Rule>> {
        link::rules()
    }
    fn release_link(&self, name: &str) -> DpResult<()> {
        self.reaper.delete(name)
    }
    fn settle(&self) {
        self.reaper.settle();
        self.forgetter.settle();
    }
    fn releasing(&self) -> bool {
        self.reaper.pending()
    }
    fn links(&self) -> DpResult<Vec<LinkInfo>> {
        link::links(None)
    }
    fn link(&self, name: &str) -> DpResult<Option<LinkInfo>> {
        link::link(None, name)
    }
    fn change_routes_inside(&self, netns_path: &str, ifname: &str, gone: &[Route], new: &[Route]) -> DpResult<()> {
        link::change_routes_inside(netns_path, ifname, gone, new)
    }
    fn set_mtu(&self, netns: Option<&str>, name: &str, mtu: u32) -> DpResult<()> {
        link::set_mtu(netns, name, mtu)
    }
    fn link_stats(&self, netns: Option<&str>, name: &str) -> DpResult<Option<cnet_dataplane::types::LinkStats>> {
        link::link_stats(netns, name)
    }
    fn addresses(&self, dev: &str) -> DpResult<Vec<Addr>> {
        link::addresses(None, dev)
    }
    fn delete_address(&self, dev: &str, addr: Addr) -> DpResult<()> {
        link::delete_address(None, dev, addr)
    }
    fn inside(&self, netns_path: &str, ifname: &str) -> DpResult<Option<Inside>> {
        link::inside(netns_path, ifname)
    }

    fn sysctl_set(&self, key: &str, value: &str) -> DpResult<()> {
        sysctl::set(key, value)
    }
    fn sysctl_get(&self, key: &str) -> Option<String> {
        sysctl::get(key)
    }

    fn fw_load(&self, skeleton: &str, elems: &[FwElem]) -> DpResult<()> {
        // `add; delete; define` replaces the table in one transaction:
        // packets see the old table or the new one, never none.
        let mut script = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n{skeleton}");
        add_lines(&mut script, elems);
        nft::apply(&script)
    }
    fn fw_update(&self, gone: &[FwElem], new: &[FwElem]) -> DpResult<()> {
        let mut script = String::new();
        // Add first, so that deleting an element that is already gone succeeds.
        add_lines(&mut script, gone);
        for e in gone {
            let _ = writeln!(script, "delete element inet {TABLE} {} {{ {} }}", e.set, e.key);
        }
        add_lines(&mut script, new);
        nft::apply(&script)
    }
    fn fw_delete(&self) -> DpResult<()> {
        nft::apply(&format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"))
    }
    fn fw_has_address(&self, set: &'static str, ip: IpAddr) -> DpResult<bool> {
        match nft::has_address(TABLE, set, ip) {
            Err(e) if e.kind() == cnet_dataplane::ErrorKind::NotFound => Ok(false),
            other => other,
        }
    }
    fn fw_listing(&self) -> DpResult<Option<String>> {
        nft::table_terse("inet", TABLE)
    }
    fn fw_elements(&self) -> DpResult<Option<BTreeMap<String, Vec<String>>>> {
        Ok(nft::table_json("inet", TABLE)?.map(|dump| elements_of(&dump)))
    }
    fn pol_apply(&self, script: &str) -> DpResult<()> {
        policy_script(script)
    }
    fn pol_exists(&self, family: cnet_dataplane::nftobj::Family) -> DpResult<bool> {
        let table = match family {
            cnet_dataplane::nftobj::Family::Netdev => crate::policy::spoof::EGRESS_TABLE,
            _ => crate::policy::TABLE,
        };
        cnet_dataplane::nftobj::table_exists(family, table)
    }
    fn guard_apply(&self, netns: Option<&str>, script: &str) -> DpResult<()> {
        let script = script.to_string();
        in_space(netns, move || nft::apply(&script))
    }
    fn guard_delete(&self, netns: Option<&str>) -> DpResult<()> {
        let table = crate::policy::spoof::EGRESS_TABLE;
        in_space(netns, move || cnet_dataplane::nftobj::delete_table(cnet_dataplane::nftobj::Family::Netdev, table))
    }
    fn guard_counter(&self, netns: Option<&str>, name: &str) -> DpResult<Option<cnet_dataplane::nftobj::Counter>> {
        let (family, table, name) =
            (cnet_dataplane::nftobj::Family::Netdev, crate::policy::spoof::EGRESS_TABLE, name.to_string());
        in_space(netns, move || cnet_dataplane::nftobj::counter(family, table, &name))
    }
    fn acl_apply_in(&self, netns: &str, script: &str) -> DpResult<()> {
        let script = script.to_string();
        in_space(Some(netns), move || policy_script(&script))
    }
    fn acl_exists_in(&self, netns: &str) -> DpResult<bool> {
        in_space(Some(netns), || {
            cnet_dataplane::nftobj::table_exists(cnet_dataplane::nftobj::Family::Inet, crate::policy::TABLE)
        })
    }
    fn acl_counter_in(&self, netns: &str, name: &str) -> DpResult<Option<cnet_dataplane::nftobj::Counter>> {
        let name = name.to_string();
        in_space(Some(netns), move || {
            cnet_dataplane::nftobj::counter(cnet_dataplane::nftobj::Family::Inet, crate::policy::TABLE, &name)
        })
    }
    fn pol_counter(
        &self,
        family: cnet_dataplane::nftobj::Family,
        name: &str,
    ) -> DpResult<Option<cnet_dataplane::nftobj::Counter>> {
        cnet_dataplane::nftobj::counter(family, crate::policy::TABLE, name)
    }
    fn foreign_drop_chains(&self) -> DpResult<Vec<String>> {
        nft::foreign_drop_chains(TABLE)
    }

    fn qos_set(&self, netns: Option<&str>, dev: &str, ifb: &str, spec: &super::QosSpec) -> DpResult<()> {
        cnet_dataplane::qos::set(netns, dev, ifb, spec)
    }
    fn qos_status(&self, netns: Option<&str>, dev: &str, ifb: &str) -> DpResult<super::QosStatus> {
        cnet_dataplane::qos::status(netns, dev, ifb)
    }

    /// Queues the matches; the entries go within milliseconds.
    fn forget_flows(&self, flows: &[FlowMatch]) -> DpResult<usize> {
        self.forgetter.push(flows);
        Ok(0)
    }
}

/// Set and map elements of an `nft -j list table` dump, written as [`FwElem::text`] writes them.
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

/// Route netlink inside the namespace at `netns_path`, or on the host.
fn rtnl_at(netns_path: Option<&str>) -> DpResult<cnet_dataplane::netlink::Rtnl> {
    match netns_path {
        Some(path) => cnet_dataplane::netlink::Rtnl::open_in(path),
        None => cnet_dataplane::netlink::Rtnl::open(),
    }
}

/// Runs `f` in the namespace at `netns`, or in the calling thread's when `None`.
fn in_space<T: Send + 'static>(netns: Option<&str>, f: impl FnOnce() -> DpResult<T> + Send + 'static) -> DpResult<T> {
    match netns {
        None => f(),
        Some(path) => cnet_dataplane::netns::run_in(path, f)?,
    }
}

/// Runs a policy script in the calling thread's namespace. One endpoint's
/// change goes straight to the kernel as one netlink batch: libnftables
/// would first fetch every chain, set and counter of the namespace (and,
/// in a container's namespace, its freed context would wait out an RCU
/// grace period). Anything else goes through libnftables.
fn policy_script(script: &str) -> DpResult<()> {
    let Some(batch) = cnet_dataplane::nftwrite::parse(script) else { return nft::apply(script) };
    let Err(e) = batch.send() else { return Ok(()) };
    // Refused: nft says why (and if it takes what the writer could not, that is a bug of the writer).
    nft::apply(script)?;
    tracing::warn!("nftables took a policy change that cnet's netlink writer could not send ({e})");
    Ok(())
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
}
