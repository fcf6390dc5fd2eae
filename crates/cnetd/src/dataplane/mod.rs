//! The seam between the service and the kernel: every kernel operation that
//! the service, the drivers, the firewall, start-up repair and diagnostics
//! use, behind one trait.
//!
//! - [`Kernel`] is the real implementation, over `cnet-dataplane`.
//! - [`fake::FakeDataplane`] models the kernel objects in memory, records
//!   every call and fails (or "crashes") on request, so intents and
//!   rollbacks are unit-tested without root.
//!
//! Invariants:
//! - Every method that changes something is one *step*: it either happens
//!   whole or fails with nothing changed (the real implementation cleans up
//!   inside the step, e.g. a half-made veth pair is removed).
//! - Deletes succeed when the thing is already gone.
//! - Host-side names (`name`, `dev`) live in cnetd's own namespace; inside a
//!   compartment things are reached by the namespace's path.

pub mod fake;
mod kernel;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use cnet_dataplane::conntrack::FlowMatch;
pub use cnet_dataplane::qos::{QosSpec, QosStatus, Shaper};
pub use cnet_dataplane::tap::TapSpec;
pub use cnet_dataplane::{
    Addr, BridgeSpec, DataplaneError, HostRoute, Inside, LinkInfo, Mac, MacvlanSpec, MacvtapSpec, PortFlags, Route,
    Rule, VethSpec,
};
pub use kernel::{Kernel, TABLE as FIREWALL_TABLE};

pub type DpResult<T> = Result<T, DataplaneError>;

/// One element of an nftables set or map of cnet's table, as nft writes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FwElem {
    pub set: &'static str,
    /// The key (what `delete element` takes).
    pub key: String,
    /// The mapped value, for maps.
    pub value: Option<String>,
}

impl FwElem {
    /// `key` or `key : value`, as nft lists it.
    pub fn text(&self) -> String {
        match &self.value {
            Some(v) => format!("{} : {}", self.key, v),
            None => self.key.clone(),
        }
    }
}

/// The remote-host entries of one VXLAN device: permanent neighbours
/// (address → MAC), FDB entries (MAC → provider address), overlay routes
/// (block → link-local next hop).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayEntries {
    pub neighbours: std::collections::BTreeSet<(IpAddr, Mac)>,
    pub fdb: std::collections::BTreeSet<(Mac, IpAddr)>,
    pub routes: std::collections::BTreeSet<(Addr, std::net::Ipv6Addr)>,
}

/// One change to a VXLAN device's remote-host entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayOp {
    AddNeighbour(IpAddr, Mac),
    AddFdb(Mac, IpAddr),
    AddRoute(Addr, std::net::Ipv6Addr),
    DeleteRoute(Addr, std::net::Ipv6Addr),
    DeleteFdb(Mac, IpAddr),
    DeleteNeighbour(IpAddr),
}

/// The kernel, as the service sees it.
pub trait Dataplane: Send + Sync {
    // ---- namespaces ----
    /// Whether `path` is a network namespace.
    fn netns_exists(&self, path: &str) -> bool;
    /// Creates `/run/netns/<name>` with loopback up; returns its path.
    fn netns_create(&self, name: &str) -> DpResult<String>;
    fn netns_delete(&self, name: &str) -> DpResult<()>;

    // ---- links, addresses, routes ----
    /// Creates the bridge if missing; makes sure its addresses are there and it is up.
    fn ensure_bridge(&self, spec: &BridgeSpec) -> DpResult<()>;
    /// Creates an overlay network's VXLAN device unless it exists; up.
    fn ensure_vxlan(&self, spec: &cnet_dataplane::netlink::overlay::VxlanSpec) -> DpResult<()>;
    /// Deletes a host link at once.
    fn delete_link(&self, name: &str) -> DpResult<()>;
    /// The remote-host entries of VXLAN device `dev` (empty when it is gone).
    fn overlay_entries(&self, dev: &str) -> DpResult<OverlayEntries>;
    /// One change to VXLAN device `dev`'s remote-host entries.
    fn apply_overlay(&self, dev: &str, op: &OverlayOp) -> DpResult<()>;
    /// Creates a veth pair: configured inside the namespace, host side on the bridge.
    fn create_veth(&self, spec: &VethSpec) -> DpResult<()>;
    /// Creates a VM endpoint's macvtap (tagged when on a VLAN), up; answers
    /// the character device a VMM opens.
    fn create_macvtap(&self, spec: &MacvtapSpec) -> DpResult<String>;
    /// Creates a VM endpoint's persistent TAP on `bridge`, up, for a VMM to open.
    fn create_tap(&self, spec: &TapSpec, mtu: u32, bridge: &str, port: PortFlags) -> DpResult<()>;
    /// Puts an existing host link (back) on a bridge, up.
    fn enslave(&self, name: &str, bridge: &str, port: PortFlags) -> DpResult<()>;
    /// Creates an endpoint's macvlan inside its namespace, configured.
    fn create_macvlan(&self, spec: &MacvlanSpec) -> DpResult<()>;
    /// Creates the host macvlan `name` (bridge mode) on `parent` if missing; up.
    fn ensure_macvlan(&self, name: &str, parent: &str, mac: Mac, mtu: u32) -> DpResult<()>;
    /// The VLAN a link is an access port of: inside the namespace at
    /// `netns_path`, or on the host when `None`.
    fn link_vlan(&self, netns_path: Option<&str>, ifname: &str) -> DpResult<Option<u16>>;
    /// Makes a link (inside a namespace, or on the host when `None`) an
    /// access port of VLAN `vid`.
    fn set_link_vlan(&self, netns_path: Option<&str>, ifname: &str, vid: u16) -> DpResult<()>;
    /// Cuts a link inside a namespace off at once (down, renamed, so its
    /// name is free) and deletes it in the background; succeeds when it or
    /// the namespace is gone. [`Dataplane::settle`] waits for the deletion.
    /// Only a link with `mac` is taken (a same-named link someone else
    /// made is left alone).
    fn release_inside(&self, netns_path: &str, ifname: &str, mac: Mac) -> DpResult<()>;
    /// Adds addresses and routes to an adapter inside a namespace.
    fn configure_inside(&self, netns_path: &str, ifname: &str, addrs: &[Addr], routes: &[Route]) -> DpResult<()>;
    /// Removes addresses (and the routes through them) from an adapter inside a namespace.
    fn unconfigure_inside(&self, netns_path: &str, ifname: &str, addrs: &[Addr]) -> DpResult<()>;
    /// Adds or replaces a host route.
    fn route_replace(&self, r: &HostRoute) -> DpResult<()>;
    /// Deletes a host route; succeeds when it is gone.
    fn route_delete(&self, r: &HostRoute) -> DpResult<()>;
    /// The host routes through `dev` in `table`.
    fn routes(&self, dev: &str, table: u32) -> DpResult<Vec<HostRoute>>;
    /// Makes the host answer ARP/ND for `ip` on `dev`.
    fn proxy_add(&self, dev: &str, ip: IpAddr) -> DpResult<()>;
    /// Removes a proxy neighbour entry; succeeds when it is gone.
    fn proxy_delete(&self, dev: &str, ip: IpAddr) -> DpResult<()>;
    /// The proxy neighbour entries on `dev`.
    fn proxies(&self, dev: &str) -> DpResult<Vec<IpAddr>>;
    /// Adds an IPv4 policy rule unless it is there.
    fn rule_ensure(&self, rule: &Rule) -> DpResult<()>;
    /// Deletes an IPv4 policy rule; succeeds when it is gone.
    fn rule_delete(&self, rule: &Rule) -> DpResult<()>;
    /// The IPv4 policy rules that match on an input interface.
    fn rules(&self) -> DpResult<Vec<Rule>>;
    /// Cuts a host link off at once (down, off its bridge) and deletes it in
    /// the background.
    fn release_link(&self, name: &str) -> DpResult<()>;
    /// Waits until every released link is gone.
    fn settle(&self);
    /// Whether released links are still waiting for deletion.
    fn releasing(&self) -> bool;
    fn links(&self) -> DpResult<Vec<LinkInfo>>;
    fn link(&self, name: &str) -> DpResult<Option<LinkInfo>>;
    /// Deletes routes `gone` and adds routes `new` of an adapter inside a namespace.
    fn change_routes_inside(&self, netns_path: &str, ifname: &str, gone: &[Route], new: &[Route]) -> DpResult<()>;
    /// Sets a link's MTU, in `netns` (a path) or cnetd's own namespace.
    fn set_mtu(&self, netns: Option<&str>, name: &str, mtu: u32) -> DpResult<()>;
    /// A link's traffic counters, in `netns` (a path) or cnetd's own namespace.
    fn link_stats(&self, netns: Option<&str>, name: &str) -> DpResult<Option<cnet_dataplane::types::LinkStats>>;
    /// Global-scope addresses of a host link.
    fn addresses(&self, dev: &str) -> DpResult<Vec<Addr>>;
    fn delete_address(&self, dev: &str, addr: Addr) -> DpResult<()>;
    /// A link inside a namespace, with its addresses and routes.
    fn inside(&self, netns_path: &str, ifname: &str) -> DpResult<Option<Inside>>;

    // ---- sysctls of cnetd's namespace ----
    fn sysctl_set(&self, key: &str, value: &str) -> DpResult<()>;
    fn sysctl_get(&self, key: &str) -> Option<String>;

    // ---- cnet's nftables table ----
    /// Replaces the whole table with `skeleton` plus `elems`, atomically.
    fn fw_load(&self, skeleton: &str, elems: &[FwElem]) -> DpResult<()>;
    /// Deletes `gone` and adds `new`, in one transaction. A missing table is
    /// an error of kind `NotFound`.
    fn fw_update(&self, gone: &[FwElem], new: &[FwElem]) -> DpResult<()>;
    /// Deletes the table; succeeds when it is already gone.
    fn fw_delete(&self) -> DpResult<()>;
    /// Whether address `ip` is in set `set` of the table (one lookup in the
    /// kernel, no listing); false when the table is missing.
    fn fw_has_address(&self, set: &'static str, ip: IpAddr) -> DpResult<bool>;
    /// The table's chains and rules without elements, or `None` when it is missing.
    fn fw_listing(&self) -> DpResult<Option<String>>;
    /// The elements of every set and map (as [`FwElem::text`] writes them),
    /// or `None` when the table is missing.
    fn fw_elements(&self) -> DpResult<Option<BTreeMap<String, Vec<String>>>>;
    /// Runs an nft script on the policy tables (`inet cnetpol`, `bridge
    /// cnetpol`) in one transaction: all of it or none.
    fn pol_apply(&self, script: &str) -> DpResult<()>;
    /// Whether the policy table of `family` is there (one lookup, no listing).
    fn pol_exists(&self, family: cnet_dataplane::nftobj::Family) -> DpResult<bool>;
    /// Counter `name` of the policy table of `family`, when it is there.
    fn pol_counter(
        &self,
        family: cnet_dataplane::nftobj::Family,
        name: &str,
    ) -> DpResult<Option<cnet_dataplane::nftobj::Counter>>;
    /// Runs an nft script on the egress guards' table (`netdev cnetguard`)
    /// of the namespace at `netns` (`None`: cnetd's own), in one
    /// transaction: all of it or none.
    fn guard_apply(&self, netns: Option<&str>, script: &str) -> DpResult<()>;
    /// Deletes that table with every guard in it, in one transaction;
    /// succeeds when the table is gone. Cheaper than a script that deletes
    /// it: the real one does not wait for the kernel to free what it deleted.
    fn guard_delete(&self, netns: Option<&str>) -> DpResult<()>;
    /// Counter `name` of that table, when it is there.
    fn guard_counter(&self, netns: Option<&str>, name: &str) -> DpResult<Option<cnet_dataplane::nftobj::Counter>>;
    /// Runs a script of the ACL table `inet cnetpol` of the (container's)
    /// namespace at `netns`, in one transaction.
    fn acl_apply_in(&self, netns: &str, script: &str) -> DpResult<()>;
    /// Whether that table is there (one lookup, no listing).
    fn acl_exists_in(&self, netns: &str) -> DpResult<bool>;
    /// Counter `name` of that table, when it is there.
    fn acl_counter_in(&self, netns: &str, name: &str) -> DpResult<Option<cnet_dataplane::nftobj::Counter>>;
    /// Base chains of other tables with `policy drop`.
    fn foreign_drop_chains(&self) -> DpResult<Vec<String>>;

    // ---- QoS (tc) ----
    /// Brings link `dev`'s buckets (in the namespace at `netns`, or the
    /// host's) to `spec`, whatever it had: `spec.ingress` as the root qdisc
    /// of `dev`, `spec.egress` on what `dev` receives, redirected to ifb
    /// link `ifb` beside it (made while that is capped, deleted when not).
    /// A host link takes the endpoint's spec, a link on the endpoint's side
    /// [`QosSpec::mirrored`]. Setting the old spec again undoes a change; an
    /// empty spec on a link that is gone succeeds.
    fn qos_set(&self, netns: Option<&str>, dev: &str, ifb: &str, spec: &QosSpec) -> DpResult<()>;
    /// Which directions of `dev` are capped, with their buckets' drop
    /// counts, in the terms of [`Dataplane::qos_set`].
    fn qos_status(&self, netns: Option<&str>, dev: &str, ifb: &str) -> DpResult<QosStatus>;

    // ---- conntrack ----
    /// Deletes the conntrack entries matching any of `flows` (the real
    /// implementation queues them for a background dump; [`Dataplane::settle`] waits for it).
    fn forget_flows(&self, flows: &[FlowMatch]) -> DpResult<usize>;
}

/// The address an endpoint's flows lead to, for [`Dataplane::forget_flows`].
pub fn flows_to(ip: IpAddr) -> FlowMatch {
    FlowMatch { reply_src: Some(ip), ..FlowMatch::default() }
}
