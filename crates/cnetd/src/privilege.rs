//! The capabilities cnetd keeps: it starts as root, and before its first
//! thread it keeps only what its work needs, in every set (bounding
//! included, so the helper programs it runs — `ip`, `tc` — get no more).
//!
//! | capability | what for |
//! |---|---|
//! | `CAP_NET_ADMIN` | links, addresses, routes, nftables, tc, sysctls of the network, TAP devices |
//! | `CAP_NET_RAW` | the DHCP client's and server's raw sockets, conntrack and probes |
//! | `CAP_NET_BIND_SERVICE` | DNS on port 53 and DHCP on 67 in the networks |
//! | `CAP_SYS_ADMIN` | entering and creating network namespaces (`setns`, `unshare`, the bind mounts of `/run/netns`), eBPF programs (VLANs) |
//! | `CAP_SYS_PTRACE` | opening a runtime's `/proc/<pid>/ns/net` of a process that is not cnetd's |
//! | `CAP_DAC_OVERRIDE` | namespace files and runtime directories owned by others (Podman's and Docker's) |
//! | `CAP_CHOWN` | giving the API socket to `--socket-group` |
//!
//! Invariants: the drop happens once, before any other thread exists
//! (capabilities are per thread, and threads inherit them); a process that
//! does not have them (not root) keeps what it has, with a warning.

use caps::{CapSet, Capability, CapsHashSet};

/// What cnetd keeps (see the table above).
pub const KEPT: [Capability; 7] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_CHOWN,
];

/// The kept capabilities as the kernel's bit mask (as `CapEff` in `/proc/<pid>/status`).
pub fn kept_mask() -> u64 {
    KEPT.iter().map(|c| c.bitmask()).fold(0, |a, b| a | b)
}

/// Drops every capability but [`KEPT`] from every set of the calling
/// thread. Call it before the process has other threads.
pub fn drop_to_kept() -> Result<(), String> {
    let kept: CapsHashSet = KEPT.into_iter().collect();
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| e.to_string())?;
    for cap in bounding.difference(&kept) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clearing the ambient set: {e}"))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| format!("clearing the inheritable set: {e}"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    let keep: CapsHashSet = permitted.intersection(&kept).copied().collect();
    caps::set(None, CapSet::Effective, &keep).map_err(|e| format!("setting the effective set: {e}"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| format!("setting the permitted set: {e}"))?;
    Ok(())
}
