//! TAP devices: the synthetic NIC of a VM endpoint, for a VMM (QEMU,
//! Firecracker, Cloud Hypervisor, Kata) to open by name.
//!
//! Invariants:
//! - A TAP is created persistent (`TUNSETPERSIST`), in the calling thread's
//!   namespace, with `IFF_TAP | IFF_NO_PI` (and `IFF_VNET_HDR`,
//!   `IFF_MULTI_QUEUE` when asked), owned by the given uid/gid (by root
//!   when neither is given: never a TAP anyone may attach to); cnet's own
//!   descriptor is closed at once, so the device waits, down to no reader,
//!   for the VMM. It is deleted like any link (route netlink), which also
//!   ends a VMM's open descriptor (its reads and writes then fail).
//! - Nothing here configures the guest: the guest's MAC and addresses are
//!   its own (the host side has the device's MAC).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::{DataplaneError, IfName, Result};

/// `_IOW('T', 202, int)` and friends, from `<linux/if_tun.h>`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOR('T', 210, unsigned int)`: the name of the device a descriptor is on.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// Offloads a reader of vnet headers takes (`TUN_F_*`): checksums left to
/// the guest, TCP segments of up to 64 KiB over IPv4 and IPv6.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const IFF_TAP: i16 = 0x0002;
pub const IFF_NO_PI: i16 = 0x1000;
pub const IFF_VNET_HDR: i16 = 0x4000;
pub const IFF_MULTI_QUEUE: i16 = 0x0100;

/// A VM endpoint's TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapSpec {
    pub name: IfName,
    pub vnet_hdr: bool,
    pub multi_queue: bool,
    /// Who may open it (the VMM's user and group). With neither, the TAP
    /// is root's: the kernel would let any user attach to a TAP without an
    /// owner or group, so `create` makes uid 0 its owner.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl TapSpec {
    pub fn flags(&self) -> i16 {
        let mut f = IFF_TAP | IFF_NO_PI;
        if self.vnet_hdr {
            f |= IFF_VNET_HDR;
        }
        if self.multi_queue {
            f |= IFF_MULTI_QUEUE;
        }
        f
    }
}

/// `struct ifreq` as far as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

fn failed(what: String, source: std::io::Error) -> DataplaneError {
    DataplaneError::Netlink { what, source }
}

fn ioctl(fd: &File, request: libc::c_ulong, arg: libc::c_ulong, what: impl FnOnce() -> String) -> Result<()> {
    // SAFETY: a TUN ioctl on an open /dev/net/tun descriptor with an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) } < 0 {
        return Err(failed(what(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Opens `/dev/net/tun` and attaches to (or creates) TAP `name` with `flags`.
pub fn open(name: &str, flags: i16) -> Result<File> {
    let fd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| failed("opening /dev/net/tun (is the tun module there?)".into(), e))?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags, _pad: [0; 22] };
    for (d, s) in req.name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s;
    }
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is
    // laid out as (40 bytes) and outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(failed(format!("attaching to TAP {name}"), std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// The name of the macvtap (or TAP) that the character device at `path`
/// (a `/dev/tapN`) belongs to. devtmpfs names a macvtap's node after its
/// interface index, which is per network namespace: where two namespaces
/// hold macvtaps of the same index, the node is the first one's, and this
/// tells whose it is.
pub fn device_name(path: &str) -> Result<String> {
    let fd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| failed(format!("opening {path}"), e))?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    // SAFETY: TUNGETIFF writes a `struct ifreq`'s name and flags into
    // `req`, laid out as one (40 bytes), which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(failed(format!("asking {path} which device it is"), std::io::Error::last_os_error()));
    }
    let end = req.name.iter().position(|b| *b == 0).unwrap_or(libc::IFNAMSIZ);
    Ok(String::from_utf8_lossy(&req.name[..end]).into_owned())
}

/// Tells the kernel which offloads the holder of `fd` (opened with
/// `IFF_VNET_HDR`) handles, as a VMM does for its guest's virtio-net
/// features: the kernel then hands it unsegmented TCP and partial checksums.
pub fn set_offload(fd: &File, offloads: u32) -> Result<()> {
    ioctl(fd, TUNSETOFFLOAD, offloads as libc::c_ulong, || "setting the TAP's offloads".into())
}

/// Creates the persistent TAP of `spec` in the calling thread's namespace
/// (down, on no bridge); fails with `Exists` semantics when a link of that
/// name is not a TAP we can attach to with these flags.
pub fn create(spec: &TapSpec) -> Result<()> {
    let name = spec.name.as_str();
    let fd = open(name, spec.flags())?;
    let owner = match (spec.owner, spec.group) {
        (None, None) => Some(0),
        (owner, _) => owner,
    };
    if let Some(uid) = owner {
        ioctl(&fd, TUNSETOWNER, uid as libc::c_ulong, || format!("setting the owner of TAP {name}"))?;
    }
    if let Some(gid) = spec.group {
        ioctl(&fd, TUNSETGROUP, gid as libc::c_ulong, || format!("setting the group of TAP {name}"))?;
    }
    ioctl(&fd, TUNSETPERSIST, 1, || format!("making TAP {name} persistent"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Rtnl;
    use crate::testutil::in_private_netns;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    fn spec(name: &str) -> TapSpec {
        TapSpec { name: IfName::new(name).unwrap(), vnet_hdr: true, multi_queue: false, owner: Some(0), group: None }
    }

    /// Reads one frame, waiting at most `ms` (a test must not hang).
    fn read_frame(f: &mut File, buf: &mut [u8], ms: i32) -> std::io::Result<usize> {
        let mut p = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll(2) on one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, ms) } == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        f.read(buf)
    }

    /// An ARP request for `target` from `mac`/`sender`.
    fn arp_request(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    #[test]
    fn a_guest_opens_the_tap_by_name_trades_frames_and_sees_its_deletion() {
        in_private_netns(|| {
            create(&spec("cnt-tap0")).unwrap();
            let mut nl = Rtnl::open().unwrap();
            let link = nl.link("cnt-tap0").unwrap().expect("the TAP exists after cnet's descriptor is closed");
            assert_eq!(link.kind.as_deref(), Some("tun"));
            nl.add_address("cnt-tap0", &crate::Addr { ip: "10.9.9.1".parse().unwrap(), prefix_len: 24 }, false)
                .unwrap();
            nl.set_up("cnt-tap0", true).unwrap();

            // The "VMM": attaches by name (without vnet headers, as a plain
            // guest would), asks who has the host side's address.
            let mut guest = open("cnt-tap0", IFF_TAP | IFF_NO_PI).unwrap();
            let mac = [0x0a, 0x58, 0, 0, 0, 9];
            // Asked again every half second: the first frame may race the
            // carrier coming up as the guest attaches.
            let mut buf = [0u8; 2048];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let reply = 'asking: loop {
                assert!(std::time::Instant::now() < deadline, "the host answers ARP within 5 s");
                guest.write_all(&arp_request(mac, [10, 9, 9, 2], [10, 9, 9, 1])).unwrap();
                let asked = std::time::Instant::now();
                while asked.elapsed() < std::time::Duration::from_millis(500) {
                    let Ok(n) = read_frame(&mut guest, &mut buf, 100) else { continue };
                    // Skip IPv6 chatter; the ARP reply is addressed to the guest's MAC.
                    if n >= 42 && buf[12..14] == [0x08, 0x06] && buf[0..6] == mac {
                        break 'asking buf[..n].to_vec();
                    }
                }
            };
            assert_eq!(reply[20..22], [0, 2], "an ARP reply");
            assert_eq!(reply[28..32], [10, 9, 9, 1]);

            // Deleting the device under the guest: its next read fails, cleanly.
            assert!(nl.delete("cnt-tap0").unwrap());
            let err = read_frame(&mut guest, &mut buf, 3000).expect_err("reading a deleted TAP");
            assert!(err.raw_os_error().is_some(), "a clean error, not a hang: {err}");
            assert_eq!(nl.link("cnt-tap0").unwrap(), None, "nothing left");
        });
    }

    #[test]
    fn a_multi_queue_tap_takes_a_queue_per_open_and_refuses_a_single_queue_vmm() {
        in_private_netns(|| {
            let mq = TapSpec { multi_queue: true, ..spec("cnt-tapmq") };
            create(&mq).unwrap();
            let queues: Vec<File> = (0..4).map(|_| open("cnt-tapmq", mq.flags()).unwrap()).collect();
            assert_eq!(queues.len(), 4, "one descriptor per queue, as QEMU queues=4 opens them");
            let err = open("cnt-tapmq", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).expect_err("a single-queue open");
            assert!(err.to_string().contains("cnt-tapmq"), "{err}");
            assert!(Rtnl::open().unwrap().delete("cnt-tapmq").unwrap());
        });
    }

    #[test]
    fn flags_carry_vnet_headers_and_queues_when_asked() {
        let mut s = spec("x");
        assert_eq!(s.flags(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        s.multi_queue = true;
        s.vnet_hdr = false;
        assert_eq!(s.flags(), IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE);
    }
}
