//! Single nf_tables lookups over netlink, without libnftables: whether a
//! table exists, and a named counter's values.
//!
//! Why not libnftables: every command there first fetches a cache of the
//! ruleset, which costs a second and more with 20,000 policy rules; these
//! lookups are one request and one answer whatever the ruleset's size.
//!
//! Invariants: requests are read-only (GET messages); a missing table or
//! object is `Ok(false)` / `Ok(None)`, never an error.

use std::io;

use crate::error::{DataplaneError, Result};
use crate::nfnetlink::{attributes, message, put, Nfnl, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
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
    fn proto(self) -> u8 {
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

fn cstr(s: &str) -> Vec<u8> {
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
}
