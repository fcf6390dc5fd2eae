//! Deleting links in batches.
//!
//! Deleting a network device is slow in the kernel (a veth whose peer lives in
//! another namespace took 16–28 ms here) and deletions do not overlap, while
//! deleting a whole link group is one operation: 10 veths took 266 ms one by
//! one and 22 ms as a group. So a deletion puts its link into the reaper's
//! group (down, off its bridge) and then waits for the next group delete,
//! which one of the waiting callers runs for everybody ("group commit").
//!
//! Invariant: when [`Reaper::delete`] returns `Ok`, the link is gone — the
//! caller sees the same result as a plain delete, only cheaper under load.

use std::sync::{Condvar, Mutex};

use crate::cmd::Cmd;
use crate::{DataplaneError, Result};

/// The link group cnet parks links in just before deleting them.
pub const GROUP: u32 = 25454;

#[derive(Default)]
struct Round {
    /// Deletions asked for so far (a ticket number).
    asked: u64,
    /// Deletions whose group delete has run.
    done: u64,
    running: bool,
    last_error: Option<String>,
}

#[derive(Default)]
pub struct Reaper {
    round: Mutex<Round>,
    finished: Condvar,
}

impl Reaper {
    /// Deletes the host-namespace link `name`; succeeds when it is already gone.
    pub fn delete(&self, name: &str) -> Result<()> {
        let script =
            format!("link set dev {name} down\nlink set dev {name} nomaster\nlink set dev {name} group {GROUP}\n");
        match Cmd::new("ip").args(["-batch", "-"]).stdin(script).run() {
            Ok(_) => {}
            Err(DataplaneError::Failed { stderr, .. }) if stderr.contains("Cannot find device") => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut round = self.round.lock().unwrap();
        round.asked += 1;
        let ticket = round.asked;
        loop {
            if round.done >= ticket {
                return match &round.last_error {
                    // The link may have gone with its namespace meanwhile; only
                    // report an error if ours is still there.
                    Some(e) if crate::link::link(None, name)?.is_some() => {
                        Err(DataplaneError::Failed { program: "ip".into(), stderr: e.clone() })
                    }
                    _ => Ok(()),
                };
            }
            if !round.running {
                // Lead a round for every deletion asked for so far.
                round.running = true;
                let target = round.asked;
                drop(round);
                let result = Cmd::new("ip").args(["link", "delete", "group", &GROUP.to_string()]).run();
                round = self.round.lock().unwrap();
                round.running = false;
                round.done = target;
                round.last_error = result.err().map(|e| e.to_string());
                self.finished.notify_all();
            } else {
                round = self.finished.wait(round).unwrap();
            }
        }
    }
}
