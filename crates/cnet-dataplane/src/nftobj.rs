//! Single nf_tables requests over netlink, without libnftables: whether a
//! table exists, a named counter's values, and deleting a table.
//!
//! Why not libnftables: every command there first fetches a cache of the
//! ruleset, which costs a second and more with 20,000 policy rules; these
//! lookups are one request and one answer whatever the ruleset's size.
//!
//! Why a table is deleted here: libnftables closes its socket when a
//! context is freed, and after a deletion that close waits for the deleted
//! objects to be freed (an RCU grace period, 10–16 ms here). A container's
//! namespace gets a context of its own, freed after each call; deleting
//! its egress guards through libnftables made every Transparent teardown
//! that much slower. Here the socket is closed in the background.
//!
//! Invariants: lookups are read-only (GET messages); a missing table or
//! object is `Ok(false)` / `Ok(None)`, never an error; deleting a table
//! that is gone succeeds.

use std::io;

use crate::error::{DataplaneError, Result};
use crate::nfnetlink::{
    attributes, message, nftables_batch, put, Nfnl, NFNL_SUBSYS_NFTABLES, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST,
};

const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_NEWOBJ: u8 = 18;
const NFT_MSG_GETOBJ: u8 = 19;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

/// An nftables address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Inet,
    Bridge,
    Netdev,
}

impl Family {
    pub(crate) fn proto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Netdev => 5,
            Family::Bridge => 7,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

/// A counter's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

pub(crate) fn cstr(s: &str) -> Vec<u8> {
    [s.as_bytes(), &[0]].concat()
}

/// One GET request (`request`, given its sequence number) on the shared
/// socket and its one answer's payload, of message type `answer`; `None`
/// on ENOENT or when nothing answered.
pub(crate) fn lookup(request: impl FnOnce(u32) -> Vec<u8>, answer: u8) -> io::Result<Option<Vec<u8>>> {
    Nfnl::with_shared(|nl| {
        let request = request(nl.next_seq());
        let mut got = None;
        match nl.exchange(&request, NFNL_SUBSYS_NFTABLES << 8 | u16::from(answer), |p| {
            got = Some(p.to_vec());
            Ok(())
        }) {
            Ok(()) => Ok(got),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// One GET request of `msg` with `attrs` and its answer's payload; `None` on ENOENT.
fn get(family: Family, msg: u8, answer: u8, attrs: &[u8], what: &str) -> Result<Option<Vec<u8>>> {
    let request = |seq| message(NFNL_SUBSYS_NFTABLES, msg, NLM_F_REQUEST | NLM_F_ACK, seq, family.proto(), attrs);
    lookup(request, answer).map_err(|source| DataplaneError::Netlink { what: what.to_string(), source })
}

/// Whether table `family name` exists in the calling thread's namespace.
pub fn table_exists(family: Family, name: &str) -> Result<bool> {
    let mut attrs = Vec::new();
    put(&mut attrs, NFTA_TABLE_NAME, &cstr(name));
    let what = format!("looking up table {} {name}", family.as_str());
    Ok(get(family, NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, &attrs, &what)?.is_some())
}

/// Deletes table `family name` of the calling thread's namespace, with all
/// it holds, in one transaction; succeeds when there is no such table.
pub fn delete_table(family: Family, name: &str) -> Result<()> {
    let what = || format!("deleting table {} {name}", family.as_str());
    Nfnl::with_shared(|nl| {
        let batch = delete_table_batch(nl.next_seq(), family, name);
        match nl.exchange(&batch, 0, |_| Ok(())) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    })
    .map_err(|source| DataplaneError::Netlink { what: what(), source })
}

/// The batch that deletes one table: begin, the deletion (acknowledged),
/// end, all with sequence number `seq`.
fn delete_table_batch(seq: u32, family: Family, name: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    put(&mut attrs, NFTA_TABLE_NAME, &cstr(name));
    let delete =
        message(NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, seq, family.proto(), &attrs);
    nftables_batch(seq, &delete, seq)
}

/// The values of counter `name` in table `family table`; `None` when the
/// table or the counter does not exist.
pub fn counter(family: Family, table: &str, name: &str) -> Result<Option<Counter>> {
    let what = format!("reading counter {name} of {} {table}", family.as_str());
    let Some(payload) = get(family, NFT_MSG_GETOBJ, NFT_MSG_NEWOBJ, &counter_request(table, name), &what)? else {
        return Ok(None);
    };
    let bad = |why: &str| DataplaneError::Netlink {
        what: what.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, why.to_string()),
    };
    // The answer: nfgenmsg, then attributes; the values are in NFTA_OBJ_DATA.
    let attrs = payload.get(crate::nfnetlink::NFGENMSG_LEN..).ok_or_else(|| bad("a short answer"))?;
    let data = attributes(attrs)
        .map_err(|e| bad(&e))?
        .into_iter()
        .find(|(k, _)| *k & !NLA_F_NESTED == NFTA_OBJ_DATA)
        .ok_or_else(|| bad("no counter data"))?
        .1;
    let mut c = Counter::default();
    for (kind, value) in attributes(data).map_err(|e| bad(&e))? {
        let v = u64::from_be_bytes(value.try_into().map_err(|_| bad("a counter value is not 8 bytes"))?);
        match kind {
            NFTA_COUNTER_BYTES => c.bytes = v,
            NFTA_COUNTER_PACKETS => c.packets = v,
            _ => {}
        }
    }
    Ok(Some(c))
}

fn counter_request(table: &str, name: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    put(&mut attrs, NFTA_OBJ_TABLE, &cstr(table));
    put(&mut attrs, NFTA_OBJ_NAME, &cstr(name));
    put(&mut attrs, NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes());
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::in_private_netns;

    #[test]
    fn a_counter_request_names_table_counter_and_type() {
        let a = counter_request("t", "c");
        assert_eq!(attributes(&a).unwrap(), vec![(1, &b"t\0"[..]), (2, &b"c\0"[..]), (3, &[0, 0, 0, 1][..])]);
    }

    #[test]
    fn tables_and_counters_are_read_as_nft_sees_them() {
        in_private_netns(|| {
            assert!(!table_exists(Family::Bridge, "t").unwrap());
            assert_eq!(counter(Family::Bridge, "t", "c").unwrap(), None, "no table");
            crate::nft::apply(concat!(
                "table bridge t {\n",
                "  counter c { packets 7 bytes 700 }\n",
                "}\n",
                "table inet t {}\n",
            ))
            .unwrap();
            assert!(table_exists(Family::Bridge, "t").unwrap());
            assert!(table_exists(Family::Inet, "t").unwrap());
            assert_eq!(counter(Family::Bridge, "t", "c").unwrap(), Some(Counter { packets: 7, bytes: 700 }));
            assert_eq!(counter(Family::Bridge, "t", "d").unwrap(), None, "no counter");
            assert_eq!(counter(Family::Inet, "t", "c").unwrap(), None, "another family's");
        });
    }

    #[test]
    fn a_table_is_deleted_with_what_it_holds_and_deleting_it_again_succeeds() {
        in_private_netns(|| {
            crate::nft::apply(concat!(
                "table netdev g {\n",
                "  counter c {}\n",
                "  chain e { type filter hook ingress device \"lo\" priority -300; policy accept; }\n",
                "}\n",
                "table inet g {}\n",
            ))
            .unwrap();
            delete_table(Family::Netdev, "g").unwrap();
            assert!(!table_exists(Family::Netdev, "g").unwrap());
            assert!(table_exists(Family::Inet, "g").unwrap(), "only the family named");
            delete_table(Family::Netdev, "g").unwrap();
            // The name is free: a new table of that name is empty.
            crate::nft::apply("table netdev g {}").unwrap();
            assert_eq!(counter(Family::Netdev, "g", "c").unwrap(), None);
        });
    }

    #[test]
    fn a_delete_batch_is_framed_for_the_nftables_subsystem() {
        let b = delete_table_batch(5, Family::Netdev, "g");
        let (begin, rest) = b.split_at(20);
        assert_eq!(u16::from_ne_bytes(begin[4..6].try_into().unwrap()), 0x10, "batch begin");
        assert_eq!(&begin[18..20], &[0, 10], "res_id: the nftables subsystem, network order");
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        assert_eq!(u16::from_ne_bytes(rest[4..6].try_into().unwrap()), 10 << 8 | 2, "DELTABLE");
        assert_eq!(u16::from_ne_bytes(rest[6..8].try_into().unwrap()), 0x5, "REQUEST|ACK");
        assert_eq!(rest[16], 5, "the netdev family");
        assert_eq!(attributes(&rest[20..len]).unwrap(), vec![(1, &b"g\0"[..])]);
        assert_eq!(u16::from_ne_bytes(rest[len + 4..len + 6].try_into().unwrap()), 0x11, "batch end");
        assert_eq!(rest.len(), len + 20);
    }
}
