//! `cnet-netavark`: Podman's network backend on cnet. It speaks netavark's
//! command-line protocol (see `docs/podman.md`) and forwards every call to
//! cnetd, which owns the networks, endpoints, ports and names.

pub mod backend;
pub mod cli;
pub mod mapping;
pub mod types;
