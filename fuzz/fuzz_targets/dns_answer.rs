//! cnetd's DNS answer to any bytes, from a client of the sample network
//! and from a stranger, over UDP and TCP: it must answer or drop, never
//! panic, and an answer must be a DNS message.
#![no_main]

use std::sync::OnceLock;

use cnetd::dns::answer::{respond, servfail, Reply};
use cnetd::dns::names::Index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static INDEX: OnceLock<Index> = OnceLock::new();
    let ix = INDEX.get_or_init(Index::sample);
    let net = uuid::Uuid::from_u128(1);
    for (client, udp) in [("10.0.0.2", true), ("10.0.0.2", false), ("192.0.2.9", true)] {
        if let Reply::Answer(b) = respond(data, client.parse().unwrap(), net, ix, udp) {
            assert!(b.len() >= 12, "an answer shorter than a DNS header");
            assert_eq!(b[..2], data[..2], "an answer with another ID");
        }
    }
    let _ = servfail(data);
});
