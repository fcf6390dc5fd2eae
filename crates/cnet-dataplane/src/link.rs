//! Links, addresses and routes: bridges (the networks' switches) and veth
//! pairs (the endpoints' adapters). Changes go over route netlink
//! ([`crate::netlink`]); the listings used by diagnostics parse `ip -j`.

use serde::Deserialize;
use std::fs::File;
use std::net::IpAddr;

use crate::cmd::Cmd;
use crate::netlink::{parse_mac, Rtnl};
use crate::{DataplaneError, Result};

/// An address with its prefix length.
pub type Addr = (IpAddr, u8);

/// A route inside a compartment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: Addr,
    pub via: Option<IpAddr>,
    pub metric: u32,
}

/// A network's bridge.
#[derive(Clone, Debug)]
pub struct BridgeSpec {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// Host addresses on the bridge (the gateways); empty for Private.
    pub addrs: Vec<Addr>,
}

/// An endpoint's veth pair: `ifname` inside the namespace, `host_name` on the bridge.
#[derive(Clone, Debug)]
pub struct VethSpec {
    pub netns_path: String,
    pub ifname: String,
    pub host_name: String,
    pub bridge: String,
    pub mac: String,
    pub mtu: u32,
    pub addrs: Vec<Addr>,
    pub routes: Vec<RouteSpec>,
    /// Let the bridge send frames back out the port they came in on: needed
    /// when a container reaches its own published port (NAT loopback) and
    /// br_netfilter bridges the DNAT'd frame.
    pub hairpin: bool,
}

/// The namespace cnetd itself runs in (the host side of every veth).
fn own_netns() -> Result<File> {
    File::open("/proc/self/ns/net").map_err(|source| DataplaneError::Netns { path: "/proc/self/ns/net".into(), source })
}

fn rtnl(netns: Option<&str>) -> Result<Rtnl> {
    match netns {
        Some(path) => Rtnl::open_in(path),
        None => Rtnl::open(),
    }
}

/// Creates the bridge if missing and makes sure its addresses are there and it is up.
/// Never re-creates an existing bridge (that would cut its ports off).
pub fn ensure_bridge(spec: &BridgeSpec) -> Result<()> {
    let mut nl = Rtnl::open()?;
    if nl.index(&spec.name)?.is_none() {
        match nl.add_bridge(&spec.name, parse_mac(&spec.mac)?, spec.mtu) {
            Err(e) if !e.is_exists() => return Err(e),
            _ => {}
        }
    }
    for a in &spec.addrs {
        nl.add_address(&spec.name, a, true)?;
    }
    nl.set_up(&spec.name, true)
}

/// Deletes a link; succeeds when it is already gone.
pub fn delete_link(netns: Option<&str>, name: &str) -> Result<()> {
    rtnl(netns)?.delete(name).map(|_| ())
}

/// Creates the veth pair inside the namespace (the host side appears in
/// cnetd's namespace), configures the inside, then plugs the host side into
/// the bridge. On failure the pair is removed again.
pub fn create_veth(spec: &VethSpec) -> Result<()> {
    let mac = if spec.mac.is_empty() { None } else { Some(parse_mac(&spec.mac)?) };
    let host_ns = own_netns()?;
    let inside = || -> Result<()> {
        let mut nl = Rtnl::open_in(&spec.netns_path)?;
        nl.add_veth(&spec.ifname, mac, spec.mtu, &spec.host_name, &host_ns)?;
        if spec.addrs.iter().all(|(ip, _)| ip.is_ipv4()) {
            // No IPv6 on the endpoint, so no IPv6 chatter from it either (as
            // Docker does): with a thousand containers on one bridge, every
            // new one's link-local detection and multicast reports were
            // flooded to all the others.
            nl.no_link_local(&spec.ifname)?;
        }
        for a in &spec.addrs {
            nl.add_address(&spec.ifname, a, false)?;
        }
        nl.set_up("lo", true)?;
        nl.set_up(&spec.ifname, true)?;
        // Appended: a second endpoint in the same namespace keeps its own
        // default route next to the first one's (the first attached stays in use).
        for r in &spec.routes {
            nl.append_route(&spec.ifname, r)?;
        }
        Ok(())
    };
    let result = inside().and_then(|_| enslave(&spec.host_name, &spec.bridge, spec.hairpin));
    if let Err(e) = result {
        if !e.is_exists() {
            let _ = delete_link(None, &spec.host_name);
        }
        return Err(e);
    }
    Ok(())
}

/// Puts an existing host-side link (back) on its bridge, up.
///
/// A bridge port needs no IPv6 of its own, so it gets none: otherwise every
/// port adds routes (ff00::/8, fe80::/64) to one node of the host's IPv6 FIB,
/// which every IPv6 lookup then walks, plus address detection and multicast
/// reports. With 10,000 ports that walk took a quarter of the CPU here.
pub fn enslave(name: &str, bridge: &str, hairpin: bool) -> Result<()> {
    crate::sysctl::set(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1")?;
    Rtnl::open()?.enslave(name, bridge, hairpin)
}

/// What `ip -j -d link show` says about one link.
#[derive(Clone, Debug, Deserialize)]
pub struct LinkInfo {
    pub ifname: String,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub linkinfo: Option<LinkKind>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LinkKind {
    #[serde(default)]
    pub info_kind: Option<String>,
}

impl LinkInfo {
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }
    pub fn kind(&self) -> Option<&str> {
        self.linkinfo.as_ref().and_then(|l| l.info_kind.as_deref())
    }
}

fn parse<T: for<'de> Deserialize<'de>>(out: &str) -> Result<T> {
    serde_json::from_str(if out.trim().is_empty() { "[]" } else { out })
        .map_err(|e| DataplaneError::Parse { program: "ip".into(), detail: e.to_string() })
}

/// All links of a namespace.
pub fn links(netns: Option<&str>) -> Result<Vec<LinkInfo>> {
    parse(&Cmd::new("ip").args(["-j", "-d", "link", "show"]).netns(netns).run()?)
}

/// One link, or `None` when it does not exist.
pub fn link(netns: Option<&str>, name: &str) -> Result<Option<LinkInfo>> {
    match Cmd::new("ip").args(["-j", "-d", "link", "show", "dev", name]).netns(netns).run() {
        Ok(out) => Ok(parse::<Vec<LinkInfo>>(&out)?.into_iter().next()),
        Err(DataplaneError::Failed { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct AddrDump {
    #[serde(default)]
    addr_info: Vec<AddrEntry>,
}
#[derive(Deserialize)]
struct AddrEntry {
    local: IpAddr,
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

/// Global-scope addresses of a link.
pub fn addresses(netns: Option<&str>, dev: &str) -> Result<Vec<Addr>> {
    let out = Cmd::new("ip").args(["-j", "address", "show", "dev", dev]).netns(netns).run()?;
    let dumps: Vec<AddrDump> = parse(&out)?;
    Ok(dumps
        .into_iter()
        .flat_map(|d| d.addr_info)
        .filter(|a| a.scope == "global")
        .map(|a| (a.local, a.prefixlen))
        .collect())
}

/// Removes one address from a link; succeeds when it is not there.
pub fn delete_address(netns: Option<&str>, dev: &str, (ip, len): Addr) -> Result<()> {
    match Cmd::new("ip").args(["address", "del", &format!("{ip}/{len}"), "dev", dev]).netns(netns).run() {
        Ok(_) => Ok(()),
        Err(DataplaneError::Failed { stderr, .. })
            if stderr.contains("Cannot assign") || stderr.contains("Cannot find device") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
