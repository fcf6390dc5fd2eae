//! The kernel objects the fake holds, as plain data tests can read and tamper with.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use cnet_dataplane::{Mac, Route};

use super::super::{Addr, FwElem, HostRoute, LinkInfo, PortFlags, Rule};

/// A link in cnetd's namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeLink {
    pub kind: &'static str,
    pub master: Option<String>,
    pub up: bool,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub addrs: Vec<Addr>,
    /// For a veth: the namespace path and name of its other end.
    pub peer: Option<(String, String)>,
    /// For a macvlan or VLAN: the link it is on.
    pub parent: Option<String>,
    /// A bridge port's flags.
    pub port: PortFlags,
    /// A macvtap's VLAN (its tagging programs).
    pub vlan: Option<u16>,
}

impl FakeLink {
    pub fn new(kind: &'static str, mac: Option<Mac>, mtu: u32) -> Self {
        FakeLink {
            kind,
            master: None,
            up: false,
            mac,
            mtu,
            addrs: vec![],
            peer: None,
            parent: None,
            port: PortFlags::default(),
            vlan: None,
        }
    }
}

/// An adapter inside a namespace: the inside end of a veth, or a macvlan.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeInside {
    pub kind: &'static str,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    /// A veth's host side.
    pub host_peer: Option<String>,
    /// A macvlan's parent link.
    pub parent: Option<String>,
    /// The VLAN it is an access port of.
    pub vlan: Option<u16>,
}

/// Every kernel object the fake holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub namespaces: BTreeSet<String>,
    pub links: BTreeMap<String, FakeLink>,
    /// By (namespace path, interface name).
    pub inside: BTreeMap<(String, String), FakeInside>,
    /// cnet's table: `None` when it is not loaded.
    pub table: Option<BTreeSet<FwElem>>,
    pub routes: BTreeSet<HostRoute>,
    /// Proxy neighbour entries, by (link, address).
    pub proxies: BTreeSet<(String, IpAddr)>,
    pub rules: BTreeSet<Rule>,
    /// VXLAN devices' remote-host entries, by device.
    pub overlay: BTreeMap<String, crate::dataplane::OverlayEntries>,
    /// The anti-spoofing table's guarded ports, or `None` when it is not loaded.
    pub guarded: Option<BTreeSet<String>>,
    /// The egress guards' tables: their chains by namespace path ("" for cnetd's).
    pub egress_guards: BTreeMap<String, BTreeSet<String>>,
    /// The QoS buckets of links, by (namespace path, "" for the host's; link).
    pub qos: BTreeMap<(String, String), super::FakeQos>,
    /// The ACL tables of containers' namespaces: the script that made each, by namespace path.
    pub acls_inside: BTreeMap<String, String>,
    /// The policy table's endpoint chains and IP sets, or `None` when it is not loaded.
    pub policy: Option<super::nft::PolicyTable>,
}

impl Objects {
    /// A script of a namespace's ACL table (`policy::inside`): one that
    /// replaces the table whole, one that only deletes it (none left), or
    /// a change of rules in the table there (kept with it).
    pub fn acl_apply_in(&mut self, netns: &str, script: &str) -> crate::dataplane::DpResult<()> {
        if !self.namespaces.contains(netns) {
            return Err(super::errno(format!("entering {netns}"), libc::ENOENT));
        }
        match script.strip_prefix(&crate::policy::inside::reset_script()) {
            Some("") => drop(self.acls_inside.remove(netns)),
            Some(_) => drop(self.acls_inside.insert(netns.to_string(), script.to_string())),
            // A change of some endpoints' rules: the table must be there, as in the kernel.
            None => match self.acls_inside.get_mut(netns) {
                Some(table) => table.push_str(script),
                None => return Err(super::errno(format!("changing the ACL table of {netns}"), libc::ENOENT)),
            },
        }
        Ok(())
    }

    /// A policy script: a load (re)creates the table, a deletion removes
    /// it, anything else needs it, as nft does.
    pub fn pol_apply(&mut self, script: &str) -> crate::dataplane::DpResult<()> {
        if script.contains(" bridge cnetpol") {
            return self.guard_apply(script);
        }
        let load = format!("table inet {} {{}}\ndelete table inet {}\n", crate::policy::TABLE, crate::policy::TABLE);
        let (mut table, rest) = match script.strip_prefix(&load) {
            Some("") => {
                self.policy = None;
                return Ok(());
            }
            Some(rest) => (super::nft::PolicyTable::default(), rest),
            None => match self.policy.clone() {
                Some(table) => (table, script),
                None => {
                    return Err(crate::dataplane::DataplaneError::Netlink {
                        what: "changing table inet cnetpol".into(),
                        source: std::io::Error::from_raw_os_error(libc::ENOENT),
                    })
                }
            },
        };
        table.apply(rest)?;
        self.policy = Some(table);
        Ok(())
    }
}

impl Objects {
    /// An anti-spoofing script, as [`Objects::pol_apply`] for `bridge cnetpol`.
    fn guard_apply(&mut self, script: &str) -> crate::dataplane::DpResult<()> {
        let table = crate::policy::spoof::TABLE;
        let load = format!("table bridge {table} {{}}\ndelete table bridge {table}\n");
        let mut ports = match script.strip_prefix(&load) {
            Some("") => {
                self.guarded = None;
                return Ok(());
            }
            Some(_) => BTreeSet::new(),
            None => self.guarded.clone().ok_or_else(|| crate::dataplane::DataplaneError::Netlink {
                what: format!("changing table bridge {table}"),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })?,
        };
        let port = |l: &str| l.split('"').nth(1).unwrap_or_default().to_string();
        for line in script.lines() {
            if line.starts_with(&format!("add element bridge {table} guarded ")) {
                ports.insert(port(line));
            } else if line.starts_with(&format!("delete element bridge {table} guarded ")) {
                ports.remove(&port(line));
            }
        }
        self.guarded = Some(ports);
        Ok(())
    }

    /// A link's MTU, inside `netns` or on the host; ENODEV when there is no such link.
    pub fn set_mtu(&mut self, netns: Option<&str>, name: &str, mtu: u32) -> crate::dataplane::DpResult<()> {
        let found = match netns {
            Some(ns) => self.inside.get_mut(&(ns.to_string(), name.to_string())).map(|i| &mut i.mtu),
            None => self.links.get_mut(name).map(|l| &mut l.mtu),
        };
        let Some(m) = found else {
            return Err(crate::dataplane::DataplaneError::Netlink {
                what: format!("setting the MTU of link {name}"),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            });
        };
        *m = mtu;
        Ok(())
    }

    /// Routes of an adapter inside a namespace: `gone` out, `new` in.
    pub fn change_routes_inside(
        &mut self,
        netns_path: &str,
        ifname: &str,
        gone: &[Route],
        new: &[Route],
    ) -> crate::dataplane::DpResult<()> {
        let key = (netns_path.to_string(), ifname.to_string());
        let i = self.inside.get_mut(&key).ok_or_else(|| crate::dataplane::DataplaneError::Netlink {
            what: format!("no {ifname} in {netns_path}"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        i.routes.retain(|r| !gone.contains(r));
        let added: Vec<Route> = new.iter().filter(|r| !i.routes.contains(r)).cloned().collect();
        i.routes.extend(added);
        Ok(())
    }

    pub fn pol_exists(&self, family: cnet_dataplane::nftobj::Family) -> bool {
        match family {
            cnet_dataplane::nftobj::Family::Inet => self.policy.is_some(),
            cnet_dataplane::nftobj::Family::Bridge => self.guarded.is_some(),
            cnet_dataplane::nftobj::Family::Netdev => self.egress_guards.contains_key(""),
        }
    }

    /// An egress guards' script in the namespace at `netns` ("": cnetd's):
    /// a deletion of the table ends it, chains are added and deleted.
    pub fn egress_guard_apply(&mut self, netns: &str, script: &str) -> crate::dataplane::DpResult<()> {
        let t = crate::policy::spoof::EGRESS_TABLE;
        self.guard_space(netns)?;
        let mut chains = self.egress_guards.get(netns).cloned().unwrap_or_default();
        let mut exists = true;
        for line in script.lines() {
            let word = |l: &str| l.split_whitespace().nth(4).unwrap_or_default().to_string();
            if line == format!("delete table netdev {t}") {
                chains.clear();
                exists = false;
            } else if line.starts_with(&format!("table netdev {t}")) {
                exists = true;
            } else if line.starts_with(&format!("add chain netdev {t} ")) {
                chains.insert(word(line));
            } else if line.starts_with(&format!("delete chain netdev {t} ")) {
                chains.remove(&word(line));
            }
        }
        if exists {
            self.egress_guards.insert(netns.to_string(), chains);
        } else {
            self.egress_guards.remove(netns);
        }
        Ok(())
    }

    /// The egress guards' table of the namespace at `netns` ("": cnetd's) deleted.
    pub fn egress_guard_delete(&mut self, netns: &str) -> crate::dataplane::DpResult<()> {
        self.guard_space(netns)?;
        self.egress_guards.remove(netns);
        Ok(())
    }

    /// An error when the namespace at `netns` ("": cnetd's) does not exist.
    fn guard_space(&self, netns: &str) -> crate::dataplane::DpResult<()> {
        if !netns.is_empty() && !self.namespaces.contains(netns) {
            return Err(crate::dataplane::DataplaneError::Netns {
                path: netns.to_string(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        Ok(())
    }

    /// Every set's and map's elements, as [`FwElem::text`] writes them.
    pub fn fw_elements(&self) -> Option<BTreeMap<String, Vec<String>>> {
        self.table.as_ref().map(|t| {
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for e in t {
                out.entry(e.set.to_string()).or_default().push(e.text());
            }
            out
        })
    }
}

/// What the kernel would say about `l`.
pub(super) fn info(name: &str, l: &FakeLink) -> LinkInfo {
    LinkInfo {
        name: name.to_string(),
        index: 0,
        kind: Some(l.kind.to_string()),
        master: l.master.clone(),
        up: l.up,
        mac: l.mac,
        mtu: l.mtu,
    }
}

impl Objects {
    /// A macvlan or VLAN link on `parent`, made if missing, up.
    pub(super) fn ensure_child(
        &mut self,
        kind: &'static str,
        name: &str,
        parent: &str,
        mac: Option<Mac>,
        mtu: u32,
    ) -> crate::dataplane::DpResult<()> {
        if !self.links.contains_key(parent) {
            return Err(super::errno(format!("looking up link {parent}"), libc::ENODEV));
        }
        let l = self
            .links
            .entry(name.to_string())
            .or_insert_with(|| FakeLink { parent: Some(parent.to_string()), ..FakeLink::new(kind, mac, mtu) });
        l.up = true;
        Ok(())
    }

    /// One nft transaction on cnet's table: `gone` out, then `new` in. The
    /// failure as (what, errno): no table, or a key already taken (as nft,
    /// a map holds one element per key).
    pub fn fw_update(&mut self, gone: &[FwElem], new: &[FwElem]) -> Result<(), (String, i32)> {
        let table = self.table.as_mut().ok_or(("updating table inet cnet".to_string(), libc::ENOENT))?;
        let taken = |n: &FwElem| table.iter().any(|t| t.set == n.set && t.key == n.key && !gone.contains(t));
        if let Some(e) = new.iter().find(|n| taken(n)) {
            // Refused whole, as an nft transaction is.
            return Err((format!("adding {} {} (the key is taken)", e.set, e.key), libc::EEXIST));
        }
        for e in gone {
            table.remove(e);
        }
        table.extend(new.iter().cloned());
        Ok(())
    }

    /// One change to VXLAN device `dev`'s remote-host entries, as the
    /// kernel makes it (a neighbour or route replaced in place).
    pub fn apply_overlay(&mut self, dev: &str, op: &crate::dataplane::OverlayOp) {
        use crate::dataplane::OverlayOp::*;
        let e = self.overlay.entry(dev.to_string()).or_default();
        match *op {
            AddNeighbour(ip, mac) => {
                e.neighbours.retain(|(i, _)| *i != ip);
                e.neighbours.insert((ip, mac));
            }
            AddFdb(mac, dst) => drop(e.fdb.insert((mac, dst))),
            AddRoute(dst, via) => {
                e.routes.retain(|(d, _)| *d != dst);
                e.routes.insert((dst, via));
            }
            DeleteRoute(dst, via) => drop(e.routes.remove(&(dst, via))),
            DeleteFdb(mac, dst) => drop(e.fdb.remove(&(mac, dst))),
            DeleteNeighbour(ip) => e.neighbours.retain(|(i, _)| *i != ip),
        }
    }
}
