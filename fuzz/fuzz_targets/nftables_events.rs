//! The nf_tables change events cnetd reads from the kernel (netlink
//! messages with attributes): parsing any datagram never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cnet_dataplane::nftwatch::events(data);
});
