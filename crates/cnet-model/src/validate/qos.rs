//! Checks of an endpoint's `QOS` and `Bandwidth` policies.

use crate::endpoint::EndpointPolicy;
use crate::error::{ApiError, Result};
use crate::qos::bandwidth_in;
use crate::Network;

/// At most one `QOS` and one `Bandwidth` policy, each valid, not both
/// capping the egress. Every network type takes them (`net` is for the
/// errors' sake).
pub fn check_qos(policies: &[EndpointPolicy], _net: &Network) -> Result<()> {
    let (mut qos, mut bw) = (0, 0);
    for p in policies {
        match p {
            EndpointPolicy::Qos(q) => {
                q.check().map_err(ApiError::invalid_param)?;
                qos += 1;
            }
            EndpointPolicy::Bandwidth(b) => {
                b.check().map_err(ApiError::invalid_param)?;
                bw += 1;
            }
            _ => {}
        }
    }
    if qos > 1 || bw > 1 {
        return Err(ApiError::invalid_param("an endpoint takes one QOS and one Bandwidth policy: keep one of each"));
    }
    if qos == 1 && bandwidth_in(policies).is_some_and(|b| b.egress_rate.is_some()) {
        return Err(ApiError::invalid_param("QOS and Bandwidth EgressRate both cap the endpoint's egress: keep one"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qos::{BandwidthPolicy, QosPolicy};
    use crate::ErrorCode;

    fn net(ty: &str) -> Network {
        serde_json::from_value(serde_json::json!({"Name": "n", "Type": ty})).unwrap()
    }
    fn qos(n: u64) -> EndpointPolicy {
        EndpointPolicy::Qos(QosPolicy { maximum_outgoing_bandwidth_in_bytes: n })
    }
    fn bw(egress: bool) -> EndpointPolicy {
        EndpointPolicy::Bandwidth(BandwidthPolicy {
            ingress_rate: Some(8_000_000),
            ingress_burst: Some(800_000),
            egress_rate: egress.then_some(8_000_000),
            egress_burst: egress.then_some(800_000),
        })
    }

    #[test]
    fn qos_zero_twice_or_with_a_second_egress_cap_is_a_bad_parameter() {
        let nat = net("NAT");
        assert!(check_qos(&[qos(1_000_000), bw(false)], &nat).is_ok());
        for bad in [vec![qos(0)], vec![qos(1), qos(2)], vec![qos(1), bw(true)], vec![bw(true), bw(false)]] {
            assert_eq!(check_qos(&bad, &nat).unwrap_err().error_code, ErrorCode::InvalidParameter, "{bad:?}");
        }
    }

    #[test]
    fn qos_is_taken_on_every_network_type() {
        for ty in ["NAT", "Internal", "Private", "Transparent", "L2Bridge", "L2Tunnel", "Overlay"] {
            assert!(check_qos(&[qos(1_000_000), bw(false)], &net(ty)).is_ok(), "{ty}");
        }
    }
}
