//! Addresses of links: add (with the IPv4 broadcast), list, delete.
//!
//! Invariants (as for every [`Rtnl`] request): deletes succeed when the
//! address or the link is gone.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope};
use netlink_packet_route::RouteNetlinkMessage;

use super::{failed, family, is_not_found, Rtnl};
use crate::{Addr, Result};

impl Rtnl {
    pub(super) fn address_message(index: u32, addr: &Addr) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family(&addr.ip);
        m.header.prefix_len = addr.prefix_len;
        m.header.index = index;
        if addr.ip.is_ipv6() {
            // Our addresses are unique by allocation: skip duplicate detection,
            // which would hold the address back for a second or more.
            m.header.flags = AddressHeaderFlags::Nodad;
        }
        m.attributes.push(AddressAttribute::Local(addr.ip));
        m.attributes.push(AddressAttribute::Address(addr.ip));
        m
    }

    /// Adds an address to link `dev` (`replace`: succeed when it is there).
    pub fn add_address(&mut self, dev: &str, addr: &Addr, replace: bool) -> Result<()> {
        let index = self.require_index(dev)?;
        let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        let mut m = Self::address_message(index, addr);
        // The subnet's broadcast address (`ip addr add … brd +`), which some
        // programs read; /31 and /32 have none.
        if let (IpAddr::V4(ip), 0..=30) = (addr.ip, addr.prefix_len) {
            let bcast = u32::from(ip) | (u32::MAX >> addr.prefix_len);
            m.attributes.push(AddressAttribute::Broadcast(bcast.into()));
        }
        self.request(|| format!("adding address {addr} to {dev}"), RouteNetlinkMessage::NewAddress(m), flags)
    }

    /// Global-scope addresses of the link with `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Addr>> {
        let answers = self
            .exchange(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)
            .map_err(|e| failed("listing addresses", e))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == index && a.header.scope == AddressScope::Universe =>
                {
                    // IFA_LOCAL is the address itself; IFA_ADDRESS is the
                    // peer on point-to-point links, and the only one for IPv6.
                    let local = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = local.or_else(|| {
                        a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    Some(Addr { ip, prefix_len: a.header.prefix_len })
                }
                _ => None,
            })
            .collect())
    }

    /// Removes `addr` from link `dev`; succeeds when the address or the link
    /// is not there.
    pub fn delete_address(&mut self, dev: &str, addr: &Addr) -> Result<()> {
        let Some(index) = self.index(dev)? else { return Ok(()) };
        match self.exchange(RouteNetlinkMessage::DelAddress(Self::address_message(index, addr)), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(failed(format!("deleting address {addr} from {dev}"), e)),
        }
    }
}
