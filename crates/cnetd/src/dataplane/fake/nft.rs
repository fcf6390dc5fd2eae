//! The fake's policy table: the parts of `inet cnetpol` that tests read
//! (endpoint chains with their rules, IP sets with their elements), kept
//! from the scripts cnetd sends, refusing what nft refuses.
//!
//! Invariants (nft's behaviour cnet relies on):
//! - A script is one transaction: the caller keeps the result only when
//!   every line succeeded.
//! - A rule may name only chains and sets that exist; a chain or set still
//!   named by a rule is not deleted (EBUSY), nor a chain with rules.
//! - An interval set refuses an element overlapping another (no
//!   `auto-merge`), and deleting an element that is not there (ENOENT).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::dataplane::{DataplaneError, DpResult};
use crate::policy::TABLE;

/// The policy table as the fake holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyTable {
    /// Endpoint chains (not the skeleton's) with their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// IP sets (`ips_…`) with their elements.
    pub sets: BTreeMap<String, BTreeSet<IpNet>>,
}

fn refuse(line: &str, code: i32) -> DataplaneError {
    DataplaneError::Netlink { what: format!("nft: {line}"), source: std::io::Error::from_raw_os_error(code) }
}

/// The skeleton's chains, which rules may go to.
const FIXED: [&str; 1] = ["default_in"];

impl PolicyTable {
    fn named(&self, what: &str) -> bool {
        self.chains
            .values()
            .flatten()
            .any(|r| r.split_whitespace().any(|w| w == what || w.strip_prefix('@').is_some_and(|s| s == what)))
    }

    /// Runs the lines of a script (after any table load) on the table.
    pub fn apply(&mut self, script: &str) -> DpResult<()> {
        for line in script.lines() {
            let mut words = line.splitn(3, ' ');
            let (Some(verb), Some(kind), Some(rest)) = (words.next(), words.next(), words.next()) else { continue };
            let Some(rest) = rest.strip_prefix("inet ").and_then(|r| r.strip_prefix(TABLE)).map(str::trim_start) else {
                continue;
            };
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            match (verb, kind) {
                ("add", "chain") => drop(self.chains.entry(name.to_string()).or_default()),
                ("flush", "chain") => self.chains.get_mut(name).ok_or(refuse(line, libc::ENOENT))?.clear(),
                ("delete", "chain") => {
                    let rules = self.chains.get(name).ok_or(refuse(line, libc::ENOENT))?;
                    if !rules.is_empty() || self.named(name) {
                        return Err(refuse(line, libc::EBUSY));
                    }
                    self.chains.remove(name);
                }
                ("add", "rule") => {
                    for w in tail.split_whitespace() {
                        let missing = match w.strip_prefix('@') {
                            Some(set) => !self.sets.contains_key(set),
                            None => false,
                        };
                        if missing {
                            return Err(refuse(line, libc::ENOENT));
                        }
                    }
                    let words: Vec<&str> = tail.split_whitespace().collect();
                    for pair in words.windows(2).filter(|p| p[0] == "goto" || p[0] == "jump") {
                        if !self.chains.contains_key(pair[1]) && !FIXED.contains(&pair[1]) {
                            return Err(refuse(line, libc::ENOENT));
                        }
                    }
                    self.chains.get_mut(name).ok_or(refuse(line, libc::ENOENT))?.push(tail.to_string());
                }
                ("add", "set") if name.starts_with("ips_") => drop(self.sets.entry(name.to_string()).or_default()),
                ("delete", "set") if name.starts_with("ips_") => {
                    if !self.sets.contains_key(name) {
                        return Err(refuse(line, libc::ENOENT));
                    }
                    if self.named(name) {
                        return Err(refuse(line, libc::EBUSY));
                    }
                    self.sets.remove(name);
                }
                (verb @ ("add" | "delete"), "element") if name.starts_with("ips_") => {
                    let set = self.sets.get_mut(name).ok_or(refuse(line, libc::ENOENT))?;
                    let items = tail.trim().trim_start_matches('{').trim_end_matches('}');
                    for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let net: IpNet = item.parse().map_err(|_| refuse(line, libc::EINVAL))?;
                        if verb == "delete" {
                            if !set.remove(&net) {
                                return Err(refuse(line, libc::ENOENT));
                            }
                        } else if set
                            .iter()
                            .any(|o| *o != net && (o.contains(&net.network()) || net.contains(&o.network())))
                        {
                            return Err(refuse(line, libc::EEXIST));
                        } else {
                            set.insert(net);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
