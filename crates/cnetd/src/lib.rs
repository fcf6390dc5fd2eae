//! cnetd: the cnet host network service.
//!
//! The life of a request, top down: [`api`] (HTTP/JSON on a Unix socket;
//! wire structs in, records out) → [`service`] (one file per object kind:
//! validation, intents, lifecycles and rollbacks) → [`state`] (the one owner
//! of the store) and [`driver`] (one file per network type) with
//! [`firewall`] (the one owner of the nftables table) and [`policy`] (of the
//! policy table: ACLs) → [`dataplane`] (the
//! seam: the kernel, or a fake in tests). [`reconcile`] repairs at start,
//! [`diag`] compares the store with the kernel; both answer findings (`cnet_model::findings`).
//! [`docker`] answers Docker's network and IPAM plugin protocol on a socket of its own.
//! See `docs/architecture.md`.

pub mod allocator;
pub mod api;
pub mod cluster;
pub mod daemon;
pub mod dataplane;
pub mod dhcp;
pub mod diag;
pub mod dns;
pub mod docker;
pub mod driver;
pub mod error;
pub mod firewall;
pub mod policy;
pub mod privilege;
pub mod reconcile;
pub mod service;
pub mod state;
