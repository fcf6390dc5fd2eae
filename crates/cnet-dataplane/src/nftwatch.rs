//! A watch on nf_tables' change events: the multicast group every ruleset
//! change is announced on (`NFNLGRP_NFTABLES`, what `nft monitor` reads), so
//! that cnetd restores its tables from the event of their deletion (another
//! tool's `nft flush ruleset`, a restart of the nftables service), instead
//! of listing them over and over.
//!
//! Invariants:
//! - A watch lives in the namespace of the thread that opened it and sees
//!   every change made there, by any process (cnetd's own included).
//! - [`TableWatch::wait`] blocks until at least one change, then gathers the
//!   burst that follows (a ruleset flush is one event per object), so one
//!   flush asks for one repair.
//! - Events the kernel dropped (a full socket buffer) are reported as
//!   `lost`: the caller then checks everything, as nothing can be ruled out.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NetlinkAddr};

use crate::nfnetlink::{attributes, NFGENMSG_LEN, NLMSG_HDRLEN};

/// `NFNLGRP_NFTABLES`.
const GROUP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nf_tables message types (`enum nf_tables_msg_types`).
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;
const NFT_MSG_NEWGEN: u8 = 15;
/// Every nf_tables object message names its table in attribute 1.
const ATTR_TABLE: u16 = 1;
/// How long a burst of events is gathered after its first one.
const BURST: Duration = Duration::from_millis(20);

/// What one change touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableEvent {
    /// The nftables family number (`NFPROTO_*`: 1 inet, 7 bridge, ...).
    pub family: u8,
    pub table: String,
    /// Whether it changed only set elements (an add or a delete of elements).
    pub elements_only: bool,
}

/// A burst of changes.
#[derive(Debug, Default)]
pub struct Burst {
    pub events: Vec<TableEvent>,
    /// Some events were lost: anything may have changed.
    pub lost: bool,
}

/// A socket subscribed to the ruleset's change events.
pub struct TableWatch {
    socket: Socket,
}

impl TableWatch {
    /// Subscribes in the calling thread's namespace.
    pub fn open() -> io::Result<TableWatch> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind(&NetlinkAddr::new(0, 0))?;
        socket.add_membership(GROUP_NFTABLES)?;
        Ok(TableWatch { socket })
    }

    /// The next burst of changes (blocks until there is one).
    pub fn wait(&mut self) -> io::Result<Burst> {
        let mut burst = Burst::default();
        let mut buf = Vec::with_capacity(1 << 16);
        self.read(&mut buf, 0, &mut burst)?;
        std::thread::sleep(BURST);
        loop {
            match self.read(&mut buf, libc::MSG_DONTWAIT, &mut burst) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(burst),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one datagram into `burst`; a lost-events error counts as lost.
    fn read(&self, buf: &mut Vec<u8>, flags: libc::c_int, burst: &mut Burst) -> io::Result<()> {
        buf.clear();
        match self.socket.recv(buf, flags) {
            Ok(_) => {
                burst.events.extend(events(buf));
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                burst.lost = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The table events in one datagram of the group (other messages, such as
/// the generation that ends each transaction, are skipped).
pub fn events(mut data: &[u8]) -> Vec<TableEvent> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        let payload = &data[NLMSG_HDRLEN..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        let (subsys, msg) = ((kind >> 8), (kind & 0xff) as u8);
        if subsys != NFNL_SUBSYS_NFTABLES || msg == NFT_MSG_NEWGEN || payload.len() < NFGENMSG_LEN {
            continue;
        }
        let table = attributes(&payload[NFGENMSG_LEN..])
            .ok()
            .and_then(|attrs| attrs.into_iter().find(|(k, _)| *k == ATTR_TABLE))
            .map(|(_, v)| String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned());
        if let Some(table) = table {
            let elements_only = msg == NFT_MSG_NEWSETELEM || msg == NFT_MSG_DELSETELEM;
            out.push(TableEvent { family: payload[0], table, elements_only });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::in_private_netns;

    #[test]
    fn a_flush_of_the_ruleset_is_one_burst_naming_every_table_it_deleted() {
        in_private_netns(|| {
            crate::nft::apply(concat!(
                "table inet mine {\n  chain c { type filter hook forward priority 0; }\n}\n",
                "table bridge other {\n  set s { type ifname; }\n}\n",
            ))
            .unwrap();
            let mut watch = TableWatch::open().unwrap();
            crate::nft::apply("flush ruleset\n").unwrap();
            let burst = watch.wait().unwrap();
            assert!(!burst.lost);
            let deleted: Vec<(u8, &str)> = burst.events.iter().map(|e| (e.family, e.table.as_str())).collect();
            assert!(deleted.contains(&(1, "mine")), "{burst:?}");
            assert!(deleted.contains(&(7, "other")), "{burst:?}");
            assert!(burst.events.iter().all(|e| !e.elements_only));

            // An element change is told apart from a change of the table's shape.
            crate::nft::apply("table inet t {\n  set s { type ipv4_addr; }\n}\n").unwrap();
            let _ = watch.wait().unwrap();
            crate::nft::apply("add element inet t s { 10.0.0.1 }\n").unwrap();
            let burst = watch.wait().unwrap();
            assert_eq!(burst.events, vec![TableEvent { family: 1, table: "t".into(), elements_only: true }]);
        });
    }
}
