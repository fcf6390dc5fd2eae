//! Every netlink message cnet builds and parses by hand (nfnetlink
//! attributes, conntrack entries and the delete requests made from them,
//! nf_tables element lookups): parsing never panics, and what cnet encodes
//! parses back to what it was made from.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cnet_dataplane::fuzzing::{attributes_round_trip, check_element_request, conntrack_round_trip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    attributes_round_trip(data);
    conntrack_round_trip(data);
    // An element lookup: the first bytes are the address, the rest names
    // the table and the set.
    if data.len() >= 17 {
        let ip = if data[0] & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&data[1..5]).unwrap()))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&data[1..17]).unwrap()))
        };
        let text = String::from_utf8_lossy(&data[17..]);
        let (table, set) = text.split_once('/').unwrap_or((&text, "s"));
        check_element_request(table, set, ip);
    }
});
