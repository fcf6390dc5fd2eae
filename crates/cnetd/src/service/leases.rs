//! DHCP leases of endpoints on `Dhcp` networks: acquired while attaching,
//! renewed in the background ([`crate::dhcp::run`] calls
//! [`Service::renew_due_leases`]), released when the endpoint goes. The
//! lease is part of the endpoint's record (see [`crate::dhcp`]).

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

impl Service {
    /// Leases an address for the attached adapter of `ep` and configures it:
    /// address and routes inside, then what the driver hangs on them.
    pub(super) fn lease(&self, ep: &EndpointRecord, net: &NetworkRecord, netns_path: &str) -> Result<EndpointRecord> {
        let lease = client::acquire(&who(ep, netns_path), dhcp::ACQUIRE_TIMEOUT).map_err(|e| {
            ServiceError::new(cnet_model::ErrorCode::DhcpFailed, format!("endpoint {}: {e}", ep.display_name()))
        })?;
        let leased = with_lease(ep.clone(), lease, net);
        let addrs: Vec<Addr> =
            leased.ip_configurations.iter().map(|c| Addr { ip: c.ip_address, prefix_len: c.prefix_length }).collect();
        let routes: Vec<Route> = leased
            .routes
            .iter()
            .map(|r| Route {
                destination: Addr { ip: r.destination_prefix.addr(), prefix_len: r.destination_prefix.prefix_len() },
                via: r.next_hop,
                metric: r.metric,
            })
            .collect();
        let dp = self.dp.as_ref();
        let driver = self.driver(net)?;
        let configured = dp
            .configure_inside(netns_path, ep.interface_name.as_str(), &addrs, &routes)
            .and_then(|_| driver.addresses_added(dp, net, &leased));
        if let Err(e) = configured {
            self.release_lease(&leased, Some(netns_path));
            return Err(ServiceError::kernel("configuring the leased address", e));
        }
        Ok(leased)
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
    pub(crate) fn release_lease(&self, ep: &EndpointRecord, netns_path: Option<&str>) {
        let (Some(lease), Some(path)) = (&ep.lease, netns_path) else { return };
        self.renewals.retry_at(ep.id, None);
        if !self.dp.netns_exists(path) {
            return;
        }
        if let Err(e) = client::release(&who(ep, path), lease) {
            tracing::warn!("could not release the DHCP lease of endpoint {}: {e}", ep.display_name());
        }
    }

    /// Renews every lease that is due; answers when the next one is due
    /// (seconds since 1970).
    pub fn renew_due_leases(&self) -> u64 {
        let now = dhcp::now_unix();
        let mut next = now + 60;
        let due: Vec<(EndpointRecord, String)> = {
            let o = self.state.read();
            o.endpoints
                .values()
                .filter(|s| s.intent.is_none())
                .map(|s| &s.record)
                .filter_map(|e| {
                    let path = e.namespace.and_then(|n| o.namespaces.get(&n))?.record.netns_path.clone();
                    e.lease.as_ref().map(|_| (e.clone(), path))
                })
                .collect()
        };
        for (ep, path) in due {
            let lease = ep.lease.clone().expect("filtered on leases");
            let at = self.renewals.due(ep.id, &lease);
            if at > now {
                next = next.min(at);
                continue;
            }
            let rebinding = now >= lease.rebind_at();
            match client::renew(&who(&ep, &path), &lease, rebinding, dhcp::RENEW_TIMEOUT) {
                Ok(new) if new.address == lease.address => {
                    self.renewals.retry_at(ep.id, None);
                    next = next.min(new.renew_at());
                    if let Err(e) = self.commit_lease(ep.id, &lease, new) {
                        tracing::warn!("could not store the renewed lease of endpoint {}: {e}", ep.display_name());
                    }
                }
                outcome => {
                    let why = match outcome {
                        Ok(new) => format!("the server offered another address ({})", new.address),
                        Err(e) => e.to_string(),
                    };
                    let retry = dhcp::retry_after_failure(&lease, now);
                    self.renewals.retry_at(ep.id, Some(retry));
                    next = next.min(retry);
                    if now >= lease.expires_at() {
                        tracing::error!(
                            "the DHCP lease of endpoint {} ({}) has expired and could not be renewed: {why}; detach and attach it again for a new one",
                            ep.display_name(),
                            lease.address
                        );
                    } else {
                        tracing::warn!("renewing the DHCP lease of endpoint {} failed: {why}", ep.display_name());
                    }
                }
            }
        }
        next
    }

    /// Stores an extended lease, unless the endpoint changed meanwhile.
    fn commit_lease(&self, id: Uuid, old: &Lease, new: Lease) -> Result<()> {
        self.state.change(|o, ch| {
            if let Some(s) = o.endpoints.get(&id) {
                if s.intent.is_none() && s.record.lease.as_ref() == Some(old) {
                    let mut rec = s.record.clone();
                    rec.lease = Some(new);
                    ch.put_endpoint(Stored::done(rec));
                }
            }
            Ok(())
        })
    }
}
