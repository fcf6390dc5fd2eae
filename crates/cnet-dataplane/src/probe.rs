//! Kernel feature probes, run once at start.

/// Whether the kernel can open SCTP sockets (the `sctp` module is there).
pub fn sctp() -> bool {
    // SAFETY: socket(2) with constant arguments; the fd is closed at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP);
        if fd < 0 {
            return false;
        }
        libc::close(fd);
    }
    true
}

/// Which link kinds and bridge features the kernel has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkSupport {
    pub macvlan: bool,
    /// VLAN access ports by eBPF (what cnet uses).
    pub vlan: bool,
    pub bridge_port_isolation: bool,
    /// The kernel's 802.1Q links (not used by cnet; reported).
    pub vlan_8021q: bool,
    /// Bridge VLAN filtering (not used by cnet; reported).
    pub bridge_vlan_filtering: bool,
}

/// Tries each link kind in a namespace of its own (a thread that unshares
/// its network namespace; everything goes with the thread).
pub fn links() -> LinkSupport {
    std::thread::spawn(|| {
        // SAFETY: unshare(2) affects only this short-lived thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return LinkSupport::default();
        }
        let Ok(mut nl) = crate::netlink::Rtnl::open() else { return LinkSupport::default() };
        let Ok(own) = std::fs::File::open("/proc/thread-self/ns/net") else { return LinkSupport::default() };
        let mac = crate::Mac([2, 0, 0, 0, 0, 1]);
        let base =
            nl.add_bridge("probe0", mac, 1500).is_ok() && nl.add_veth("probe1", None, 1500, "probe2", &own).is_ok();
        if !base {
            return LinkSupport::default();
        }
        let port = crate::PortFlags { hairpin: false, isolated: true };
        LinkSupport {
            macvlan: nl.add_macvlan("probe3", "probe1", crate::Mac([2, 0, 0, 0, 0, 3]), 1500, None).is_ok(),
            vlan: nl.set_vlan("probe1", 10).is_ok(),
            bridge_port_isolation: nl.enslave("probe2", "probe0", port).is_ok(),
            vlan_8021q: nl.add_probe_link("probe5", Some("probe1")).is_ok(),
            bridge_vlan_filtering: nl.add_probe_link("probe6", None).is_ok(),
        }
    })
    .join()
    .unwrap_or_default()
}
