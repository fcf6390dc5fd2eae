//! The `cnet` command line: argument parsing helpers and table output.
//! The binary (`main.rs`) only wires clap to API calls.

pub mod policies;
pub mod ports;
pub mod table;
pub mod views;
