//! An endpoint's traffic statistics: its adapter's counters and what cnet's
//! policies dropped, read from the kernel on each request (cnetd keeps no
//! counters of its own, so they survive a restart of cnetd and cost nothing
//! until asked for).
//!
//! Every value is one netlink lookup: the link's `IFLA_STATS64`, and named
//! nftables counters by `NFT_MSG_GETOBJ` (never a listing, whose cost grows
//! with the ruleset).

use cnet_dataplane::nftobj::Family;
use cnet_dataplane::types::LinkStats;
use cnet_model::stats::{DropCounts, EndpointStats};
use cnet_model::ErrorCode;

use super::Service;
use crate::error::{Result, ServiceError};

impl Service {
    pub fn endpoint_stats(&self, key: &str) -> Result<EndpointStats> {
        let (ep, net, netns) = {
            let o = self.state.read();
            let ep = o.endpoint(o.endpoint_id(key)?)?.record.clone();
            let net = o.network(ep.network)?.record.clone();
            let netns = ep.namespace.and_then(|n| o.namespaces.get(&n)).map(|n| n.record.netns_path.clone());
            (ep, net, netns)
        };
        if !ep.in_kernel() || ep.flags & cnet_model::endpoint::REMOTE_ENDPOINT != 0 {
            return Err(ServiceError::new(
                ErrorCode::EndpointNotAttached,
                format!("endpoint {} has no adapter to count on: attach it first", ep.display_name()),
            ));
        }
        // A Transparent container's adapter lives only in its namespace, and
        // counts as the endpoint does; a host-side port counts the other way.
        let Some(at) = crate::policy::qos::adapter(&ep, net.kind, netns.as_deref()) else {
            return Err(ServiceError::new(
                ErrorCode::DegradedOperation,
                format!("endpoint {} has no adapter cnetd knows of: run cnet diag --repair", ep.display_name()),
            ));
        };
        let link = &at.link;
        let counted = self
            .dp
            .link_stats(at.netns.as_deref(), link)
            .map_err(|e| ServiceError::kernel("reading the adapter's counters", e))?
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::DegradedOperation,
                    format!("the adapter {link} of endpoint {} is gone: run cnet diag --repair", ep.display_name()),
                )
            })?;
        let s = if at.endpoint_side { counted } else { swapped(counted) };
        let count = |family, name: Option<String>| -> Result<u64> {
            let Some(name) = name else { return Ok(0) };
            let c = self.dp.pol_counter(family, &name).map_err(|e| ServiceError::kernel("reading a counter", e))?;
            Ok(c.map_or(0, |c| c.packets))
        };
        let acl = format!("acl_{}", crate::policy::acl::tag_of(ep.id));
        let (qos_out, qos_in) = crate::policy::qos::drops(self.dp.as_ref(), &ep, &at)
            .map_err(|e| ServiceError::kernel("reading the QoS queues' drops", e))?;
        Ok(EndpointStats {
            endpoint_id: ep.id,
            bytes_received: s.rx_bytes,
            packets_received: s.rx_packets,
            bytes_sent: s.tx_bytes,
            packets_sent: s.tx_packets,
            dropped_packets_incoming: s.rx_dropped,
            dropped_packets_outgoing: s.tx_dropped,
            policy_drops: DropCounts {
                acl: match self.policies.inside.netns_of(ep.id) {
                    // A Transparent container's counter is in its namespace's table.
                    Some(netns) => self
                        .dp
                        .acl_counter_in(&netns, &acl)
                        .map_err(|e| ServiceError::kernel("reading a counter", e))?
                        .map_or(0, |c| c.packets),
                    None => count(Family::Inet, Some(acl))?,
                },
                spoofing: self.guards.drops(ep.id).map_err(|e| ServiceError::kernel("reading a counter", e))?,
                qos: qos_out + qos_in,
            },
        })
    }
}

/// The endpoint's view of its host-side port: what the port sent reached
/// the endpoint.
fn swapped(s: LinkStats) -> LinkStats {
    LinkStats {
        rx_bytes: s.tx_bytes,
        rx_packets: s.tx_packets,
        tx_bytes: s.rx_bytes,
        tx_packets: s.rx_packets,
        rx_dropped: s.tx_dropped,
        tx_dropped: s.rx_dropped,
    }
}
