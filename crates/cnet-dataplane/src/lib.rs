//! The kernel side of cnet: network namespaces, links, addresses and routes,
//! nftables transactions, conntrack entries and sysctls.
//!
//! Layers: [`types`] is the vocabulary (names, addresses, specifications);
//! [`netlink`] speaks route netlink and [`conntrack`] ctnetlink; [`link`] builds
//! bridges and veths and reads them back on top of [`netlink`]; [`nft`] owns
//! nftables transactions; [`cmd`] runs the remaining helper programs.
//!
//! Invariants:
//! - Nothing here calls `setns` on the calling thread. Work inside another
//!   namespace runs either in a child process that enters the namespace
//!   before `exec` ([`cmd::Cmd::netns`]), or on a short-lived thread of its
//!   own ([`netns::run_in`]), which is also how a netlink socket is opened
//!   inside another namespace; the caller's thread never changes namespace,
//!   so an async runtime's workers are safe.
//! - Links, addresses and routes are read and changed over route netlink in
//!   process ([`netlink`]), never by parsing `ip` output; `ip` remains only
//!   for `ip netns add/delete`. Every nftables change is one atomic
//!   transaction ([`nft`]).
//! - Deletes succeed when the thing is already gone.
//! - Every error has a [`ErrorKind`], decided from the errno or by one
//!   classifier per helper tool when the error is made ([`error`]).

pub mod cmd;
pub mod conntrack;
pub mod error;
pub mod link;
pub mod netlink;
pub mod netns;
mod nfnetlink;
pub mod nft;
pub mod nftobj;
pub mod nftwatch;
pub mod nftwrite;
pub mod probe;
pub mod qos;
pub mod reaper;
pub mod sysctl;
pub mod tap;
pub mod types;

pub use error::{DataplaneError, ErrorKind, Result};

/// Entry points of the fuzz targets (`fuzz/`): checks of cnet's own netlink
/// codecs that panic on a mismatch.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::conntrack::check_round_trip as conntrack_round_trip;
    pub use crate::nfnetlink::check_round_trip as attributes_round_trip;
    pub use crate::nft::check_element_request;
}
pub use types::*;

#[cfg(test)]
mod testutil;
