//! DHCP for endpoints of `Dhcp` networks: cnetd is each endpoint's DHCP
//! client ([`client`]), so a container gets its LAN address from the LAN's
//! server without a daemon of its own in the container or next to the
//! runtime (as the CNI `dhcp` plugin needs).
//!
//! Invariants:
//! - The lease lives in the endpoint's record ([`Lease`], committed with the
//!   address it grants), so a restarted cnetd renews the same lease from
//!   where it was: never a second DISCOVER for an endpoint that has a lease,
//!   so the server never holds two leases for one endpoint.
//! - Renewal ([`Renewals`]) is driven by the records alone: the thread
//!   wakes at the earliest renewal time of any lease (or when told a lease
//!   changed), renews what is due and commits the extended lease. Retries
//!   after a failure are kept in memory only; a restart just retries now.
//! - A lease is released (RELEASE, broadcast, naming its server) when its
//!   endpoint is detached or deleted, before the interface goes.
//! - A lease is in the store before its address is configured (in the
//!   endpoint's create or attach intent); start-up rollback of an intent
//!   without one asks the server again with the endpoint's MAC and
//!   releases what it answers (the crash came between the server's ACK
//!   and the store).

pub mod client;
pub mod server;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Condvar, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use cnet_model::{Dns, IpConfig, Route};

/// A DHCP lease, as the server granted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The server that granted it (renewals go there).
    pub server: Ipv4Addr,
    pub lease_secs: u32,
    /// T1 and T2, from the grant.
    pub renew_secs: u32,
    pub rebind_secs: u32,
    /// When it was granted (or last extended), in seconds since 1970.
    pub acquired_unix: u64,
}

impl Lease {
    pub fn renew_at(&self) -> u64 {
        self.acquired_unix + u64::from(self.renew_secs)
    }
    pub fn rebind_at(&self) -> u64 {
        self.acquired_unix + u64::from(self.rebind_secs)
    }
    pub fn expires_at(&self) -> u64 {
        self.acquired_unix + u64::from(self.lease_secs)
    }
    pub fn ip_config(&self) -> IpConfig {
        IpConfig { ip_address: IpAddr::V4(self.address), prefix_length: self.prefix_len }
    }
    /// The default route through the lease's router, if it names one.
    pub fn routes(&self) -> Vec<Route> {
        self.router
            .map(|r| Route {
                next_hop: Some(IpAddr::V4(r)),
                destination_prefix: "0.0.0.0/0".parse().expect("a prefix"),
                metric: 0,
            })
            .into_iter()
            .collect()
    }
    /// The lease's DNS servers and domain, when it names any.
    pub fn dns(&self) -> Option<Dns> {
        if self.dns.is_empty() && self.domain.is_none() {
            return None;
        }
        Some(Dns {
            domain: self.domain.clone().unwrap_or_default(),
            search: self.domain.clone().into_iter().collect(),
            server_list: self.dns.iter().map(|d| IpAddr::V4(*d)).collect(),
            options: vec![],
        })
    }
}

/// How long an acquisition may take before the attach fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one renewal waits for the server.
pub const RENEW_TIMEOUT: Duration = Duration::from_secs(4);

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The renewal schedule's in-memory part: when to retry a lease whose
/// renewal failed, and a wake-up for new leases (kept as a flag under the
/// lock, so a notification that comes while the thread is busy renewing is
/// not lost).
#[derive(Default)]
pub struct Renewals {
    inner: Mutex<Schedule>,
    wake: Condvar,
    /// Held across every DHCP exchange that changes a lease (renewal,
    /// release), so that they never overlap.
    exchange: Mutex<()>,
}

#[derive(Default)]
struct Schedule {
    retry: HashMap<Uuid, u64>,
    changed: bool,
}

impl Renewals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The right to talk to a DHCP server about an existing lease.
    pub fn exchange(&self) -> std::sync::MutexGuard<'_, ()> {
        self.exchange.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A lease was added or changed: look at the schedule again.
    pub fn notify(&self) {
        self.lock().changed = true;
        self.wake.notify_all();
    }

    /// When the lease of `ep` is next due, counting a pending retry.
    pub fn due(&self, ep: Uuid, lease: &Lease) -> u64 {
        self.lock().retry.get(&ep).copied().unwrap_or_else(|| lease.renew_at())
    }

    /// Tries `ep` again at `at` (after a failed renewal); `None` clears it.
    pub fn retry_at(&self, ep: Uuid, at: Option<u64>) {
        let mut s = self.lock();
        match at {
            Some(t) => s.retry.insert(ep, t),
            None => s.retry.remove(&ep),
        };
    }

    /// Sleeps until `until` (seconds since 1970) or a notification.
    fn sleep_until(&self, until: u64) {
        let secs = until.saturating_sub(now_unix()).clamp(1, 60);
        let g = self.lock();
        let (mut g, _) = self
            .wake
            .wait_timeout_while(g, Duration::from_secs(secs), |s| !s.changed)
            .unwrap_or_else(|e| e.into_inner());
        g.changed = false;
    }
}

/// When to retry after a failed renewal: halfway to the next deadline
/// (rebinding, then expiry), at least 2 s and at most 60 s away (RFC 2131
/// §4.4.5 asks for half the remaining time, down to 60 s).
pub fn retry_after_failure(lease: &Lease, now: u64) -> u64 {
    let next = if now < lease.rebind_at() { lease.rebind_at() } else { lease.expires_at() };
    now + (next.saturating_sub(now) / 2).clamp(2, 60)
}

/// The renewal thread's loop: runs until the service is gone.
pub fn run(svc: Weak<crate::service::Service>) {
    while let Some(s) = svc.upgrade() {
        let next = s.renew_due_leases();
        s.renewals.sleep_until(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            address: "192.0.2.50".parse().unwrap(),
            prefix_len: 24,
            router: Some("192.0.2.1".parse().unwrap()),
            dns: vec!["192.0.2.1".parse().unwrap()],
            domain: Some("lan".into()),
            server: "192.0.2.1".parse().unwrap(),
            lease_secs: 120,
            renew_secs: 60,
            rebind_secs: 105,
            acquired_unix: 1000,
        }
    }

    #[test]
    fn retries_go_halfway_to_the_next_deadline_within_bounds() {
        let l = lease();
        assert_eq!(retry_after_failure(&l, 1060), 1060 + 22); // rebind at 1105
        assert_eq!(retry_after_failure(&l, 1110), 1110 + 5); // expiry at 1120
        assert_eq!(retry_after_failure(&l, 1119), 1119 + 2);
    }

    #[test]
    fn a_lease_routes_through_its_router_and_names_its_dns() {
        let l = lease();
        assert_eq!(l.routes()[0].next_hop, Some("192.0.2.1".parse().unwrap()));
        let dns = l.dns().unwrap();
        assert_eq!(dns.server_list, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(dns.search, vec!["lan".to_string()]);
    }
}
