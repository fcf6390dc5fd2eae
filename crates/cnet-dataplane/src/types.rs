//! The data plane's vocabulary: names, addresses and the specifications of
//! what it builds, plus what it reads back from the kernel.
//!
//! Invariants:
//! - An [`IfName`] is a name the kernel accepts for a link and that is safe
//!   in a `/proc/sys` path (checked once, in [`IfName::new`]).
//! - A [`Mac`] travels as its six bytes; it is formatted only for people.
//! - Nothing here talks to the kernel; this module depends on no other module
//!   of the crate but the error type.

use std::fmt;
use std::net::IpAddr;

use crate::{DataplaneError, Result};

/// An Ethernet address. Displays as `aa:bb:cc:dd:ee:ff`, lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A link name the kernel accepts: 1 to 15 bytes (`IFNAMSIZ` - 1), none of
/// them `/`, `:`, NUL or whitespace, and not `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

impl IfName {
    /// The longest name the kernel takes, in bytes.
    pub const MAX_LEN: usize = 15;

    /// Checks `name` as the kernel's `dev_valid_name` does.
    pub fn new(name: impl Into<String>) -> Result<IfName> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty".to_string())
        } else if name.len() > Self::MAX_LEN {
            Some(format!("it is {} bytes long, the kernel takes at most {}", name.len(), Self::MAX_LEN))
        } else if name == "." || name == ".." {
            Some("it is reserved".to_string())
        } else if name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
            Some("it contains '/', ':', a NUL byte or whitespace".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(DataplaneError::Invalid { what: format!("interface name {name:?}"), reason }),
            None => Ok(IfName(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An address with its prefix length. Displays as `ip/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

/// A route through one link: to `destination`, directly or `via` a gateway.
/// A metric of 0 means none was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub destination: Addr,
    pub via: Option<IpAddr>,
    pub metric: u32,
}

/// A network's bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: IfName,
    pub mac: Mac,
    pub mtu: u32,
    /// Host addresses on the bridge (the gateways); empty for Private.
    pub addrs: Vec<Addr>,
}

/// An endpoint's veth pair: `ifname` inside the namespace at `netns_path`,
/// `host_name` in the caller's namespace, on `bridge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    pub netns_path: String,
    pub ifname: IfName,
    pub host_name: IfName,
    pub bridge: IfName,
    /// The inside's MAC; `None` lets the kernel pick one.
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    /// The host side's bridge port flags.
    pub port: PortFlags,
}

/// An endpoint's macvlan: `ifname` inside the namespace at `netns_path`,
/// on the host link `parent` (the uplink), bridge mode; with `vlan`, an
/// access port of that VLAN ([`crate::netlink::vlan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacvlanSpec {
    pub netns_path: String,
    pub ifname: IfName,
    pub parent: IfName,
    pub vlan: Option<u16>,
    pub mac: Mac,
    pub mtu: u32,
    /// Empty when a DHCP lease brings them later.
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
}

/// A VM endpoint's macvtap `name` on the host link `parent` (the uplink),
/// bridge mode, with the guest's MAC; with `vlan`, an access port of that
/// VLAN; its character device owned by `owner`/`group` when given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacvtapSpec {
    pub name: IfName,
    pub parent: IfName,
    pub mac: Mac,
    pub mtu: u32,
    pub vlan: Option<u16>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// A host route: `destination` through `dev` (via a gateway or on-link),
/// in routing table `table` (254 is the main table).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRoute {
    pub dev: IfName,
    pub destination: Addr,
    pub via: Option<IpAddr>,
    /// The preferred source address for the host's own packets.
    pub src: Option<IpAddr>,
    pub table: u32,
}

impl HostRoute {
    pub const MAIN: u32 = 254;
}

impl fmt::Display for HostRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.table != Self::MAIN {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// A policy routing rule: packets that came in on `iif` look up `table`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub iif: IfName,
    pub table: u32,
    pub priority: u32,
}

/// How a port sits on its bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortFlags {
    /// Frames may go back out the port they came in on (NAT loopback).
    pub hairpin: bool,
    /// The port talks only to the bridge, never to other isolated ports.
    pub isolated: bool,
}

/// What the kernel says about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// `IFLA_INFO_KIND`: "bridge", "veth", …; `None` for loopback and
    /// physical devices.
    pub kind: Option<String>,
    /// The name of the link's master (its bridge).
    pub master: Option<String>,
    /// `IFF_UP`: set up administratively.
    pub up: bool,
    /// `None` when the link has no Ethernet address.
    pub mac: Option<Mac>,
    pub mtu: u32,
}

/// A link's traffic counters (`IFLA_STATS64`), as the link sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// An endpoint's adapter as seen inside its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inside {
    pub link: LinkInfo,
    /// Global-scope addresses.
    pub addrs: Vec<Addr>,
    /// Main-table routes through the link.
    pub routes: Vec<Route>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_display_lower_case_with_colons() {
        assert_eq!(Mac([2, 0, 0x0a, 0xff, 0, 1]).to_string(), "02:00:0a:ff:00:01");
    }

    #[test]
    fn addrs_display_as_ip_slash_len() {
        let a = Addr { ip: "fd00::1".parse().unwrap(), prefix_len: 64 };
        assert_eq!(a.to_string(), "fd00::1/64");
    }

    #[test]
    fn interface_names_the_kernel_refuses_are_refused() {
        for good in ["eth0", "cnet-0123456789", "a", "br.100", "vé"] {
            assert_eq!(IfName::new(good).unwrap().as_str(), good);
        }
        for bad in ["", ".", "..", "a/b", "a b", "a\tb", "a:1", "a\0", "cnet-01234567890", "véééééééé"] {
            let e = IfName::new(bad).unwrap_err();
            assert!(e.to_string().starts_with("interface name"), "{bad:?}: {e}");
        }
    }
}
