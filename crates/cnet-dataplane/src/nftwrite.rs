//! An nft script of the commands cnet's policy changes are made of, sent
//! as one nf_tables netlink batch without libnftables.
//!
//! Why: before it runs any command, libnftables fetches every chain, set
//! and named object of the namespace into a cache. With 1,000 endpoints
//! that have 20 ACL rules each (2,000 chains, 1,000 counters) that fetch
//! took about 15 ms of a 22 ms ACL change, and it grows with every
//! endpoint. The commands of one endpoint's change name everything they
//! touch, so this writer needs no cache: it encodes each command as the
//! kernel message nft would send and sends the batch.
//!
//! What it takes, one command per line (the forms cnet's policy compiler
//! emits, `crates/cnetd/src/policy/script.rs`):
//! - `add|flush|delete chain inet T C`, `add|delete counter inet T N`;
//! - `add rule inet T C` with matches `meta l4proto N`, `ip|ip6
//!   saddr|daddr ADDR[/LEN]|@SET`, `th sport|dport N[-M]`, then
//!   `counter name "N"` and a verdict (`accept`, `drop`, `return`, `jump
//!   C`, `goto C`);
//! - `add|delete element inet T S { "IFNAME" . ADDR [: jump|goto C] }`.
//!
//! Invariants:
//! - [`parse`] takes a whole script or nothing: one line outside these
//!   forms and it returns `None`, and the caller runs the script through
//!   libnftables instead. So this writer only ever makes a change faster,
//!   never different.
//! - Each rule is encoded as nft 1.0.6 encodes it (the same expressions in
//!   the same order: a `meta nfproto` guard before the first address of a
//!   rule, byte-aligned prefixes as shorter loads, ranges as two compares),
//!   so `nft list` shows the same ruleset whichever way it was written
//!   (`tests` checks it against nft itself).
//! - A script is one batch: the kernel applies all of it or none of it.

use std::io;
use std::net::IpAddr;

use crate::error::{DataplaneError, Result};
use crate::nfnetlink::{message, nest, nftables_batch, put, Nfnl, NFNL_SUBSYS_NFTABLES, NLM_F_ACK, NLM_F_REQUEST};
use crate::nftobj::{cstr, Family};

const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_DELRULE: u8 = 8;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;
const NFT_MSG_NEWOBJ: u8 = 18;
const NFT_MSG_DELOBJ: u8 = 20;

// Attributes (`include/uapi/linux/netfilter/nf_tables.h`).
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;

/// The register every match loads into (`NFT_REG_1`), and the verdict's.
const REG_1: u32 = 1;
const REG_VERDICT: u32 = 0;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// `IFNAMSIZ`: an interface name in a key, NUL-padded.
const IFNAMSIZ: usize = 16;
/// Past this size a script goes to libnftables (which raises the socket's
/// buffers to fit): a change of one endpoint is a few KiB.
const MAX_BATCH: usize = 128 * 1024;

/// A verdict, of a rule or a map element.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn encode(&self, buf: &mut Vec<u8>) {
        let (code, chain): (i32, Option<&str>) = match self {
            Verdict::Drop => (0, None),
            Verdict::Accept => (1, None),
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
            Verdict::Return => (-5, None),
        };
        nest(buf, NFTA_DATA_VERDICT, |b| {
            put(b, NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(c) = chain {
                put(b, NFTA_VERDICT_CHAIN, &cstr(c));
            }
        });
    }
}

/// One expression of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    Meta { key: u32 },
    Cmp { op: u32, data: Vec<u8> },
    Payload { base: u32, offset: u32, len: u32 },
    Bitwise { mask: Vec<u8> },
    Lookup { set: String },
    Counter { name: String },
    Verdict(Verdict),
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn value(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    nest(buf, kind, |b| put(b, NFTA_DATA_VALUE, data));
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Counter { .. } => "objref",
            Expr::Verdict(_) => "immediate",
        }
    }

    /// Its `NFTA_EXPR_DATA` attributes.
    fn encode(&self, b: &mut Vec<u8>) {
        match self {
            Expr::Meta { key } => {
                put(b, 1, &be32(REG_1)); // NFTA_META_DREG
                put(b, 2, &be32(*key)); // NFTA_META_KEY
            }
            Expr::Cmp { op, data } => {
                put(b, 1, &be32(REG_1)); // NFTA_CMP_SREG
                put(b, 2, &be32(*op)); // NFTA_CMP_OP
                value(b, 3, data); // NFTA_CMP_DATA
            }
            Expr::Payload { base, offset, len } => {
                put(b, 1, &be32(REG_1)); // NFTA_PAYLOAD_DREG
                put(b, 2, &be32(*base));
                put(b, 3, &be32(*offset));
                put(b, 4, &be32(*len));
            }
            Expr::Bitwise { mask } => {
                put(b, 1, &be32(REG_1)); // NFTA_BITWISE_SREG
                put(b, 2, &be32(REG_1)); // NFTA_BITWISE_DREG
                put(b, 3, &be32(mask.len() as u32)); // NFTA_BITWISE_LEN
                value(b, 4, mask); // NFTA_BITWISE_MASK
                value(b, 5, &vec![0; mask.len()]); // NFTA_BITWISE_XOR
            }
            Expr::Lookup { set } => {
                put(b, 1, &cstr(set)); // NFTA_LOOKUP_SET
                put(b, 2, &be32(REG_1)); // NFTA_LOOKUP_SREG
            }
            Expr::Counter { name } => {
                put(b, 1, &be32(NFT_OBJECT_COUNTER)); // NFTA_OBJREF_IMM_TYPE
                put(b, 2, &cstr(name)); // NFTA_OBJREF_IMM_NAME
            }
            Expr::Verdict(v) => {
                put(b, 1, &be32(REG_VERDICT)); // NFTA_IMMEDIATE_DREG
                nest(b, 2, |d| v.encode(d)); // NFTA_IMMEDIATE_DATA
            }
        }
    }
}

/// One command of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    AddChain(String),
    FlushChain(String),
    DeleteChain(String),
    AddCounter(String),
    DeleteCounter(String),
    AddRule { chain: String, exprs: Vec<Expr> },
    AddElement { set: String, key: Vec<u8>, verdict: Option<Verdict> },
    DeleteElement { set: String, key: Vec<u8> },
}

/// A parsed script: its commands, all on table `inet <table>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    table: String,
    commands: Vec<Command>,
    /// The line of each command, for errors.
    lines: Vec<String>,
}

/// A name of a table, chain, set or object as cnet writes them.
fn name(word: &str) -> Option<String> {
    let ok = !word.is_empty() && word.len() < 256 && word.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    ok.then(|| word.to_string())
}

/// `script` as a batch, or `None` when some line is not of the forms this
/// writer takes (see the module documentation), or it names two tables.
pub fn parse(script: &str) -> Option<Batch> {
    let mut batch = Batch { table: String::new(), commands: Vec::new(), lines: Vec::new() };
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let [verb, object, "inet", table, target, rest @ ..] = &words[..] else { return None };
        let table = name(table)?;
        if batch.table.is_empty() {
            batch.table = table;
        } else if batch.table != table {
            return None;
        }
        let target = name(target)?;
        let command = match (*verb, *object, rest) {
            ("add", "chain", []) => Command::AddChain(target),
            ("flush", "chain", []) => Command::FlushChain(target),
            ("delete", "chain", []) => Command::DeleteChain(target),
            ("add", "counter", []) => Command::AddCounter(target),
            ("delete", "counter", []) => Command::DeleteCounter(target),
            ("add", "rule", matches) => Command::AddRule { chain: target, exprs: rule(matches)? },
            ("add", "element", ["{", key @ .., "}"]) => {
                let (key, verdict) = match key {
                    [key @ .., ":", "jump", c] => (key, Some(Verdict::Jump(name(c)?))),
                    [key @ .., ":", "goto", c] => (key, Some(Verdict::Goto(name(c)?))),
                    key => (key, None),
                };
                Command::AddElement { set: target, key: element_key(key)?, verdict }
            }
            ("delete", "element", ["{", key @ .., "}"]) => {
                Command::DeleteElement { set: target, key: element_key(key)? }
            }
            _ => return None,
        };
        batch.commands.push(command);
        batch.lines.push(line.to_string());
    }
    (!batch.commands.is_empty()).then_some(batch)
}

/// A key `"IFNAME" . ADDR`: the name NUL-padded to `IFNAMSIZ`, then the address.
fn element_key(words: &[&str]) -> Option<Vec<u8>> {
    let [ifname, ".", addr] = words else { return None };
    let ifname = ifname.strip_prefix('"')?.strip_suffix('"')?;
    if ifname.is_empty() || ifname.len() >= IFNAMSIZ || ifname.contains(['"', '\\']) {
        return None;
    }
    let mut key = ifname.as_bytes().to_vec();
    key.resize(IFNAMSIZ, 0);
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => key.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => key.extend_from_slice(&a.octets()),
    }
    Some(key)
}

fn cmp(op: u32, data: &[u8]) -> Expr {
    Expr::Cmp { op, data: data.to_vec() }
}

/// The expressions of a rule's words after its chain.
fn rule(words: &[&str]) -> Option<Vec<Expr>> {
    let mut out = Vec::new();
    let mut nfproto = None;
    let mut rest = words;
    loop {
        rest = match rest {
            [] => return Some(out),
            ["meta", "l4proto", proto, tail @ ..] => {
                out.extend([Expr::Meta { key: META_L4PROTO }, cmp(CMP_EQ, &[proto.parse::<u8>().ok()?])]);
                tail
            }
            [family @ ("ip" | "ip6"), field, operand, tail @ ..] => {
                let v4 = *family == "ip";
                let proto = if v4 { NFPROTO_IPV4 } else { NFPROTO_IPV6 };
                match nfproto {
                    None => out.extend([Expr::Meta { key: META_NFPROTO }, cmp(CMP_EQ, &[proto])]),
                    Some(p) if p == proto => {}
                    Some(_) => return None,
                }
                nfproto = Some(proto);
                let offset = match (v4, *field) {
                    (true, "saddr") => 12,
                    (true, "daddr") => 16,
                    (false, "saddr") => 8,
                    (false, "daddr") => 24,
                    _ => return None,
                };
                address(&mut out, v4, offset, operand)?;
                tail
            }
            ["th", field, ports, tail @ ..] => {
                let offset = match *field {
                    "sport" => 0,
                    "dport" => 2,
                    _ => return None,
                };
                out.push(Expr::Payload { base: BASE_TRANSPORT, offset, len: 2 });
                let (lo, hi) = match ports.split_once('-') {
                    Some((lo, hi)) => (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?),
                    None => (ports.parse::<u16>().ok()?, ports.parse::<u16>().ok()?),
                };
                match lo.cmp(&hi) {
                    std::cmp::Ordering::Equal => out.push(cmp(CMP_EQ, &lo.to_be_bytes())),
                    std::cmp::Ordering::Less => {
                        out.extend([cmp(CMP_GTE, &lo.to_be_bytes()), cmp(CMP_LTE, &hi.to_be_bytes())])
                    }
                    std::cmp::Ordering::Greater => return None,
                }
                tail
            }
            ["counter", "name", quoted, tail @ ..] => {
                let n = name(quoted.strip_prefix('"')?.strip_suffix('"')?)?;
                out.push(Expr::Counter { name: n });
                tail
            }
            ["accept"] => return Some(verdict(out, Verdict::Accept)),
            ["drop"] => return Some(verdict(out, Verdict::Drop)),
            ["return"] => return Some(verdict(out, Verdict::Return)),
            ["jump", c] => return Some(verdict(out, Verdict::Jump(name(c)?))),
            ["goto", c] => return Some(verdict(out, Verdict::Goto(name(c)?))),
            _ => return None,
        };
    }
}

fn verdict(mut exprs: Vec<Expr>, v: Verdict) -> Vec<Expr> {
    exprs.push(Expr::Verdict(v));
    exprs
}

/// Appends the match of an address field at `offset` of the network
/// header with `operand`: `@set`, an address, or a network with its length.
fn address(out: &mut Vec<Expr>, v4: bool, offset: u32, operand: &str) -> Option<()> {
    let full = if v4 { 4 } else { 16 };
    if let Some(set) = operand.strip_prefix('@') {
        out.extend([Expr::Payload { base: BASE_NETWORK, offset, len: full }, Expr::Lookup { set: name(set)? }]);
        return Some(());
    }
    let (addr, len) = match operand.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()?),
        None => (operand, full * 8),
    };
    let bytes = match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if v4 => a.octets().to_vec(),
        IpAddr::V6(a) if !v4 => a.octets().to_vec(),
        _ => return None,
    };
    if len == 0 || len > full * 8 {
        return None;
    }
    let mask: Vec<u8> = (0..full)
        .map(|i| match len.saturating_sub(i * 8).min(8) {
            0 => 0,
            bits => 0xffu8 << (8 - bits),
        })
        .collect();
    if bytes.iter().zip(&mask).any(|(b, m)| b & !m != 0) {
        // Host bits set: nft refuses or rewrites that; leave it to nft.
        return None;
    }
    if len % 8 == 0 {
        let n = (len / 8) as usize;
        out.extend([Expr::Payload { base: BASE_NETWORK, offset, len: n as u32 }, cmp(CMP_EQ, &bytes[..n])]);
    } else {
        out.extend([
            Expr::Payload { base: BASE_NETWORK, offset, len: full },
            Expr::Bitwise { mask },
            cmp(CMP_EQ, &bytes),
        ]);
    }
    Some(())
}

impl Batch {
    /// The batch on the wire: its messages numbered from `seq`, the last
    /// acknowledged (so a change that succeeds has an answer too).
    fn encode(&self, seq: u32) -> Vec<u8> {
        let t = cstr(&self.table);
        let family = Family::Inet.proto();
        let mut body = Vec::new();
        let last = self.commands.len() - 1;
        for (i, c) in self.commands.iter().enumerate() {
            let mut a = Vec::new();
            let (kind, flags) = match c {
                Command::AddChain(ch) | Command::DeleteChain(ch) => {
                    put(&mut a, NFTA_CHAIN_TABLE, &t);
                    put(&mut a, NFTA_CHAIN_NAME, &cstr(ch));
                    match c {
                        Command::AddChain(_) => (NFT_MSG_NEWCHAIN, NLM_F_CREATE),
                        _ => (NFT_MSG_DELCHAIN, 0),
                    }
                }
                Command::FlushChain(ch) => {
                    put(&mut a, NFTA_RULE_TABLE, &t);
                    put(&mut a, NFTA_RULE_CHAIN, &cstr(ch));
                    (NFT_MSG_DELRULE, 0)
                }
                Command::AddCounter(n) | Command::DeleteCounter(n) => {
                    put(&mut a, NFTA_OBJ_TABLE, &t);
                    put(&mut a, NFTA_OBJ_NAME, &cstr(n));
                    put(&mut a, NFTA_OBJ_TYPE, &be32(NFT_OBJECT_COUNTER));
                    match c {
                        Command::AddCounter(_) => {
                            nest(&mut a, NFTA_OBJ_DATA, |_| {});
                            (NFT_MSG_NEWOBJ, NLM_F_CREATE)
                        }
                        _ => (NFT_MSG_DELOBJ, 0),
                    }
                }
                Command::AddRule { chain, exprs } => {
                    put(&mut a, NFTA_RULE_TABLE, &t);
                    put(&mut a, NFTA_RULE_CHAIN, &cstr(chain));
                    nest(&mut a, NFTA_RULE_EXPRESSIONS, |l| {
                        for e in exprs {
                            nest(l, NFTA_LIST_ELEM, |x| {
                                put(x, NFTA_EXPR_NAME, &cstr(e.name()));
                                nest(x, NFTA_EXPR_DATA, |d| e.encode(d));
                            });
                        }
                    });
                    (NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND)
                }
                Command::AddElement { set, key, .. } | Command::DeleteElement { set, key } => {
                    put(&mut a, NFTA_SET_ELEM_LIST_TABLE, &t);
                    put(&mut a, NFTA_SET_ELEM_LIST_SET, &cstr(set));
                    let verdict = match c {
                        Command::AddElement { verdict, .. } => verdict.as_ref(),
                        _ => None,
                    };
                    nest(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                        nest(l, NFTA_LIST_ELEM, |e| {
                            value(e, NFTA_SET_ELEM_KEY, key);
                            if let Some(v) = verdict {
                                nest(e, NFTA_SET_ELEM_DATA, |d| v.encode(d));
                            }
                        });
                    });
                    match c {
                        Command::AddElement { .. } => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
                        _ => (NFT_MSG_DELSETELEM, 0),
                    }
                }
            };
            let ack = if i == last { NLM_F_ACK } else { 0 };
            let s = seq.wrapping_add(1 + i as u32);
            body.extend(message(NFNL_SUBSYS_NFTABLES, kind, NLM_F_REQUEST | flags | ack, s, family, &a));
        }
        nftables_batch(seq, &body, seq.wrapping_add(1 + self.commands.len() as u32))
    }

    /// Sends the batch in the calling thread's namespace: `Ok` once the
    /// kernel committed it; on a refusal, the error names the first
    /// command refused (nothing changed).
    pub fn send(&self) -> Result<()> {
        let failed = |source| DataplaneError::Netlink { what: format!("changing table inet {}", self.table), source };
        Nfnl::with_shared(|nl| {
            let seq = nl.next_seq();
            for _ in 0..=self.commands.len() {
                nl.next_seq();
            }
            let wire = self.encode(seq);
            if wire.len() > MAX_BATCH {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "a batch too large for one message"));
            }
            let end = seq.wrapping_add(1 + self.commands.len() as u32);
            // Answers to this batch only (not one an earlier request left queued).
            let answers: Vec<(u32, i32)> = nl
                .send_batch(&wire)?
                .into_iter()
                .filter(|(s, _)| s.wrapping_sub(seq) <= end.wrapping_sub(seq))
                .collect();
            if let Some(&(s, code)) = answers.iter().find(|(_, code)| *code != 0) {
                let at = s.wrapping_sub(seq).wrapping_sub(1) as usize;
                let line = self.lines.get(at).map_or("the batch as a whole", String::as_str);
                let e = io::Error::from_raw_os_error(-code);
                return Err(io::Error::new(e.kind(), format!("{line}: {e}")));
            }
            let last = seq.wrapping_add(self.commands.len() as u32);
            if answers.iter().any(|&(s, _)| s == last) {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::InvalidData, "the kernel did not acknowledge the batch"))
            }
        })
        .map_err(failed)
    }
}

#[cfg(test)]
mod tests;
