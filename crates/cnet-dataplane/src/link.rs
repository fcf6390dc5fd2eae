//! Links, addresses and routes: bridges (the networks' switches) and veth
//! pairs (the endpoints' adapters), built and read back over route netlink
//! ([`crate::netlink`]).
//!
//! Invariants:
//! - `netns: None` means the calling thread's namespace; `Some(path)` opens a
//!   netlink socket inside the namespace at `path` ([`Rtnl::open_in`]), so the
//!   caller's thread never changes namespace.
//! - An existing bridge is never re-created (that would cut its ports off).
//! - [`create_veth`] leaves either a complete endpoint or no host-side link.
//! - Deletes succeed when the thing is already gone.

use std::fs::File;

use crate::netlink::Rtnl;
use crate::{
    Addr, BridgeSpec, DataplaneError, ErrorKind, HostRoute, IfName, Inside, LinkInfo, Mac, MacvlanSpec, MacvtapSpec,
    PortFlags, Result, Route, Rule, VethSpec,
};

/// The namespace of the calling thread: the host side of every veth.
fn own_netns() -> Result<File> {
    // The thread's, not the process's (`/proc/self` is the main thread's):
    // the same in cnetd, whose threads share one namespace, and right for a
    // caller on a thread of its own in another namespace.
    let path = "/proc/thread-self/ns/net";
    File::open(path).map_err(|source| DataplaneError::Netns { path: path.into(), source })
}

/// Asks for link `name`'s carrier (`ETHTOOL_GLINK`), which makes the kernel
/// apply a pending carrier change of that link now (`linkwatch_sync_dev`)
/// instead of up to a second later. Until then a link whose carrier just
/// came on (a TAP its VMM opened, a bridge that got its first running
/// port) still has its inactive queue, which drops every frame sent
/// through it. Answers whether the carrier is on.
pub fn sync_carrier(name: &str) -> std::io::Result<bool> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GLINK: u32 = 0x0a;
    let mut value = EthtoolValue { cmd: ETHTOOL_GLINK, data: 0 };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: &mut value, _pad: [0; 16] };
    for (d, s) in req.name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s;
    }
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2); the descriptor is owned (and closed) by `sock`.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `sock` was just opened and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: SIOCETHTOOL reads a `struct ifreq` (40 bytes, laid out as
    // `req`) whose data points at an `ethtool_value`; both outlive the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req as *mut IfReq) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data != 0)
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
    let name = spec.name.as_str();
    let mut nl = Rtnl::open()?;
    if nl.index(name)?.is_none() {
        match nl.add_bridge(name, spec.mac, spec.mtu) {
            Err(e) if e.kind() != ErrorKind::Exists => return Err(e),
            _ => {}
        }
    }
    for a in &spec.addrs {
        nl.add_address(name, a, true)?;
    }
    nl.set_up(name, true)
}

/// Creates an overlay network's VXLAN device unless it exists; up.
pub fn ensure_vxlan(spec: &crate::netlink::overlay::VxlanSpec) -> Result<()> {
    let mut nl = Rtnl::open()?;
    if nl.index(&spec.name)?.is_none() {
        match nl.add_vxlan(spec) {
            // Made by someone else meanwhile: fine. The kernel also says
            // "exists" for another device with this VNI and port: not fine.
            Err(e) if e.kind() == ErrorKind::Exists && nl.index(&spec.name)?.is_some() => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    nl.set_up(&spec.name, true)
}

/// Deletes a link; succeeds when it is already gone.
pub fn delete_link(netns: Option<&str>, name: &str) -> Result<()> {
    rtnl(netns)?.delete(name).map(|_| ())
}

/// Creates the veth pair inside the namespace (the host side appears in the
/// calling thread's namespace), configures the inside, then plugs the host
/// side into the bridge. On failure the pair is removed again, unless the
/// failure is that a link of that name already existed (it is not ours).
pub fn create_veth(spec: &VethSpec) -> Result<()> {
    let (ifname, host_name) = (spec.ifname.as_str(), spec.host_name.as_str());
    let host_ns = own_netns()?;
    let inside = || -> Result<()> {
        let mut nl = Rtnl::open_in(&spec.netns_path)?;
        nl.add_veth(ifname, spec.mac, spec.mtu, host_name, &host_ns)?;
        configure(&mut nl, ifname, &spec.addrs, &spec.routes, spec.addrs.iter().all(|a| a.ip.is_ipv4()))
    };
    let result = inside().and_then(|_| enslave(&spec.host_name, &spec.bridge, spec.port));
    if let Err(e) = result {
        if e.kind() != ErrorKind::Exists {
            let _ = delete_link(None, host_name);
        }
        return Err(e);
    }
    Ok(())
}

/// Configures the (down) adapter `ifname` inside a namespace: addresses,
/// up (and loopback), then routes. With `no_v6`, the adapter makes no IPv6
/// link-local address.
fn configure(nl: &mut Rtnl, ifname: &str, addrs: &[Addr], routes: &[Route], no_v6: bool) -> Result<()> {
    if no_v6 {
        // No IPv6 on the endpoint, so no IPv6 chatter from it either (as
        // Docker does): with a thousand containers on one bridge, every
        // new one's link-local detection and multicast reports were
        // flooded to all the others.
        nl.no_link_local(ifname)?;
    }
    for a in addrs {
        nl.add_address(ifname, a, false)?;
    }
    nl.set_up("lo", true)?;
    nl.set_up(ifname, true)?;
    // Appended: a second endpoint in the same namespace keeps its own
    // default route next to the first one's (the first attached stays in use).
    for r in routes {
        nl.append_route(ifname, r)?;
    }
    Ok(())
}

/// Creates the endpoint's macvlan inside its namespace, on the host link
/// `parent`, and configures it. On failure nothing is left, unless the
/// failure is that a link of that name already existed there.
pub fn create_macvlan(spec: &MacvlanSpec) -> Result<()> {
    let ifname = spec.ifname.as_str();
    let target = File::open(&spec.netns_path)
        .map_err(|source| DataplaneError::Netns { path: spec.netns_path.clone(), source })?;
    Rtnl::open()?.add_macvlan(ifname, spec.parent.as_str(), spec.mac, spec.mtu, Some(&target))?;
    let result = Rtnl::open_in(&spec.netns_path).and_then(|mut nl| {
        // A DHCP endpoint has no address yet; IPv4-only endpoints get no IPv6.
        let no_v6 = !spec.addrs.iter().any(|a| a.ip.is_ipv6());
        if let Some(vid) = spec.vlan {
            // Tagged before it ever comes up: no untagged frame leaves it.
            nl.set_vlan(ifname, vid)?;
        }
        configure(&mut nl, ifname, &spec.addrs, &spec.routes, no_v6)
    });
    if let Err(e) = result {
        let _ = delete_link(Some(&spec.netns_path), ifname);
        return Err(e);
    }
    Ok(())
}

/// Creates a VM endpoint's macvtap on `parent` with the guest's `mac`, up;
/// answers the character device the VMM opens (`/dev/tap<index>`). On
/// failure nothing is left.
///
/// devtmpfs names the node after the interface index, which is only
/// unique within a namespace: where another namespace holds a macvtap of
/// the same index (several host namespaces on one machine, as test worlds
/// are), the node is that one's. Then the macvtap is made again, with the
/// namespace's next index, until the node is its own.
pub fn create_macvtap(spec: &MacvtapSpec) -> Result<String> {
    const ATTEMPTS: usize = 8;
    let name = spec.name.as_str();
    let mut nl = Rtnl::open()?;
    for _ in 0..ATTEMPTS {
        let path = macvtap_once(&mut nl, spec)?;
        match crate::tap::device_name(&path) {
            Ok(owner) if owner == name => return give_to_vmm(&mut nl, spec, path),
            Ok(_) => {}
            Err(e) => {
                let _ = nl.delete(name);
                return Err(e);
            }
        }
        nl.delete(name)?;
    }
    Err(DataplaneError::Netlink {
        what: format!(
            "creating macvtap {name}: {ATTEMPTS} times its /dev/tapN was another namespace's macvtap of the same index"
        ),
        source: std::io::Error::from_raw_os_error(libc::EEXIST),
    })
}

/// One macvtap of `spec`, up; answers its node's path, or leaves nothing.
fn macvtap_once(nl: &mut Rtnl, spec: &MacvtapSpec) -> Result<String> {
    let name = spec.name.as_str();
    nl.add_macvtap(name, spec.parent.as_str(), spec.mac, spec.mtu)?;
    // Tagged before it is up: no untagged frame of the guest's ever leaves.
    let vlan = match spec.vlan {
        Some(vid) => nl.set_vlan(name, vid),
        None => Ok(()),
    };
    match vlan.and_then(|_| nl.set_up(name, true)).and_then(|_| nl.index(name)) {
        Ok(Some(index)) => Ok(format!("/dev/tap{index}")),
        Ok(None) => Err(DataplaneError::Netlink {
            what: format!("looking up macvtap {name}"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        }),
        Err(e) => {
            let _ = nl.delete(name);
            Err(e)
        }
    }
}

/// Gives the macvtap's node to the VMM's user and group, if named; on
/// failure the macvtap goes.
fn give_to_vmm(nl: &mut Rtnl, spec: &MacvtapSpec, path: String) -> Result<String> {
    let MacvtapSpec { name, owner, group, .. } = spec;
    if owner.is_none() && group.is_none() {
        return Ok(path);
    }
    match std::os::unix::fs::chown(&path, *owner, *group) {
        Ok(()) => Ok(path),
        Err(source) => {
            let _ = nl.delete(name.as_str());
            Err(DataplaneError::Netlink {
                what: format!("giving {path} (macvtap {name}) to its VMM's user and group"),
                source,
            })
        }
    }
}

/// Creates a VM endpoint's TAP (persistent, for the VMM to open by name)
/// with `mtu`, on `bridge` with `port` flags, up. On failure the TAP is
/// removed again, unless a link of that name already existed.
pub fn create_tap(spec: &crate::tap::TapSpec, mtu: u32, bridge: &IfName, port: PortFlags) -> Result<()> {
    crate::tap::create(spec)?;
    let name = spec.name.as_str();
    let result = Rtnl::open().and_then(|mut nl| {
        let mut m = netlink_packet_route::link::LinkMessage::default();
        m.header.index = nl.index(name)?.unwrap_or(0);
        m.attributes.push(netlink_packet_route::link::LinkAttribute::Mtu(mtu));
        nl.set_link(m, &format!("setting the MTU of TAP {name}"))?;
        Ok(())
    });
    let result = result.and_then(|_| enslave(&spec.name, bridge, port));
    if let Err(e) = result {
        if e.kind() != ErrorKind::Exists {
            let _ = delete_link(None, name);
        }
        return Err(e);
    }
    Ok(())
}

/// Adds addresses and routes to an adapter inside a namespace (a DHCP
/// lease arriving); ones already there are kept.
pub fn configure_inside(netns_path: &str, ifname: &str, addrs: &[Addr], routes: &[Route]) -> Result<()> {
    let mut nl = Rtnl::open_in(netns_path)?;
    for a in addrs {
        nl.add_address(ifname, a, true)?;
    }
    for r in routes {
        match nl.append_route(ifname, r) {
            Err(e) if e.kind() == ErrorKind::Exists => {}
            other => other?,
        }
    }
    Ok(())
}

/// Deletes routes `gone` and adds routes `new` of an adapter inside a
/// namespace (a route already there is kept, one already gone is fine).
pub fn change_routes_inside(netns_path: &str, ifname: &str, gone: &[Route], new: &[Route]) -> Result<()> {
    let mut nl = Rtnl::open_in(netns_path)?;
    let dev = IfName::new(ifname)?;
    for r in gone {
        let host =
            HostRoute { dev: dev.clone(), destination: r.destination, via: r.via, src: None, table: HostRoute::MAIN };
        nl.delete_route(&host)?;
    }
    for r in new {
        match nl.append_route(ifname, r) {
            Err(e) if e.kind() == ErrorKind::Exists => {}
            other => other?,
        }
    }
    Ok(())
}

/// Creates the host's own bridge-mode macvlan `name` on `parent` if it is
/// missing, and sets it up (how the host reaches the macvlans of its
/// endpoints, which the parent itself cannot).
pub fn ensure_macvlan(name: &IfName, parent: &IfName, mac: Mac, mtu: u32) -> Result<()> {
    let mut nl = Rtnl::open()?;
    if nl.index(name.as_str())?.is_none() {
        match nl.add_macvlan(name.as_str(), parent.as_str(), mac, mtu, None) {
            Err(e) if e.kind() != ErrorKind::Exists => return Err(e),
            _ => {}
        }
    }
    nl.set_up(name.as_str(), true)
}

/// The VLAN an adapter inside a namespace is an access port of, if any.
pub fn vlan_inside(netns_path: &str, ifname: &str) -> Result<Option<u16>> {
    Rtnl::open_in(netns_path)?.vlan(ifname)
}

/// Adds or replaces a host route.
pub fn replace_route(r: &HostRoute) -> Result<()> {
    Rtnl::open()?.replace_route(r)
}

/// Deletes a host route; succeeds when it is gone.
pub fn delete_route(r: &HostRoute) -> Result<()> {
    Rtnl::open()?.delete_route(r)
}

/// The host routes through `dev` in `table`.
pub fn routes_in(dev: &IfName, table: u32) -> Result<Vec<HostRoute>> {
    Rtnl::open()?.routes_in(dev, table)
}

/// Makes the host answer ARP/ND for `ip` on `dev`.
pub fn add_proxy_neighbour(dev: &str, ip: std::net::IpAddr) -> Result<()> {
    Rtnl::open()?.add_proxy_neighbour(dev, ip)
}

/// Removes a proxy neighbour entry; succeeds when it is gone.
pub fn delete_proxy_neighbour(dev: &str, ip: std::net::IpAddr) -> Result<()> {
    Rtnl::open()?.delete_proxy_neighbour(dev, ip)
}

/// The proxy neighbour entries on `dev`.
pub fn proxy_neighbours(dev: &str) -> Result<Vec<std::net::IpAddr>> {
    Rtnl::open()?.proxy_neighbours(dev)
}

/// Adds the IPv4 policy rule unless it is there.
pub fn ensure_rule(rule: &Rule) -> Result<()> {
    Rtnl::open()?.ensure_rule(rule, false)
}

/// Deletes the IPv4 policy rule; succeeds when it is gone.
pub fn delete_rule(rule: &Rule) -> Result<()> {
    Rtnl::open()?.delete_rule(rule, false)
}

/// The IPv4 policy rules that match on an input interface.
pub fn rules() -> Result<Vec<Rule>> {
    Rtnl::open()?.rules(false)
}

/// Puts an existing host-side link (back) on its bridge, up.
///
/// A bridge port needs no IPv6 of its own, so it gets none: otherwise every
/// port adds routes (ff00::/8, fe80::/64) to one node of the host's IPv6 FIB,
/// which every IPv6 lookup then walks, plus address detection and multicast
/// reports. With 10,000 ports that walk took a quarter of the CPU here.
pub fn enslave(name: &IfName, bridge: &IfName, port: PortFlags) -> Result<()> {
    // An IfName holds no '/' and is not "." or "..": the key stays in the link's directory.
    crate::sysctl::set(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1")?;
    Rtnl::open()?.enslave(name.as_str(), bridge.as_str(), port)
}

/// All links of a namespace (one dump).
pub fn links(netns: Option<&str>) -> Result<Vec<LinkInfo>> {
    rtnl(netns)?.links()
}

/// One link, or `None` when it does not exist.
pub fn link(netns: Option<&str>, name: &str) -> Result<Option<LinkInfo>> {
    rtnl(netns)?.link(name)
}

/// Sets link `name`'s MTU, in `netns` (a path) or the calling thread's namespace.
pub fn set_mtu(netns: Option<&str>, name: &str, mtu: u32) -> Result<()> {
    rtnl(netns)?.set_mtu(name, mtu)
}

/// A link's traffic counters, or `None` when it does not exist.
pub fn link_stats(netns: Option<&str>, name: &str) -> Result<Option<crate::types::LinkStats>> {
    rtnl(netns)?.link_stats(name)
}

/// Global-scope addresses of a link; an error of kind
/// [`ErrorKind::NotFound`] when there is no such link.
pub fn addresses(netns: Option<&str>, dev: &str) -> Result<Vec<Addr>> {
    let mut nl = rtnl(netns)?;
    let index = nl.index(dev)?.ok_or_else(|| DataplaneError::Netlink {
        what: format!("listing the addresses of link {dev}"),
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    })?;
    nl.addresses(index)
}

/// Removes one address from a link; succeeds when the address or the link is not there.
pub fn delete_address(netns: Option<&str>, dev: &str, addr: Addr) -> Result<()> {
    rtnl(netns)?.delete_address(dev, &addr)
}

/// An endpoint's adapter `ifname` as seen inside the namespace at
/// `netns_path`: the link, its addresses and its routes, read over one socket
/// opened in that namespace. `None` when there is no such link.
pub fn inside(netns_path: &str, ifname: &str) -> Result<Option<Inside>> {
    let mut nl = Rtnl::open_in(netns_path)?;
    let Some(link) = nl.link(ifname)? else { return Ok(None) };
    let addrs = nl.addresses(link.index)?;
    let routes = nl.routes(link.index)?;
    Ok(Some(Inside { link, addrs, routes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{in_private_netns, NamedNetns};
    use crate::{Mac, Route};

    fn name(s: &str) -> IfName {
        IfName::new(s).unwrap()
    }

    fn addr(s: &str) -> Addr {
        let (ip, len) = s.split_once('/').unwrap();
        Addr { ip: ip.parse().unwrap(), prefix_len: len.parse().unwrap() }
    }

    const BRIDGE_MAC: Mac = Mac([2, 0, 0, 0, 9, 1]);
    const INSIDE_MAC: Mac = Mac([2, 0, 0, 0, 9, 2]);

    fn bridge() -> BridgeSpec {
        BridgeSpec {
            name: name("cnt-br0"),
            mac: BRIDGE_MAC,
            mtu: 1400,
            addrs: vec![addr("10.9.0.1/24"), addr("fd00:9::1/64")],
        }
    }

    fn default_route() -> Route {
        Route { destination: addr("0.0.0.0/0"), via: Some("10.9.0.1".parse().unwrap()), metric: 0 }
    }

    fn veth(ns: &NamedNetns) -> VethSpec {
        VethSpec {
            netns_path: ns.path.clone(),
            ifname: name("eth0"),
            host_name: name("cnt-h0"),
            bridge: name("cnt-br0"),
            mac: Some(INSIDE_MAC),
            mtu: 1400,
            addrs: vec![addr("10.9.0.2/24")],
            routes: vec![default_route(), Route { destination: addr("10.10.0.0/16"), via: None, metric: 50 }],
            port: PortFlags { hairpin: true, isolated: false },
        }
    }

    #[test]
    fn a_tap_is_made_on_the_bridge_up_with_its_mtu_and_waits_for_its_vmm() {
        in_private_netns(|| {
            ensure_bridge(&bridge()).unwrap();
            let spec = crate::tap::TapSpec {
                name: name("cnt-vm0"),
                vnet_hdr: true,
                multi_queue: false,
                owner: None,
                group: None,
            };
            create_tap(&spec, 1400, &name("cnt-br0"), PortFlags::default()).unwrap();
            let l = link(None, "cnt-vm0").unwrap().expect("the TAP");
            assert_eq!(
                (l.kind.as_deref(), l.master.as_deref(), l.up, l.mtu),
                (Some("tun"), Some("cnt-br0"), true, 1400)
            );
            // Creating it again attaches to the existing TAP (TUNSETIFF with
            // the same flags): idempotent, still on its bridge.
            create_tap(&spec, 1400, &name("cnt-br0"), PortFlags::default()).unwrap();
            assert_eq!(link(None, "cnt-vm0").unwrap().and_then(|l| l.master).as_deref(), Some("cnt-br0"));
            // The VMM attaches by name.
            let _vmm =
                crate::tap::open("cnt-vm0", crate::tap::IFF_TAP | crate::tap::IFF_NO_PI | crate::tap::IFF_VNET_HDR)
                    .unwrap();
            delete_link(None, "cnt-vm0").unwrap();
            assert_eq!(link(None, "cnt-vm0").unwrap(), None);
        });
    }

    #[test]
    fn an_endpoint_on_a_bridge_reads_back_as_built() {
        in_private_netns(|| {
            let ns = NamedNetns::new();
            ensure_bridge(&bridge()).unwrap();
            ensure_bridge(&bridge()).unwrap();
            create_veth(&veth(&ns)).unwrap();

            let all = links(None).unwrap();
            let br = all.iter().find(|l| l.name == "cnt-br0").unwrap();
            assert_eq!((br.kind.as_deref(), br.up, br.mac, br.mtu), (Some("bridge"), true, Some(BRIDGE_MAC), 1400));
            let host = link(None, "cnt-h0").unwrap().unwrap();
            assert_eq!(all.iter().find(|l| l.name == "cnt-h0"), Some(&host));
            assert_eq!(
                (host.kind.as_deref(), host.master.as_deref(), host.up, host.mtu),
                (Some("veth"), Some("cnt-br0"), true, 1400)
            );
            assert_eq!(link(None, "cnt-none").unwrap(), None);
            assert_eq!(crate::sysctl::get("net/ipv6/conf/cnt-h0/disable_ipv6").as_deref(), Some("1"));

            let seen = inside(&ns.path, "eth0").unwrap().unwrap();
            assert_eq!((seen.link.mac, seen.link.up, seen.link.mtu), (Some(INSIDE_MAC), true, 1400));
            assert_eq!(seen.link.kind.as_deref(), Some("veth"));
            assert_eq!(seen.addrs, vec![addr("10.9.0.2/24")]);
            assert!(seen.routes.contains(&default_route()), "{:?}", seen.routes);
            assert!(seen.routes.contains(&Route { destination: addr("10.10.0.0/16"), via: None, metric: 50 }));
            assert!(seen.routes.iter().any(|r| r.destination == addr("10.9.0.0/24") && r.via.is_none()));
            assert_eq!(inside(&ns.path, "eth1").unwrap(), None);
            assert!(link(Some(&ns.path), "lo").unwrap().unwrap().up);
        });
    }

    /// Two namespaces whose macvtaps get the same index (as two test
    /// worlds' hosts do): the node `/dev/tap<index>` is the first one's,
    /// and the second is made again until its node is its own.
    #[test]
    fn a_macvtap_whose_dev_node_is_another_namespaces_is_made_again() {
        let macvtap = |n: u8| MacvtapSpec {
            name: name(&format!("cnt-mvt{n}")),
            parent: name("cnt-br0"),
            mac: Mac([2, 0, 0, 0, 9, 10 + n]),
            mtu: 1400,
            vlan: None,
            owner: None,
            group: None,
        };
        let (made, done) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        let (made, done) = (std::sync::Arc::new(made), std::sync::Arc::new(done));
        let (first_made, first_done) = (made.clone(), done.clone());
        let first = std::thread::spawn(move || {
            in_private_netns(move || {
                let path = ensure_bridge(&bridge()).and_then(|_| create_macvtap(&macvtap(1)));
                first_made.wait();
                first_done.wait();
                path.unwrap()
            })
        });
        let second = in_private_netns(move || {
            let bridged = ensure_bridge(&bridge());
            made.wait();
            // The same links in the same order: the same next index.
            let path = bridged.and_then(|_| create_macvtap(&macvtap(2)));
            let owner = path.as_ref().ok().map(|p| crate::tap::device_name(p).map_err(|e| e.to_string()));
            done.wait();
            (path.unwrap(), owner.expect("a path").unwrap())
        });
        let first = first.join().unwrap();
        let (Some(first), Some((second, owner))) = (first, second) else { return };
        assert_eq!(owner, "cnt-mvt2", "{second} is the second namespace's macvtap");
        assert_ne!(first, second);
    }

    #[test]
    fn addresses_go_once_and_going_again_is_fine() {
        in_private_netns(|| {
            ensure_bridge(&bridge()).unwrap();
            let got = addresses(None, "cnt-br0").unwrap();
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(bridge().addrs.iter().all(|a| got.contains(a)), "{got:?}");
            assert_eq!(addresses(None, "cnt-none").unwrap_err().kind(), ErrorKind::NotFound);

            for a in &bridge().addrs {
                delete_address(None, "cnt-br0", *a).unwrap();
                delete_address(None, "cnt-br0", *a).unwrap();
            }
            delete_address(None, "cnt-none", addr("10.9.0.1/24")).unwrap();
            assert_eq!(addresses(None, "cnt-br0").unwrap(), vec![]);

            // Put back without re-creating the bridge.
            let index = link(None, "cnt-br0").unwrap().unwrap().index;
            ensure_bridge(&bridge()).unwrap();
            assert_eq!(link(None, "cnt-br0").unwrap().unwrap().index, index);
            assert_eq!(addresses(None, "cnt-br0").unwrap().len(), 2);
        });
    }

    #[test]
    fn a_second_endpoint_of_the_same_names_is_refused_and_leaves_the_first_alone() {
        in_private_netns(|| {
            let ns = NamedNetns::new();
            ensure_bridge(&bridge()).unwrap();
            create_veth(&veth(&ns)).unwrap();
            let e = create_veth(&veth(&ns)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
            assert!(link(None, "cnt-h0").unwrap().is_some());
            assert!(inside(&ns.path, "eth0").unwrap().is_some());

            delete_link(None, "cnt-h0").unwrap();
            delete_link(None, "cnt-h0").unwrap();
            assert_eq!(inside(&ns.path, "eth0").unwrap(), None, "the peer goes with the host side");
            delete_link(Some(&ns.path), "eth0").unwrap();
        });
    }

    #[test]
    fn an_endpoint_that_cannot_be_plugged_in_is_removed_again() {
        in_private_netns(|| {
            let ns = NamedNetns::new();
            let spec = VethSpec { bridge: name("cnt-nobr"), ..veth(&ns) };
            let e = create_veth(&spec).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains("cnt-nobr"), "{e}");
            assert_eq!(link(None, "cnt-h0").unwrap(), None);
            assert_eq!(inside(&ns.path, "eth0").unwrap(), None);

            let e = enslave(&name("cnt-none"), &name("cnt-br0"), PortFlags::default()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        });
    }
}
