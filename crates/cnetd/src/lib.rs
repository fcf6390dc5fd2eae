//! cnetd: the cnet host network service.
//!
//! Layers, top down: [`api`] (HTTP/JSON on a Unix socket) → [`service`]
//! (operations, intents, locking) → [`driver`] (how a network type is built)
//! and [`firewall`] (the nftables table) → `cnet-dataplane` (the kernel).
//! [`reconcile`] repairs at start and answers `cnet diag`.

pub mod api;
pub mod daemon;
pub mod driver;
pub mod firewall;
pub mod reconcile;
pub mod service;
