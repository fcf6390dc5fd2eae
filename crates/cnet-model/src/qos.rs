//! The QoS policies of an endpoint: HCN's `QOS` (an egress cap in bytes per
//! second) and the Linux extension `Bandwidth` (the CNI `bandwidth`
//! capability: rates in bits per second and bursts in bits, both ways).
//!
//! Invariants:
//! - A policy that passed [`QosPolicy::check`] or [`BandwidthPolicy::check`]
//!   names a rate above zero, and a burst above zero with every rate
//!   (`Bandwidth`), exactly what the kernel's token bucket can be given.
//! - Directions are the endpoint's: egress is what it sends, ingress what it
//!   receives.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::endpoint::EndpointPolicy;

/// `QOS` settings (HCN `QosPolicySetting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct QosPolicy {
    /// The most the endpoint may send, in bytes per second (above 0).
    #[schema(example = 2_500_000)]
    pub maximum_outgoing_bandwidth_in_bytes: u64,
}

/// Linux extension: `Bandwidth` settings, the CNI `bandwidth` capability's
/// fields and units: rates in bits per second, bursts in bits. A direction
/// is capped when both its rate and burst are given; giving one without the
/// other is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BandwidthPolicy {
    /// Traffic to the endpoint, bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    /// Bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    /// Traffic from the endpoint, bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    /// Bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// The largest rate cnet programs: 1 Tbit/s, in bytes per second.
pub const MAX_RATE_BYTES: u64 = 125_000_000_000;

impl QosPolicy {
    pub fn check(&self) -> Result<(), String> {
        match self.maximum_outgoing_bandwidth_in_bytes {
            0 => Err("QOS MaximumOutgoingBandwidthInBytes must be above 0 (bytes per second); remove the policy for no cap".into()),
            n if n > MAX_RATE_BYTES => Err(format!(
                "QOS MaximumOutgoingBandwidthInBytes {n} is above {MAX_RATE_BYTES} (1 Tbit/s): remove the policy for no cap"
            )),
            _ => Ok(()),
        }
    }
}

/// One direction of a [`BandwidthPolicy`], as the CNI bandwidth plugin
/// checks it: both or neither, neither zero, the burst under 4 GB.
fn direction(name: &str, rate: Option<u64>, burst: Option<u64>) -> Result<Option<(u64, u64)>, String> {
    match (rate, burst) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!("Bandwidth {name}Rate is set without {name}Burst: give both (bits)")),
        (None, Some(_)) => Err(format!("Bandwidth {name}Burst is set without {name}Rate: give both")),
        (Some(0), _) => Err(format!("Bandwidth {name}Rate must be above 0 (bits per second)")),
        (_, Some(0)) => Err(format!("Bandwidth {name}Burst must be above 0 (bits)")),
        (_, Some(b)) if b / 8 >= u32::MAX as u64 => Err(format!("Bandwidth {name}Burst cannot be more than 4GB")),
        (Some(r), _) if r / 8 > MAX_RATE_BYTES => Err(format!("Bandwidth {name}Rate {r} is above 1 Tbit/s")),
        (Some(r), Some(b)) => Ok(Some((r, b))),
    }
}

impl BandwidthPolicy {
    /// `(rate, burst)` of traffic to the endpoint, in bits/s and bits.
    pub fn ingress(&self) -> Result<Option<(u64, u64)>, String> {
        direction("Ingress", self.ingress_rate, self.ingress_burst)
    }
    /// `(rate, burst)` of traffic from the endpoint, in bits/s and bits.
    pub fn egress(&self) -> Result<Option<(u64, u64)>, String> {
        direction("Egress", self.egress_rate, self.egress_burst)
    }
    pub fn check(&self) -> Result<(), String> {
        if self.ingress()?.is_none() && self.egress()?.is_none() {
            return Err("a Bandwidth policy caps nothing: give IngressRate and IngressBurst, or EgressRate and EgressBurst, or remove it".into());
        }
        Ok(())
    }
}

/// The `QOS` policy among `policies`.
pub fn qos_in(policies: &[EndpointPolicy]) -> Option<&QosPolicy> {
    policies.iter().find_map(|p| match p {
        EndpointPolicy::Qos(q) => Some(q),
        _ => None,
    })
}

/// The `Bandwidth` policy among `policies`.
pub fn bandwidth_in(policies: &[EndpointPolicy]) -> Option<&BandwidthPolicy> {
    policies.iter().find_map(|p| match p {
        EndpointPolicy::Bandwidth(b) => Some(b),
        _ => None,
    })
}

/// Whether `policies` cap the endpoint's traffic at all.
pub fn has_qos(policies: &[EndpointPolicy]) -> bool {
    policies.iter().any(|p| matches!(p, EndpointPolicy::Qos(_) | EndpointPolicy::Bandwidth(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_json_is_hcn_shaped_and_unknown_fields_are_refused() {
        let p: EndpointPolicy =
            serde_json::from_str(r#"{"Type":"QOS","Settings":{"MaximumOutgoingBandwidthInBytes":2500000}}"#).unwrap();
        assert_eq!(p, EndpointPolicy::Qos(QosPolicy { maximum_outgoing_bandwidth_in_bytes: 2_500_000 }));
        assert!(serde_json::from_str::<EndpointPolicy>(
            r#"{"Type":"QOS","Settings":{"MaximumOutgoingBandwidthInBytes":1,"Burst":5}}"#
        )
        .is_err());
        assert!(QosPolicy { maximum_outgoing_bandwidth_in_bytes: 0 }.check().unwrap_err().contains("above 0"));
    }

    #[test]
    fn bandwidth_directions_need_rate_and_burst_above_zero_as_the_cni_plugin_wants() {
        let bw =
            |ir, ib, er, eb| BandwidthPolicy { ingress_rate: ir, ingress_burst: ib, egress_rate: er, egress_burst: eb };
        assert_eq!(bw(Some(8), Some(16), None, None).ingress(), Ok(Some((8, 16))));
        assert!(bw(Some(8), Some(16), None, None).check().is_ok());
        assert!(bw(Some(8), None, None, None).check().unwrap_err().contains("without IngressBurst"));
        assert!(bw(None, None, None, Some(8)).check().unwrap_err().contains("without EgressRate"));
        assert!(bw(None, None, Some(0), Some(8)).check().unwrap_err().contains("EgressRate must be above 0"));
        assert!(bw(Some(8), Some(0), None, None).check().unwrap_err().contains("IngressBurst must be above 0"));
        assert!(bw(Some(8), Some(8 * u32::MAX as u64), None, None).check().unwrap_err().contains("4GB"));
        assert!(bw(None, None, None, None).check().unwrap_err().contains("caps nothing"));
    }
}
