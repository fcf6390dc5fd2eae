//! Churn: ADD+DEL pairs per second through the CNI plugin with several
//! concurrent clients, each reusing its own netns (as a runtime restarting
//! containers would make new ones; netns creation is not the network's cost).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::systems::{Attachment, CnetCni, System};
use anyhow::Result;

pub struct Churn {
    pub clients: usize,
    pub pairs: usize,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Churn {
    pub fn per_second(&self) -> f64 {
        self.pairs as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` loops of ADD+DEL for `duration`.
pub fn run(tag: &str, plugin: &CnetCni, clients: usize, duration: Duration) -> Result<Churn> {
    let pairs = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::new();
    for k in 0..clients {
        let netns = crate::netns_add(&format!("{tag}-churn{clients}x{k}"))?;
        let mut sys = CnetCni {
            plugin: plugin.plugin.clone(),
            socket: plugin.socket.clone(),
            network: plugin.network.clone(),
            subnet: plugin.subnet.clone(),
        };
        let (pairs, errors) = (pairs.clone(), errors.clone());
        handles.push(std::thread::spawn(move || {
            let mut i = 0;
            while Instant::now() < deadline {
                i += 1;
                let a = Attachment {
                    id: format!("churn{k}x{i}"),
                    netns: netns.clone(),
                    ifname: "eth0".into(),
                    host_ports: vec![],
                };
                match sys.setup(&a).and_then(|_| sys.teardown(&a)) {
                    Ok(_) => pairs.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("churn error: {e:#}");
                        // Leave nothing behind for the next round.
                        let _ = sys.teardown(&a);
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(Churn {
        clients,
        pairs: pairs.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}
