//! Links, addresses and routes: bridges (the networks' switches) and veth
//! pairs (the endpoints' adapters), programmed with one `ip -batch` per change.

use serde::Deserialize;
use std::fmt::Write;
use std::net::IpAddr;

use crate::cmd::Cmd;
use crate::{DataplaneError, Result};

/// An address with its prefix length.
pub type Addr = (IpAddr, u8);

/// A route inside a compartment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: String,
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

fn ip_batch(netns: Option<&str>, script: String) -> Result<()> {
    Cmd::new("ip").args(["-batch", "-"]).stdin(script).netns(netns).run().map(|_| ())
}

fn addr_line(out: &mut String, verb: &str, (ip, len): &Addr, dev: &str) {
    let nodad = if ip.is_ipv6() { " nodad" } else { "" };
    let _ = writeln!(out, "address {verb} {ip}/{len} dev {dev}{nodad}");
}

/// Creates the bridge if missing and makes sure its addresses are there and it is up.
/// Never re-creates an existing bridge (that would cut its ports off).
pub fn ensure_bridge(spec: &BridgeSpec) -> Result<()> {
    let mut script = String::new();
    if link(None, &spec.name)?.is_none() {
        let _ = writeln!(script, "link add {} address {} mtu {} type bridge", spec.name, spec.mac, spec.mtu);
    }
    for a in &spec.addrs {
        addr_line(&mut script, "replace", a, &spec.name);
    }
    let _ = writeln!(script, "link set {} up", spec.name);
    ip_batch(None, script)
}

/// Deletes a link; succeeds when it is already gone.
pub fn delete_link(netns: Option<&str>, name: &str) -> Result<()> {
    match Cmd::new("ip").args(["link", "del", name]).netns(netns).run() {
        Ok(_) => Ok(()),
        Err(DataplaneError::Failed { stderr, .. }) if stderr.contains("Cannot find device") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the veth pair inside the namespace, configures the inside, then
/// plugs the host side into the bridge. On failure the pair is removed again.
pub fn create_veth(spec: &VethSpec) -> Result<()> {
    let mut inside = String::new();
    let _ = writeln!(
        inside,
        "link add {} address {} mtu {} type veth peer name {} mtu {} netns {}",
        spec.ifname,
        spec.mac,
        spec.mtu,
        spec.host_name,
        spec.mtu,
        std::process::id()
    );
    for a in &spec.addrs {
        addr_line(&mut inside, "add", a, &spec.ifname);
    }
    let _ = writeln!(inside, "link set lo up");
    let _ = writeln!(inside, "link set {} up", spec.ifname);
    // `append`: a second endpoint in the same namespace keeps its own default
    // route next to the first one's (the first attached stays in use).
    for r in &spec.routes {
        let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
        let metric = if r.metric > 0 { format!(" metric {}", r.metric) } else { String::new() };
        let _ = writeln!(inside, "route append {}{via} dev {}{metric}", r.destination, spec.ifname);
    }
    let mut host = format!("link set {} master {} up\n", spec.host_name, spec.bridge);
    if spec.hairpin {
        let _ = writeln!(host, "link set dev {} type bridge_slave hairpin on", spec.host_name);
    }
    let result = ip_batch(Some(&spec.netns_path), inside).and_then(|_| ip_batch(None, host));
    if let Err(e) = result {
        if !e.is_exists() {
            let _ = delete_link(None, &spec.host_name);
        }
        return Err(e);
    }
    Ok(())
}

/// Puts an existing host-side link (back) on its bridge, up.
pub fn enslave(name: &str, bridge: &str, hairpin: bool) -> Result<()> {
    let mut script = format!("link set {name} master {bridge} up\n");
    if hairpin {
        let _ = writeln!(script, "link set dev {name} type bridge_slave hairpin on");
    }
    ip_batch(None, script)
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

#[derive(Deserialize)]
struct RouteDump {
    dst: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

/// Routes through a link with a gateway or a non-connected destination:
/// `(destination, via)`, both families. `default` is written `0.0.0.0/0` / `::/0`.
pub fn routes(netns: Option<&str>, dev: &str) -> Result<Vec<(String, Option<IpAddr>)>> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let text = Cmd::new("ip").args(["-j", fam, "route", "show", "dev", dev]).netns(netns).run()?;
        for r in parse::<Vec<RouteDump>>(&text)? {
            let dst = match (r.dst.as_str(), fam) {
                ("default", "-4") => "0.0.0.0/0".to_string(),
                ("default", _) => "::/0".to_string(),
                _ => r.dst,
            };
            out.push((dst, r.gateway));
        }
    }
    Ok(out)
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
