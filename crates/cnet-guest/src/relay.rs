//! `--relay NETNS`: a VM whose guest runs a Linux kernel, as far as the
//! network can tell. The guest's kernel is the network namespace NETNS and
//! its NIC a TAP `eth0` there; two threads copy frames between the
//! endpoint's TAP and that one, as a VMM's user-space network backend copies
//! them between the host TAP and the guest's virtio-net queues: vnet headers
//! on both sides, with checksum and TSO offloads, so TCP segments of up to
//! 64 KiB pass whole. It measures a VM NIC's data path with a real TCP
//! stack at both ends (smoltcp's would be the bottleneck).
//!
//! Invariants: frames pass unchanged (both TAPs use the same 10-byte vnet
//! header); a failed write drops that frame, as a full queue would; a failed
//! read (the endpoint's TAP was deleted) ends the relay with an error.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::mpsc;

use cnet_dataplane::tap;

const FLAGS: i16 = tap::IFF_TAP | tap::IFF_NO_PI | tap::IFF_VNET_HDR;
const OFFLOADS: u32 = tap::TUN_F_CSUM | tap::TUN_F_TSO4 | tap::TUN_F_TSO6;
/// A vnet header and the largest segment the kernel hands over (64 KiB of
/// IP packet and its Ethernet header), with room to spare.
const FRAME: usize = 70_000;

/// Relays until one side's reads fail; answers why.
pub fn run(host_tap: &str, netns: &str) -> Result<(), String> {
    let host = tap::open(host_tap, FLAGS).map_err(|e| e.to_string())?;
    let guest = cnet_dataplane::netns::run_in(netns, || tap::open("eth0", FLAGS))
        .and_then(|r| r)
        .map_err(|e| format!("the guest's NIC in {netns}: {e}"))?;
    for fd in [&host, &guest] {
        tap::set_offload(fd, OFFLOADS).map_err(|e| e.to_string())?;
    }
    crate::say("{\"event\":\"relaying\",\"device\":\"eth0\"}".into());
    let (done_tx, done_rx) = mpsc::channel();
    for (from, to, what) in [(&host, &guest, host_tap.to_string()), (&guest, &host, format!("eth0 in {netns}"))] {
        let (from, to) = (from.try_clone().map_err(|e| e.to_string())?, to.try_clone().map_err(|e| e.to_string())?);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let _ = done.send(format!("reading {what}: {}", copy(from, to)));
        });
    }
    Err(done_rx.recv().unwrap_or_default())
}

/// Copies frames from `from` to `to` until a read fails; answers its error.
fn copy(mut from: File, mut to: File) -> std::io::Error {
    let mut frame = vec![0u8; FRAME];
    loop {
        match from.read(&mut frame) {
            Ok(n) => drop(to.write(&frame[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return e,
        }
    }
}
