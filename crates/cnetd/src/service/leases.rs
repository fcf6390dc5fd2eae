//! DHCP leases of endpoints on `Dhcp` networks: acquired while attaching,
//! renewed in the background ([`crate::dhcp::run`] calls
//! [`Service::renew_due_leases`]), acquired anew when the server refuses a
//! renewal or the lease runs out, released when the endpoint goes. The lease
//! is part of the endpoint's record (see [`crate::dhcp`]).
//!
//! Invariants:
//! - Renewals and releases never overlap for one endpoint: both run under
//!   [`Renewals::exchange`](crate::dhcp::Renewals), and a renewal goes ahead
//!   only if the endpoint, looked up again under it, is unchanged and not
//!   being detached or deleted — so no REQUEST ever follows a RELEASE.
//! - A leased address that is the host's own or another endpoint's is given
//!   back at once, never configured.

use std::net::IpAddr;

use cnet_dataplane::{Addr, Route};
use uuid::Uuid;

use super::Service;
use crate::dhcp::{self, client, Lease};
use crate::error::{Result, ServiceError};
use crate::state::{EndpointRecord, NetworkRecord, Stored};

/// Who asks, for the DHCP client.
fn who(ep: &EndpointRecord, netns_path: &str) -> client::Who {
    client::Who {
        netns_path: netns_path.to_string(),
        ifname: ep.interface_name.as_str().to_string(),
        mac: ep.mac.0,
        hostname: ep.name.as_ref().map(|n| n.as_str().to_string()),
    }
}

/// `ep` with the lease's address, routes and DNS.
fn with_lease(mut ep: EndpointRecord, lease: Lease, net: &NetworkRecord) -> EndpointRecord {
    ep.ip_configurations = vec![lease.ip_config()];
    ep.routes = lease.routes();
    ep.dns = lease.dns().or_else(|| net.dns.clone());
    ep.lease = Some(lease);
    ep
}

fn addrs_of(ep: &EndpointRecord) -> Vec<Addr> {
    ep.ip_configurations.iter().map(|c| Addr { ip: c.ip_address, prefix_len: c.prefix_length }).collect()
}

fn routes_of(ep: &EndpointRecord) -> Vec<Route> {
    ep.routes
        .iter()
        .map(|r| Route {
            destination: Addr { ip: r.destination_prefix.addr(), prefix_len: r.destination_prefix.prefix_len() },
            via: r.next_hop,
            metric: r.metric,
        })
        .collect()
}

fn dhcp_failed(ep: &EndpointRecord, why: impl std::fmt::Display) -> ServiceError {
    ServiceError::new(cnet_model::ErrorCode::DhcpFailed, format!("endpoint {}: {why}", ep.display_name()))
}

impl Service {
    /// Who else holds `ip` where `ep` is: the host (on the uplink) or
    /// another endpoint of the network.
    fn holder_of(&self, ep: &EndpointRecord, net: &NetworkRecord, ip: IpAddr) -> Option<String> {
        let host = self.driver(net).ok()?.reserved(self.dp.as_ref(), net).unwrap_or_default();
        if host.contains(&ip) {
            return Some("the host's own address".into());
        }
        let o = self.state.read();
        o.endpoints
            .values()
            .map(|s| &s.record)
            .find(|e| e.id != ep.id && e.network == net.id && e.ips().any(|x| x == ip))
            .map(|e| format!("endpoint {}'s address", e.display_name()))
    }

    /// A new lease for `ep` (DISCOVER … ACK), checked against what is taken.
    fn acquire(&self, ep: &EndpointRecord, net: &NetworkRecord, netns_path: &str) -> Result<Lease> {
        let lease = client::acquire(&who(ep, netns_path), dhcp::ACQUIRE_TIMEOUT).map_err(|e| dhcp_failed(ep, e))?;
        if let Some(holder) = self.holder_of(ep, net, IpAddr::V4(lease.address)) {
            let _ = client::release(&who(ep, netns_path), &lease);
            return Err(dhcp_failed(
                ep,
                format!("the DHCP server leased {}, which is {holder}: fix the server's range", lease.address),
            ));
        }
        Ok(lease)
    }

    /// Leases an address for the attached adapter of `ep` and configures it:
    /// address and routes inside, then what the driver hangs on them.
    /// The lease is stored in the endpoint's create or attach intent before
    /// anything is configured: a crash from here on leaves start-up repair
    /// the lease to give back.
    pub(super) fn lease(&self, ep: &EndpointRecord, net: &NetworkRecord, netns_path: &str) -> Result<EndpointRecord> {
        let leased = with_lease(ep.clone(), self.acquire(ep, net, netns_path)?, net);
        if let Err(e) = self.lease_in_intent(&leased) {
            self.release_lease(&leased, Some(netns_path));
            return Err(e);
        }
        if let Err(e) = self.configure_lease(ep, &leased, net, netns_path) {
            self.release_lease(&leased, Some(netns_path));
            return Err(ServiceError::kernel("configuring the leased address", e));
        }
        Ok(leased)
    }

    /// Puts the lease of `leased` into the record of its change in progress.
    fn lease_in_intent(&self, leased: &EndpointRecord) -> Result<()> {
        self.state.change(|o, ch| {
            if let Some(s) = o.endpoints.get(&leased.id).filter(|s| s.intent.is_some()) {
                let record = EndpointRecord { lease: leased.lease.clone(), ..s.record.clone() };
                ch.put_endpoint(Stored { record, intent: s.intent });
            }
            Ok(())
        })
    }

    /// Brings the adapter from `old`'s addresses to `new`'s: the new ones
    /// and their routes first, then the driver's, then the old ones go.
    fn configure_lease(
        &self,
        old: &EndpointRecord,
        new: &EndpointRecord,
        net: &NetworkRecord,
        netns_path: &str,
    ) -> cnet_dataplane::Result<()> {
        let dp = self.dp.as_ref();
        let ifname = new.interface_name.as_str();
        dp.configure_inside(netns_path, ifname, &addrs_of(new), &routes_of(new))?;
        let driver = self.driver(net).map_err(|e| cnet_dataplane::DataplaneError::Netlink {
            what: e.message,
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        driver.addresses_changed(dp, net, old, new)?;
        let gone: Vec<Addr> = addrs_of(old).into_iter().filter(|a| !addrs_of(new).contains(a)).collect();
        dp.unconfigure_inside(netns_path, ifname, &gone)
    }

    /// The endpoint was committed with its lease: the renewal thread (which
    /// reads leases from the store) looks at the schedule again.
    pub(super) fn lease_stored(&self, ep: &EndpointRecord) {
        if ep.lease.is_some() {
            self.renewals.notify();
        }
    }

    /// Gives the lease of `ep` back to its server, if it has one and its
    /// adapter is still there; a failure is logged (the lease runs out).
    /// Waits for a renewal of it that is under way.
    pub(crate) fn release_lease(&self, ep: &EndpointRecord, netns_path: Option<&str>) {
        let (Some(lease), Some(path)) = (&ep.lease, netns_path) else { return };
        let _exchange = self.renewals.exchange();
        self.renewals.retry_at(ep.id, None);
        if !self.dp.netns_exists(path) {
            return;
        }
        if let Err(e) = client::release(&who(ep, path), lease) {
            tracing::warn!("could not release the DHCP lease of endpoint {}: {e}", ep.display_name());
        }
    }

    /// An endpoint whose create or attach a crash cut short, with the lease
    /// it may hold at the server although the store never got it: cnetd
    /// killed between the server's answer and [`Service::lease`] storing it.
    /// The lease is asked for again with the same MAC (a server gives a
    /// client back its own lease), so that the rollback releases it.
    /// Nothing is asked on a network without DHCP, when the record has its
    /// lease, or when its adapter is not there (it never got that far).
    pub(crate) fn lease_cut_short(
        &self,
        ep: &EndpointRecord,
        net: Option<&NetworkRecord>,
        netns_path: Option<&str>,
    ) -> EndpointRecord {
        let (Some(net), Some(path)) = (net, netns_path) else { return ep.clone() };
        if net.ipam != crate::state::records::IpamType::Dhcp || ep.lease.is_some() || ep.vm_device.is_some() {
            return ep.clone();
        }
        if !self.dp.netns_exists(path) || !matches!(self.dp.inside(path, ep.interface_name.as_str()), Ok(Some(_))) {
            return ep.clone();
        }
        match client::acquire(&who(ep, path), dhcp::RENEW_TIMEOUT) {
            Ok(lease) => {
                tracing::info!(
                    "endpoint {}: a crash cut its attach short; releasing its lease of {}",
                    ep.display_name(),
                    lease.address
                );
                EndpointRecord { lease: Some(lease), ..ep.clone() }
            }
            Err(e) => {
                tracing::warn!("endpoint {}: no lease to release after a crash ({e})", ep.display_name());
                ep.clone()
            }
        }
    }

    /// The endpoint `id` as stored, with its namespace path, if it still
    /// holds `lease` and nothing else is changing it.
    fn unchanged(&self, id: Uuid, lease: &Lease) -> Option<(EndpointRecord, NetworkRecord, String)> {
        let o = self.state.read();
        let s = o.endpoints.get(&id).filter(|s| s.intent.is_none() && s.record.lease.as_ref() == Some(lease))?;
        let path = s.record.namespace.and_then(|n| o.namespaces.get(&n))?.record.netns_path.clone();
        let net = o.networks.get(&s.record.network)?.record.clone();
        Some((s.record.clone(), net, path))
    }

    /// Renews every lease that is due; answers when the next one is due
    /// (seconds since 1970).
    pub fn renew_due_leases(&self) -> u64 {
        let now = dhcp::now_unix();
        let mut next = now + 60;
        let leased: Vec<(Uuid, Lease)> = {
            let o = self.state.read();
            o.endpoints
                .values()
                .filter(|s| s.intent.is_none())
                .filter_map(|s| s.record.lease.clone().map(|l| (s.record.id, l)))
                .collect()
        };
        for (id, lease) in leased {
            let at = self.renewals.due(id, &lease);
            if at > now {
                next = next.min(at);
                continue;
            }
            let _exchange = self.renewals.exchange();
            let Some((ep, net, path)) = self.unchanged(id, &lease) else { continue };
            match self.renew_one(&ep, &net, &path, &lease, now) {
                Ok(due) => {
                    self.renewals.retry_at(id, None);
                    next = next.min(due);
                }
                Err(why) => {
                    let retry = dhcp::retry_after_failure(&lease, now);
                    self.renewals.retry_at(id, Some(retry));
                    next = next.min(retry);
                    tracing::warn!("the DHCP lease of endpoint {} ({}): {why}", ep.display_name(), lease.address);
                }
            }
        }
        next
    }

    /// Renews (or rebinds) one lease; when the server refuses it or it has
    /// run out, acquires a new one and moves the adapter to it. Answers
    /// when the lease is next due.
    fn renew_one(&self, ep: &EndpointRecord, net: &NetworkRecord, path: &str, lease: &Lease, now: u64) -> Result<u64> {
        let rebinding = now >= lease.rebind_at();
        let renewed = client::renew(&who(ep, path), lease, rebinding, dhcp::RENEW_TIMEOUT);
        let fresh = match renewed {
            Ok(new) if new.address == lease.address => {
                let due = new.renew_at();
                let mut rec = ep.clone();
                rec.lease = Some(new);
                self.commit_lease(ep.id, lease, rec)?;
                return Ok(due);
            }
            // Refused (NAK), another address offered, or the lease is over:
            // start again from DISCOVER (RFC 2131 §4.4.5).
            Ok(_) | Err(client::DhcpError::Refused(_)) => true,
            Err(_) => now >= lease.expires_at(),
        };
        if !fresh {
            return Err(dhcp_failed(ep, "no DHCP server answered the renewal; retrying"));
        }
        tracing::warn!(
            "the DHCP lease of endpoint {} ({}) was refused or ran out: leasing anew",
            ep.display_name(),
            lease.address
        );
        let new = with_lease(ep.clone(), self.acquire(ep, net, path)?, net);
        self.configure_lease(ep, &new, net, path).map_err(|e| ServiceError::kernel("moving to the new lease", e))?;
        // The ACLs' dispatch is keyed by the endpoint's address.
        self.policies
            .set(&new, net, Some(path))
            .map_err(|e| ServiceError::kernel("moving the ACLs to the new lease", e))?;
        let due = new.lease.as_ref().map(|l| l.renew_at()).unwrap_or(now + 60);
        self.commit_lease(ep.id, lease, new)?;
        Ok(due)
    }

    /// Stores the endpoint with its extended (or new) lease, unless it
    /// changed meanwhile.
    fn commit_lease(&self, id: Uuid, old: &Lease, new: EndpointRecord) -> Result<()> {
        self.state.change(|o, ch| {
            if let Some(s) = o.endpoints.get(&id) {
                if s.intent.is_none() && s.record.lease.as_ref() == Some(old) {
                    ch.put_endpoint(Stored::done(new));
                }
            }
            Ok(())
        })
    }
}
