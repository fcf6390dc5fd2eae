//! Deleting links in the background, in batches.
//!
//! Deleting a network device is slow in the kernel (a veth whose peer lives in
//! another namespace took 16–28 ms here, waiting for RCU grace periods, not
//! using CPU) and deletions do not overlap, while deleting a whole link group
//! is one netlink request: 10 veths took 266 ms one by one and 22 ms as a
//! group. So [`Reaper::delete`] cuts the link off at once — down, off its
//! bridge, into the reaper's link group — and returns; the reaper's thread
//! deletes the whole group, again and again while links arrive.
//!
//! Invariants:
//! - When [`Reaper::delete`] returns `Ok`, the link carries no traffic (it is
//!   down and on no bridge) and will be deleted without further action.
//! - When [`Reaper::settle`] returns, every link handed over before the call
//!   is gone (or its deletion failed and was logged; it stays in the group
//!   and goes with the next round, or with the start-up reconcile).
//! - Only links in [`GROUP`] are ever deleted by the reaper.
//! - A link inside another namespace (an endpoint's macvlan) is parked
//!   there ([`Reaper::delete_inside`]: down, into the group, renamed so its
//!   name is free at once) and that namespace's group is deleted in the
//!   background too; a namespace that is gone by then took the link with it.

use std::sync::{Arc, Condvar, Mutex};

use crate::netlink::Rtnl;
use crate::{ErrorKind, Result};

/// The link group cnet parks links in before deleting them.
pub const GROUP: u32 = 25454;

#[derive(Default)]
struct Rounds {
    /// Links handed over so far (a ticket number).
    asked: u64,
    /// Tickets whose group delete has run.
    done: u64,
    /// Namespaces (by path) with parked links of their own.
    inside: Vec<String>,
}

#[derive(Default)]
struct Shared {
    rounds: Mutex<Rounds>,
    changed: Condvar,
}

pub struct Reaper {
    shared: Arc<Shared>,
}

impl Reaper {
    /// Starts the reaper's thread. It works in the network namespace of the
    /// calling thread, which must be the one the links live in.
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("cnet-reaper".into())
            .spawn(move || reap(&worker))
            .expect("cannot start the reaper thread");
        Reaper { shared }
    }

    /// Cuts the host-namespace link `name` off and hands it over for
    /// deletion; succeeds when it is already gone.
    pub fn delete(&self, name: &str) -> Result<()> {
        match Rtnl::open()?.park(name, GROUP) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        self.shared.rounds.lock().unwrap().asked += 1;
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Cuts link `ifname` inside the namespace at `netns_path` off — down,
    /// into the reaper's group, renamed `cnz<index>` so that `ifname` is free
    /// at once — and hands it over for deletion; succeeds when the link or
    /// the namespace is already gone.
    /// Only a link with `mac` is taken: a same-named link that someone else
    /// made there is left alone.
    pub fn delete_inside(&self, netns_path: &str, ifname: &str, mac: crate::Mac) -> Result<()> {
        if !crate::netns::exists(netns_path) {
            return Ok(());
        }
        let mut nl = Rtnl::open_in(netns_path)?;
        let Some(link) = nl.link(ifname)? else { return Ok(()) };
        if link.mac != Some(mac) {
            return Ok(());
        }
        let index = link.index;
        let parked = nl.park(ifname, GROUP).and_then(|()| nl.rename(ifname, &format!("cnz{index:x}")));
        if let Err(e) = parked {
            // Gone meanwhile (seen once in CI on a Transparent DHCP
            // endpoint): a delete of what is gone succeeds.
            if e.kind() == crate::ErrorKind::NotFound && nl.link(ifname)?.is_none() {
                return Ok(());
            }
            return Err(e);
        }
        let mut rounds = self.shared.rounds.lock().unwrap();
        rounds.asked += 1;
        rounds.inside.push(netns_path.to_string());
        drop(rounds);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits until every link handed over so far has been deleted.
    pub fn settle(&self) {
        let mut rounds = self.shared.rounds.lock().unwrap();
        let ticket = rounds.asked;
        while rounds.done < ticket {
            rounds = self.shared.changed.wait(rounds).unwrap();
        }
    }

    /// Whether links are waiting for deletion.
    pub fn pending(&self) -> bool {
        let rounds = self.shared.rounds.lock().unwrap();
        rounds.done < rounds.asked
    }
}

fn reap(shared: &Shared) {
    let mut nl = None;
    loop {
        let (target, inside) = {
            let mut rounds = shared.rounds.lock().unwrap();
            while rounds.done == rounds.asked {
                rounds = shared.changed.wait(rounds).unwrap();
            }
            (rounds.asked, std::mem::take(&mut rounds.inside))
        };
        for path in inside {
            let deleted = Rtnl::open_in(&path).and_then(|mut nl| nl.delete_group(GROUP));
            if let Err(e) = deleted {
                if crate::netns::exists(&path) {
                    tracing::warn!("reaper: {e} (in {path}); the link stays parked there");
                }
            }
        }
        if nl.is_none() {
            nl = Rtnl::open().map_err(|e| tracing::warn!("reaper: {e}")).ok();
        }
        let result = match nl.as_mut() {
            Some(nl) => nl.delete_group(GROUP),
            None => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!("reaper: {e}; the links stay in group {GROUP} for the next round");
            nl = None;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        shared.rounds.lock().unwrap().done = target;
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::in_private_netns;

    #[test]
    fn handed_over_links_are_gone_after_settle() {
        in_private_netns(|| {
            let mut nl = Rtnl::open().unwrap();
            let here = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            for i in 0..3 {
                nl.add_veth(&format!("cnt-r{i}"), None, 1500, &format!("cnt-p{i}"), &here).unwrap();
            }
            // Its thread lives on in this test's namespace until the process ends.
            let reaper = Reaper::start();
            for i in 0..3 {
                reaper.delete(&format!("cnt-r{i}")).unwrap();
            }
            reaper.delete("cnt-none").unwrap();
            reaper.settle();
            assert!(!reaper.pending());
            for i in 0..3 {
                assert_eq!(nl.index(&format!("cnt-r{i}")).unwrap(), None);
                assert_eq!(nl.index(&format!("cnt-p{i}")).unwrap(), None);
            }
        });
    }
}
