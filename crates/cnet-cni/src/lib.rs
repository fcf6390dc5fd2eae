//! cnet's CNI plugin: CNI 1.1 (ADD, DEL, CHECK, STATUS, GC, VERSION) for every
//! spec version a runtime sends (0.3.0 to 1.1.0), as a thin client of cnetd.
//!
//! Invariants:
//! - The plugin keeps no state of its own: the endpoint of an attachment has
//!   an ID derived from `(network name, CNI_CONTAINERID, CNI_IFNAME)` (the
//!   spec's primary key), so DEL, CHECK and GC find it without a cache.
//! - VERSION never needs the daemon.
//! - Every failure is a CNI error object on stdout with a well-known code
//!   (4 environment, 6 decode, 7 config, 11 try again, ...) and a message a
//!   person can act on.

pub mod config;
pub mod error;
pub mod invocation;
pub mod plugin;
pub mod result;

/// Spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
