//! VLAN access ports without the kernel's 802.1Q or bridge VLAN filtering
//! (neither is built into every kernel cnet runs on: this one has none):
//! two tiny eBPF programs on the adapter's `clsact` qdisc, attached with
//! direct action.
//!
//! - egress: push the 802.1Q tag (`bpf_skb_vlan_push`), so every frame the
//!   endpoint sends leaves tagged with its VLAN;
//! - ingress: drop every frame that is untagged or of another VLAN, pop
//!   the tag of the rest (`bpf_skb_vlan_pop`), so the endpoint sees only
//!   its VLAN, untagged.
//!
//! The programs are a handful of hand-assembled instructions (no compiler,
//! no object files); the filter holds the only reference to each, so they
//! go with the link. Both filters are named `cnet-vlan-<ID>`, which is how
//! [`Rtnl::vlan`] reads an adapter's VLAN back.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;

use super::{failed, Rtnl};
use crate::{DataplaneError, Result};

/// One eBPF instruction: opcode, registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code) | (u64::from(dst | (src << 4)) << 8) | (u64::from(off as u16) << 16) | (u64::from(imm as u32) << 32)
}

const MOV_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND_IMM: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const JEQ_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JNE_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const SKB_VLAN_PUSH: i32 = 18;
const SKB_VLAN_POP: i32 = 19;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
/// `offsetof(struct __sk_buff, vlan_present)` and `vlan_tci`.
const VLAN_PRESENT: i16 = 20;
const VLAN_TCI: i16 = 24;
/// `htons(ETH_P_8021Q)` as the helper takes it.
const ETH_P_8021Q_BE: i32 = 0x0081;

/// Egress: tag with `vid`; drop when the tag cannot be pushed.
pub fn push_program(vid: u16) -> Vec<u64> {
    vec![
        insn(MOV_IMM, 2, 0, 0, ETH_P_8021Q_BE),
        insn(MOV_IMM, 3, 0, 0, i32::from(vid)),
        insn(CALL, 0, 0, 0, SKB_VLAN_PUSH),
        insn(JNE_IMM, 0, 0, 2, 0),
        insn(MOV_IMM, 0, 0, 0, TC_ACT_OK),
        insn(EXIT, 0, 0, 0, 0),
        insn(MOV_IMM, 0, 0, 0, TC_ACT_SHOT),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// Ingress: pass only frames tagged `vid`, untagged.
pub fn pop_program(vid: u16) -> Vec<u64> {
    vec![
        insn(LDX_W, 2, 1, VLAN_PRESENT, 0),
        insn(JEQ_IMM, 2, 0, 7, 0),
        insn(LDX_W, 2, 1, VLAN_TCI, 0),
        insn(AND_IMM, 2, 0, 0, 0x0fff),
        insn(JNE_IMM, 2, 0, 4, i32::from(vid)),
        insn(CALL, 0, 0, 0, SKB_VLAN_POP),
        insn(JNE_IMM, 0, 0, 2, 0),
        insn(MOV_IMM, 0, 0, 0, TC_ACT_OK),
        insn(EXIT, 0, 0, 0, 0),
        insn(MOV_IMM, 0, 0, 0, TC_ACT_SHOT),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// `union bpf_attr` for BPF_PROG_LOAD, as far as we fill it.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// Loads a `sched_cls` program; the verifier's log goes into the error.
pub fn load(insns: &[u64], name: &str) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoad::default()
    };
    for (d, s) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = if s.is_ascii_alphanumeric() { s } else { b'_' };
    }
    // SAFETY: bpf(2) with a valid, fully initialised attribute of the size
    // we pass; the instruction, license and log buffers outlive the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &mut attr as *mut ProgLoad, std::mem::size_of::<ProgLoad>())
    };
    if fd < 0 {
        let source = io::Error::last_os_error();
        let end = log.iter().position(|b| *b == 0).unwrap_or(0);
        let verifier = String::from_utf8_lossy(&log[..end]).trim().to_string();
        return Err(DataplaneError::Netlink { what: format!("loading the eBPF program {name}: {verifier}"), source });
    }
    // SAFETY: the kernel just gave us this descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn filter_name(vid: u16) -> String {
    format!("cnet-vlan-{vid}")
}

impl Rtnl {
    /// Makes link `dev` an access port of VLAN `vid`: a `clsact` qdisc with
    /// the push program on egress and the pop program on ingress.
    pub fn set_vlan(&mut self, dev: &str, vid: u16) -> Result<()> {
        let index = self.require_index(dev)? as i32;
        let mut q = TcMessage::with_index(index);
        q.header.parent = TcHandle::CLSACT;
        q.header.handle = TcHandle { major: 0xffff, minor: 0 };
        q.attributes.push(TcAttribute::Kind("clsact".into()));
        match self.exchange(RouteNetlinkMessage::NewQueueDiscipline(q), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(failed(format!("adding a clsact qdisc to {dev}"), e))
            }
            _ => {}
        }
        for (min, prog) in [(TcHandle::MIN_EGRESS, push_program(vid)), (TcHandle::MIN_INGRESS, pop_program(vid))] {
            let fd = load(&prog, &filter_name(vid))?;
            let mut f = TcMessage::with_index(index);
            f.header.parent = TcHandle { major: 0xffff, minor: min };
            // An explicit handle, so that re-applying replaces the filter
            // instead of stacking a second one.
            f.header.handle = TcHandle { major: 0, minor: 1 };
            // Priority 1, all protocols (htons(ETH_P_ALL)).
            f.header.info = (1 << 16) | u32::from(0x0003u16.to_be());
            f.attributes.push(TcAttribute::Kind("bpf".into()));
            f.attributes.push(TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(fd.as_raw_fd() as u32)),
                TcOption::Bpf(TcFilterBpfOption::ProgName(filter_name(vid))),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]));
            self.request(
                || format!("attaching the VLAN {vid} program to {dev}"),
                RouteNetlinkMessage::NewTrafficFilter(f),
                NLM_F_CREATE | NLM_F_REPLACE,
            )?;
        }
        Ok(())
    }

    /// The VLAN whose programs are on link `dev` (both directions), if any.
    pub fn vlan(&mut self, dev: &str) -> Result<Option<u16>> {
        let Some(index) = self.index(dev)? else { return Ok(None) };
        let mut found = Vec::new();
        for min in [TcHandle::MIN_EGRESS, TcHandle::MIN_INGRESS] {
            let mut q = TcMessage::with_index(index as i32);
            q.header.parent = TcHandle { major: 0xffff, minor: min };
            let answers = match self.exchange(RouteNetlinkMessage::GetTrafficFilter(q), NLM_F_DUMP) {
                Ok(a) => a,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
                Err(e) => return Err(failed(format!("listing the filters of {dev}"), e)),
            };
            let vid = answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f) => f.attributes.into_iter().find_map(|a| match a {
                    TcAttribute::Options(opts) => opts.into_iter().find_map(|o| match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => {
                            n.strip_prefix("cnet-vlan-").and_then(|v| v.parse::<u16>().ok())
                        }
                        _ => None,
                    }),
                    _ => None,
                }),
                _ => None,
            });
            found.push(vid);
        }
        Ok(match found[..] {
            [Some(a), Some(b)] if a == b => Some(a),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_lays_them_out() {
        // mov64 r2, 0x81: code b7, dst 2, imm 0x81.
        assert_eq!(insn(MOV_IMM, 2, 0, 0, 0x81), 0x0000_0081_0000_02b7);
        // ldxw r2, [r1 + 20]: src 1 in the high nibble.
        assert_eq!(insn(LDX_W, 2, 1, 20, 0), 0x0000_0000_0014_1261);
        // Jumps land inside the program, on the drop path.
        for prog in [push_program(10), pop_program(10)] {
            let n = prog.len() as i64;
            for (pc, i) in prog.iter().enumerate() {
                let code = (*i & 0xff) as u8;
                if code == JEQ_IMM || code == JNE_IMM {
                    let off = ((*i >> 16) & 0xffff) as i16 as i64;
                    assert!(pc as i64 + 1 + off < n);
                }
            }
        }
    }
}
