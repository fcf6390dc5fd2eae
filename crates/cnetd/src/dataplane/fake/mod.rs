//! A [`Dataplane`] in memory, for unit tests without root: it keeps the
//! kernel objects cnet makes (namespaces, links, the inside of veths, the
//! firewall's elements, the policy table's chains and sets), records every call, and
//! on request fails a step or "crashes" (panics) at it, so a test can run a
//! lifecycle with a failure at each kernel step and check what is left behind.
//!
//! Invariants (the parts of the kernel's behaviour cnet relies on):
//! - A step either happens whole or not at all; a failed or crashed step
//!   changes nothing.
//! - Deleting the host side of a veth removes its inside too, and deleting a
//!   namespace removes the veths inside it and their host sides.
//! - Deleting a link removes its per-link sysctls.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use cnet_dataplane::nftobj::{Counter, Family};
use cnet_dataplane::{Mac, Route};

pub mod nft;
mod objects;
mod qos;
use objects::info;
pub use objects::{FakeInside, FakeLink, Objects};
pub use qos::FakeQos;

use super::{
    Addr, BridgeSpec, Dataplane, DataplaneError, DpResult, FlowMatch, FwElem, HostRoute, Inside, LinkInfo, MacvlanSpec,
    MacvtapSpec, PortFlags, Rule, TapSpec, VethSpec,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Injected {
    Fail,
    Crash,
}

#[derive(Default)]
struct Inner {
    objects: Objects,
    skeleton: String,
    sysctls: BTreeMap<String, String>,
    calls: Vec<String>,
    steps: usize,
    inject: Option<(usize, Injected)>,
    forgotten: Vec<FlowMatch>,
}

#[derive(Default)]
pub struct FakeDataplane {
    inner: Mutex<Inner>,
}

fn errno(what: impl Into<String>, code: i32) -> DataplaneError {
    DataplaneError::Netlink { what: what.into(), source: std::io::Error::from_raw_os_error(code) }
}

impl FakeDataplane {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `n`-th step from now (0 = the next one) fails with EIO.
    pub fn fail_step(&self, n: usize) {
        let mut k = self.inner.lock().unwrap();
        k.inject = Some((k.steps + n, Injected::Fail));
    }

    /// The `n`-th step from now panics before it does anything: the process
    /// dies there.
    pub fn crash_at_step(&self, n: usize) {
        let mut k = self.inner.lock().unwrap();
        k.inject = Some((k.steps + n, Injected::Crash));
    }

    /// Steps (calls that change something) made so far.
    pub fn steps(&self) -> usize {
        self.inner.lock().unwrap().steps
    }

    /// Every call so far, in order, as `name args`.
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn objects(&self) -> Objects {
        self.inner.lock().unwrap().objects.clone()
    }

    /// The conntrack matches asked for so far.
    pub fn forgotten(&self) -> Vec<FlowMatch> {
        self.inner.lock().unwrap().forgotten.clone()
    }

    /// A namespace made by someone else (a runtime), for adopting.
    pub fn add_netns(&self, path: &str) {
        self.inner.lock().unwrap().objects.namespaces.insert(path.to_string());
    }

    /// Changes the objects behind cnet's back (drift, for tests).
    pub fn tamper(&self, f: impl FnOnce(&mut Objects)) {
        f(&mut self.inner.lock().unwrap().objects)
    }

    fn read<T>(&self, call: String, f: impl FnOnce(&Inner) -> T) -> T {
        let mut k = self.inner.lock().unwrap();
        k.calls.push(call);
        f(&k)
    }

    /// Runs one step: records it, fails or crashes it when asked to, and
    /// applies `f` to a copy of the objects that is kept only if `f` succeeds.
    fn step<T>(&self, call: String, f: impl FnOnce(&mut Inner) -> DpResult<T>) -> DpResult<T> {
        let mut k = self.inner.lock().unwrap();
        k.calls.push(call.clone());
        let n = k.steps;
        k.steps += 1;
        match k.inject {
            Some((at, Injected::Fail)) if at == n => {
                k.inject = None;
                return Err(errno(format!("injected failure of step {n} ({call})"), libc::EIO));
            }
            Some((at, Injected::Crash)) if at == n => {
                k.inject = None;
                drop(k);
                panic!("injected crash at step {n} ({call})");
            }
            _ => {}
        }
        let saved = (k.objects.clone(), k.sysctls.clone());
        let out = f(&mut k);
        if out.is_err() {
            (k.objects, k.sysctls) = saved;
        }
        out
    }
}

fn remove_link(k: &mut Inner, name: &str) {
    if let Some(l) = k.objects.links.remove(name) {
        if let Some(peer) = l.peer {
            k.objects.inside.remove(&peer);
        }
        // What hangs off the link goes with it: macvlans on it, VLANs of it,
        // its routes and proxy entries.
        k.objects.inside.retain(|_, i| i.parent.as_deref() != Some(name));
        let children: Vec<String> =
            k.objects.links.iter().filter(|(_, l)| l.parent.as_deref() == Some(name)).map(|(n, _)| n.clone()).collect();
        for c in children {
            remove_link(k, &c);
        }
        k.objects.routes.retain(|r| r.dev.as_str() != name);
        k.objects.qos.remove(&(String::new(), name.to_string()));
        k.objects.proxies.retain(|(dev, _)| dev != name);
        for other in k.objects.links.values_mut() {
            if other.master.as_deref() == Some(name) {
                other.master = None;
            }
        }
        let part = format!("/conf/{name}/");
        k.sysctls.retain(|key, _| !key.contains(&part));
    }
}

impl Dataplane for FakeDataplane {
    fn netns_exists(&self, path: &str) -> bool {
        self.read(format!("netns_exists {path}"), |k| k.objects.namespaces.contains(path))
    }
    fn netns_create(&self, name: &str) -> DpResult<String> {
        self.step(format!("netns_create {name}"), |k| {
            let path = cnet_dataplane::netns::path_of(name);
            k.objects.namespaces.insert(path.clone());
            Ok(path)
        })
    }
    fn netns_delete(&self, name: &str) -> DpResult<()> {
        self.step(format!("netns_delete {name}"), |k| {
            let path = cnet_dataplane::netns::path_of(name);
            k.objects.namespaces.remove(&path);
            k.objects.egress_guards.remove(&path);
            k.objects.acls_inside.remove(&path);
            k.objects.qos.retain(|(ns, _), _| *ns != path);
            let inside: Vec<(String, String)> =
                k.objects.inside.keys().filter(|(ns, _)| *ns == path).cloned().collect();
            for key in inside {
                if let Some(FakeInside { host_peer: Some(peer), .. }) = k.objects.inside.remove(&key) {
                    remove_link(k, &peer);
                }
            }
            Ok(())
        })
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> DpResult<()> {
        self.step(format!("ensure_bridge {}", spec.name), |k| {
            let l = k
                .objects
                .links
                .entry(spec.name.to_string())
                .or_insert_with(|| FakeLink::new("bridge", Some(spec.mac), spec.mtu));
            for a in &spec.addrs {
                if !l.addrs.contains(a) {
                    l.addrs.push(*a);
                }
            }
            l.up = true;
            Ok(())
        })
    }
    fn delete_link(&self, name: &str) -> DpResult<()> {
        self.step(format!("delete_link {name}"), |k| {
            remove_link(k, name);
            Ok(())
        })
    }
    fn create_veth(&self, spec: &VethSpec) -> DpResult<()> {
        self.step(format!("create_veth {} {} {}", spec.host_name, spec.netns_path, spec.ifname), |k| {
            let key = (spec.netns_path.clone(), spec.ifname.to_string());
            if !k.objects.namespaces.contains(&spec.netns_path) {
                return Err(errno(format!("opening {}", spec.netns_path), libc::ENOENT));
            }
            if k.objects.inside.contains_key(&key) || k.objects.links.contains_key(spec.host_name.as_str()) {
                return Err(errno(format!("creating veth pair {}/{}", spec.ifname, spec.host_name), libc::EEXIST));
            }
            if !k.objects.links.contains_key(spec.bridge.as_str()) {
                return Err(errno(format!("looking up link {}", spec.bridge), libc::ENODEV));
            }
            k.objects.inside.insert(
                key.clone(),
                FakeInside {
                    kind: "veth",
                    mac: spec.mac,
                    mtu: spec.mtu,
                    addrs: spec.addrs.clone(),
                    routes: spec.routes.clone(),
                    host_peer: Some(spec.host_name.to_string()),
                    parent: None,
                    vlan: None,
                },
            );
            let host = FakeLink {
                master: Some(spec.bridge.to_string()),
                up: true,
                peer: Some(key),
                port: spec.port,
                ..FakeLink::new("veth", None, spec.mtu)
            };
            k.objects.links.insert(spec.host_name.to_string(), host);
            Ok(())
        })
    }
    fn create_macvtap(&self, spec: &MacvtapSpec) -> DpResult<String> {
        let MacvtapSpec { name, parent, mac, mtu, .. } = spec;
        let (name, parent, mac, mtu) = (name.as_str(), parent.as_str(), *mac, *mtu);
        self.step(format!("create_macvtap {name} {parent} owner={:?} group={:?}", spec.owner, spec.group), |k| {
            if k.objects.links.contains_key(name) {
                return Err(errno(format!("creating macvtap {name}"), libc::EEXIST));
            }
            k.objects.ensure_child("macvtap", name, parent, Some(mac), mtu)?;
            k.objects.links.get_mut(name).expect("just made").vlan = spec.vlan;
            Ok(format!("/dev/tap-fake-{name}"))
        })
    }
    fn ensure_vxlan(&self, spec: &cnet_dataplane::netlink::overlay::VxlanSpec) -> DpResult<()> {
        self.step(format!("ensure_vxlan {} vni={} port={}", spec.name, spec.vni, spec.port), |k| {
            let mut link = FakeLink::new("vxlan", Some(spec.mac), spec.mtu);
            link.up = true;
            k.objects.links.entry(spec.name.clone()).or_insert(link);
            Ok(())
        })
    }
    fn overlay_entries(&self, dev: &str) -> DpResult<crate::dataplane::OverlayEntries> {
        self.read(format!("overlay_entries {dev}"), |k| Ok(k.objects.overlay.get(dev).cloned().unwrap_or_default()))
    }
    fn apply_overlay(&self, dev: &str, op: &crate::dataplane::OverlayOp) -> DpResult<()> {
        self.step(format!("apply_overlay {dev} {op:?}"), |k| {
            if !k.objects.links.contains_key(dev) {
                return Err(errno(format!("looking up link {dev}"), libc::ENODEV));
            }
            k.objects.apply_overlay(dev, op);
            Ok(())
        })
    }
    fn create_tap(&self, spec: &TapSpec, mtu: u32, bridge: &str, port: PortFlags) -> DpResult<()> {
        let access = format!("flags={:#x} owner={:?} group={:?}", spec.flags(), spec.owner, spec.group);
        self.step(format!("create_tap {} {bridge} {access}", spec.name), |k| {
            if k.objects.links.contains_key(spec.name.as_str()) {
                return Err(errno(format!("creating TAP {}", spec.name), libc::EEXIST));
            }
            if !k.objects.links.contains_key(bridge) {
                return Err(errno(format!("looking up link {bridge}"), libc::ENODEV));
            }
            let tap = FakeLink { master: Some(bridge.to_string()), up: true, port, ..FakeLink::new("tun", None, mtu) };
            k.objects.links.insert(spec.name.to_string(), tap);
            Ok(())
        })
    }
    fn create_macvlan(&self, spec: &MacvlanSpec) -> DpResult<()> {
        self.step(format!("create_macvlan {} {} {}", spec.parent, spec.netns_path, spec.ifname), |k| {
            let key = (spec.netns_path.clone(), spec.ifname.to_string());
            if !k.objects.namespaces.contains(&spec.netns_path) {
                return Err(errno(format!("opening {}", spec.netns_path), libc::ENOENT));
            }
            if k.objects.inside.contains_key(&key) {
                return Err(errno(format!("creating macvlan {}", spec.ifname), libc::EEXIST));
            }
            if !k.objects.links.contains_key(spec.parent.as_str()) {
                return Err(errno(format!("looking up link {}", spec.parent), libc::ENODEV));
            }
            let inside = FakeInside {
                kind: "macvlan",
                mac: Some(spec.mac),
                mtu: spec.mtu,
                addrs: spec.addrs.clone(),
                routes: spec.routes.clone(),
                host_peer: None,
                parent: Some(spec.parent.to_string()),
                vlan: spec.vlan,
            };
            k.objects.inside.insert(key, inside);
            Ok(())
        })
    }
    fn ensure_macvlan(&self, name: &str, parent: &str, mac: Mac, mtu: u32) -> DpResult<()> {
        self.step(format!("ensure_macvlan {name} {parent}"), |k| {
            k.objects.ensure_child("macvlan", name, parent, Some(mac), mtu)
        })
    }
    fn set_link_vlan(&self, netns_path: Option<&str>, ifname: &str, vid: u16) -> DpResult<()> {
        self.step(format!("set_link_vlan {netns_path:?} {ifname} {vid}"), |k| {
            let missing = || errno(format!("looking up link {ifname} in {netns_path:?}"), libc::ENODEV);
            let vlan = match netns_path {
                Some(path) => {
                    &mut k.objects.inside.get_mut(&(path.to_string(), ifname.to_string())).ok_or_else(missing)?.vlan
                }
                None => &mut k.objects.links.get_mut(ifname).ok_or_else(missing)?.vlan,
            };
            *vlan = Some(vid);
            Ok(())
        })
    }
    fn link_vlan(&self, netns_path: Option<&str>, ifname: &str) -> DpResult<Option<u16>> {
        self.read(format!("link_vlan {netns_path:?} {ifname}"), |k| {
            Ok(match netns_path {
                Some(path) => k.objects.inside.get(&(path.to_string(), ifname.to_string())).and_then(|i| i.vlan),
                None => k.objects.links.get(ifname).and_then(|l| l.vlan),
            })
        })
    }
    fn release_inside(&self, netns_path: &str, ifname: &str, mac: Mac) -> DpResult<()> {
        self.step(format!("release_inside {netns_path} {ifname}"), |k| {
            let key = (netns_path.to_string(), ifname.to_string());
            if k.objects.inside.get(&key).is_some_and(|i| i.mac == Some(mac)) {
                if let Some(FakeInside { host_peer: Some(peer), .. }) = k.objects.inside.remove(&key) {
                    remove_link(k, &peer);
                }
            }
            Ok(())
        })
    }
    fn configure_inside(&self, netns_path: &str, ifname: &str, addrs: &[Addr], routes: &[Route]) -> DpResult<()> {
        self.step(format!("configure_inside {netns_path} {ifname}"), |k| {
            let i = k
                .objects
                .inside
                .get_mut(&(netns_path.to_string(), ifname.to_string()))
                .ok_or_else(|| errno(format!("looking up link {ifname} in {netns_path}"), libc::ENODEV))?;
            for a in addrs {
                if !i.addrs.contains(a) {
                    i.addrs.push(*a);
                }
            }
            for r in routes {
                if !i.routes.contains(r) {
                    i.routes.push(r.clone());
                }
            }
            Ok(())
        })
    }
    fn unconfigure_inside(&self, netns_path: &str, ifname: &str, addrs: &[Addr]) -> DpResult<()> {
        self.step(format!("unconfigure_inside {netns_path} {ifname}"), |k| {
            if let Some(i) = k.objects.inside.get_mut(&(netns_path.to_string(), ifname.to_string())) {
                i.addrs.retain(|a| !addrs.contains(a));
            }
            Ok(())
        })
    }
    fn route_replace(&self, r: &HostRoute) -> DpResult<()> {
        self.step(format!("route_replace {r}"), |k| {
            if !k.objects.links.contains_key(r.dev.as_str()) {
                return Err(errno(format!("looking up link {}", r.dev), libc::ENODEV));
            }
            k.objects.routes.retain(|x| !(x.destination == r.destination && x.table == r.table));
            k.objects.routes.insert(r.clone());
            Ok(())
        })
    }
    fn route_delete(&self, r: &HostRoute) -> DpResult<()> {
        // As the kernel: what the request leaves out (source, gateway) matches anything.
        self.step(format!("route_delete {r}"), |k| {
            k.objects.routes.retain(|x| {
                !(x.dev == r.dev
                    && x.destination == r.destination
                    && x.table == r.table
                    && r.via.is_none_or(|v| x.via == Some(v))
                    && r.src.is_none_or(|s| x.src == Some(s)))
            });
            Ok(())
        })
    }
    fn routes(&self, dev: &str, table: u32) -> DpResult<Vec<HostRoute>> {
        self.read(format!("routes {dev} {table}"), |k| {
            Ok(k.objects.routes.iter().filter(|r| r.dev.as_str() == dev && r.table == table).cloned().collect())
        })
    }
    fn proxy_add(&self, dev: &str, ip: IpAddr) -> DpResult<()> {
        self.step(format!("proxy_add {dev} {ip}"), |k| {
            if !k.objects.links.contains_key(dev) {
                return Err(errno(format!("looking up link {dev}"), libc::ENODEV));
            }
            k.objects.proxies.insert((dev.to_string(), ip));
            Ok(())
        })
    }
    fn proxy_delete(&self, dev: &str, ip: IpAddr) -> DpResult<()> {
        self.step(format!("proxy_delete {dev} {ip}"), |k| {
            k.objects.proxies.remove(&(dev.to_string(), ip));
            Ok(())
        })
    }
    fn proxies(&self, dev: &str) -> DpResult<Vec<IpAddr>> {
        self.read(format!("proxies {dev}"), |k| {
            Ok(k.objects.proxies.iter().filter(|(d, _)| d == dev).map(|(_, ip)| *ip).collect())
        })
    }
    fn rule_ensure(&self, rule: &Rule) -> DpResult<()> {
        self.step(format!("rule_ensure iif {} table {}", rule.iif, rule.table), |k| {
            k.objects.rules.insert(rule.clone());
            Ok(())
        })
    }
    fn rule_delete(&self, rule: &Rule) -> DpResult<()> {
        self.step(format!("rule_delete iif {} table {}", rule.iif, rule.table), |k| {
            k.objects.rules.remove(rule);
            Ok(())
        })
    }
    fn rules(&self) -> DpResult<Vec<Rule>> {
        self.read("rules".into(), |k| Ok(k.objects.rules.iter().cloned().collect()))
    }
    fn enslave(&self, name: &str, bridge: &str, port: PortFlags) -> DpResult<()> {
        self.step(format!("enslave {name} {bridge}"), |k| {
            if !k.objects.links.contains_key(bridge) {
                return Err(errno(format!("looking up link {bridge}"), libc::ENODEV));
            }
            let l = k
                .objects
                .links
                .get_mut(name)
                .ok_or_else(|| errno(format!("putting {name} on {bridge}"), libc::ENODEV))?;
            l.master = Some(bridge.to_string());
            l.up = true;
            l.port = port;
            Ok(())
        })
    }
    fn release_link(&self, name: &str) -> DpResult<()> {
        self.step(format!("release_link {name}"), |k| {
            remove_link(k, name);
            Ok(())
        })
    }
    fn settle(&self) {
        self.read("settle".into(), |_| ())
    }
    fn releasing(&self) -> bool {
        false
    }
    fn links(&self) -> DpResult<Vec<LinkInfo>> {
        self.read("links".into(), |k| Ok(k.objects.links.iter().map(|(n, l)| info(n, l)).collect()))
    }
    fn link(&self, name: &str) -> DpResult<Option<LinkInfo>> {
        self.read(format!("link {name}"), |k| Ok(k.objects.links.get(name).map(|l| info(name, l))))
    }
    fn change_routes_inside(&self, netns_path: &str, ifname: &str, gone: &[Route], new: &[Route]) -> DpResult<()> {
        self.step(format!("change_routes_inside {ifname} -{} +{}", gone.len(), new.len()), |k| {
            k.objects.change_routes_inside(netns_path, ifname, gone, new)
        })
    }
    fn set_mtu(&self, netns: Option<&str>, name: &str, mtu: u32) -> DpResult<()> {
        self.step(format!("set_mtu {netns:?} {name} {mtu}"), |k| k.objects.set_mtu(netns, name, mtu))
    }
    fn link_stats(&self, _netns: Option<&str>, name: &str) -> DpResult<Option<cnet_dataplane::types::LinkStats>> {
        self.read(format!("link_stats {name}"), |k| Ok(k.objects.links.get(name).map(|_| Default::default())))
    }
    fn addresses(&self, dev: &str) -> DpResult<Vec<Addr>> {
        self.read(format!("addresses {dev}"), |k| match k.objects.links.get(dev) {
            Some(l) => Ok(l.addrs.clone()),
            None => Err(errno(format!("listing addresses of {dev}"), libc::ENODEV)),
        })
    }
    fn delete_address(&self, dev: &str, addr: Addr) -> DpResult<()> {
        self.step(format!("delete_address {dev} {addr}"), |k| {
            if let Some(l) = k.objects.links.get_mut(dev) {
                l.addrs.retain(|a| *a != addr);
            }
            Ok(())
        })
    }
    fn inside(&self, netns_path: &str, ifname: &str) -> DpResult<Option<Inside>> {
        self.read(format!("inside {netns_path} {ifname}"), |k| {
            if !k.objects.namespaces.contains(netns_path) {
                return Err(errno(format!("opening {netns_path}"), libc::ENOENT));
            }
            Ok(k.objects.inside.get(&(netns_path.to_string(), ifname.to_string())).map(|i| Inside {
                link: LinkInfo {
                    name: ifname.to_string(),
                    index: 0,
                    kind: Some(i.kind.into()),
                    master: None,
                    up: true,
                    mac: i.mac,
                    mtu: i.mtu,
                },
                addrs: i.addrs.clone(),
                routes: i.routes.clone(),
            }))
        })
    }

    fn sysctl_set(&self, key: &str, value: &str) -> DpResult<()> {
        self.step(format!("sysctl_set {key}={value}"), |k| {
            k.sysctls.insert(key.to_string(), value.to_string());
            Ok(())
        })
    }
    fn sysctl_get(&self, key: &str) -> Option<String> {
        self.read(format!("sysctl_get {key}"), |k| k.sysctls.get(key).cloned())
    }

    fn fw_load(&self, skeleton: &str, elems: &[FwElem]) -> DpResult<()> {
        self.step(format!("fw_load {} elements", elems.len()), |k| {
            k.skeleton = skeleton.to_string();
            k.objects.table = Some(elems.iter().cloned().collect());
            Ok(())
        })
    }
    fn fw_update(&self, gone: &[FwElem], new: &[FwElem]) -> DpResult<()> {
        self.step(format!("fw_update -{} +{}", gone.len(), new.len()), |k| {
            k.objects.fw_update(gone, new).map_err(|(what, code)| errno(what, code))
        })
    }
    fn fw_delete(&self) -> DpResult<()> {
        self.step("fw_delete".into(), |k| {
            k.objects.table = None;
            Ok(())
        })
    }
    fn fw_has_address(&self, set: &'static str, ip: std::net::IpAddr) -> DpResult<bool> {
        let elem = FwElem { set, key: ip.to_string(), value: None };
        self.read(format!("fw_has_address {set} {ip}"), |k| {
            Ok(k.objects.table.as_ref().is_some_and(|t| t.contains(&elem)))
        })
    }
    fn fw_listing(&self) -> DpResult<Option<String>> {
        self.read("fw_listing".into(), |k| Ok(k.objects.table.as_ref().map(|_| k.skeleton.clone())))
    }
    fn fw_elements(&self) -> DpResult<Option<BTreeMap<String, Vec<String>>>> {
        self.read("fw_elements".into(), |k| Ok(k.objects.fw_elements()))
    }
    fn pol_apply(&self, script: &str) -> DpResult<()> {
        self.step(format!("pol_apply {} lines", script.lines().count()), |k| k.objects.pol_apply(script))
    }
    fn pol_exists(&self, family: Family) -> DpResult<bool> {
        self.read(format!("pol_exists {family:?}"), |k| Ok(k.objects.pol_exists(family)))
    }
    fn acl_apply_in(&self, netns: &str, script: &str) -> DpResult<()> {
        self.step(format!("acl_apply_in {netns} {} lines", script.lines().count()), |k| {
            k.objects.acl_apply_in(netns, script)
        })
    }
    fn acl_exists_in(&self, netns: &str) -> DpResult<bool> {
        self.read(format!("acl_exists_in {netns}"), |k| Ok(k.objects.acls_inside.contains_key(netns)))
    }
    fn acl_counter_in(&self, netns: &str, name: &str) -> DpResult<Option<Counter>> {
        self.read(format!("acl_counter_in {netns} {name}"), |k| {
            let has = k
                .objects
                .acls_inside
                .get(netns)
                .is_some_and(|t| t.contains(&format!("add counter inet cnetpol {name}")));
            Ok(has.then_some(Counter::default()))
        })
    }
    fn pol_counter(&self, family: Family, name: &str) -> DpResult<Option<Counter>> {
        self.read(format!("pol_counter {family:?} {name}"), |k| {
            Ok(k.objects.pol_exists(family).then_some(Counter::default()))
        })
    }
    fn guard_apply(&self, netns: Option<&str>, script: &str) -> DpResult<()> {
        let ns = netns.unwrap_or_default();
        self.step(format!("guard_apply {ns} {} lines", script.lines().count()), |k| {
            k.objects.egress_guard_apply(ns, script)
        })
    }
    fn guard_delete(&self, netns: Option<&str>) -> DpResult<()> {
        let ns = netns.unwrap_or_default();
        self.step(format!("guard_delete {ns}"), |k| k.objects.egress_guard_delete(ns))
    }
    fn guard_counter(&self, netns: Option<&str>, name: &str) -> DpResult<Option<Counter>> {
        let ns = netns.unwrap_or_default().to_string();
        self.read(format!("guard_counter {ns} {name}"), |k| {
            Ok(k.objects.egress_guards.contains_key(&ns).then_some(Counter::default()))
        })
    }
    fn foreign_drop_chains(&self) -> DpResult<Vec<String>> {
        self.read("foreign_drop_chains".into(), |_| Ok(vec![]))
    }

    fn qos_set(&self, netns: Option<&str>, dev: &str, ifb: &str, spec: &crate::dataplane::QosSpec) -> DpResult<()> {
        self.step(format!("qos_set {netns:?} {dev} {ifb} {spec:?}"), |k| k.objects.qos_set(netns, dev, ifb, spec))
    }
    fn qos_status(&self, netns: Option<&str>, dev: &str, ifb: &str) -> DpResult<crate::dataplane::QosStatus> {
        self.read(format!("qos_status {netns:?} {dev}"), |k| k.objects.qos_status(netns, dev, ifb))
    }

    fn forget_flows(&self, flows: &[FlowMatch]) -> DpResult<usize> {
        self.step(format!("forget_flows {flows:?}"), |k| {
            k.forgotten.extend(flows.iter().cloned());
            Ok(0)
        })
    }
}
