//! Churn: ADD+DEL pairs per second through the CNI plugin with several
//! concurrent clients. A runtime gives every new container a fresh netns;
//! here each client cycles through a few namespaces made beforehand, so
//! namespace creation (not the network's cost) stays out of the figure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::systems::{Attachment, System};
use anyhow::Result;

/// Namespaces each client cycles through.
const NETNS_PER_CLIENT: usize = 8;

pub struct Churn {
    /// What the clients go through ("CNI plugin", "API").
    pub through: &'static str,
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

/// Runs `clients` loops of ADD+DEL for `duration`, each client with a system of its own from `make`.
pub fn run(
    tag: &str,
    through: &'static str,
    make: &dyn Fn() -> Box<dyn System + Send>,
    clients: usize,
    duration: Duration,
) -> Result<Churn> {
    let pairs = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::new();
    // Keeps the namespace names of the CNI and the API runs apart.
    let short: String = through.chars().take(1).collect::<String>().to_lowercase();
    for k in 0..clients {
        let pool: Vec<String> = (0..NETNS_PER_CLIENT)
            .map(|j| crate::netns_add(&format!("{tag}-ch{short}{clients}x{k}n{j}")))
            .collect::<Result<_>>()?;
        let mut sys = make();
        let (pairs, errors) = (pairs.clone(), errors.clone());
        handles.push(std::thread::spawn(move || {
            let mut i = 0;
            while Instant::now() < deadline {
                i += 1;
                let a = Attachment {
                    id: format!("churn{k}x{i}"),
                    netns: pool[i % pool.len()].clone(),
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
        through,
        clients,
        pairs: pairs.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}
