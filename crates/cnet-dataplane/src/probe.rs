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
