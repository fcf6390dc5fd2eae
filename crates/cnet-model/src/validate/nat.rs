//! Checks of an endpoint's `OutBoundNAT` policy.

use crate::endpoint::{outbound_nats_in, EndpointPolicy};
use crate::error::{ApiError, Result};
use crate::{Network, NetworkType};

/// At most one `OutBoundNAT` policy, whose settings the kernel can take,
/// on a network whose traffic leaves through the host's routing.
pub fn check_outbound_nat(policies: &[EndpointPolicy], net: &Network) -> Result<()> {
    let nats: Vec<_> = outbound_nats_in(policies).collect();
    let Some(nat) = nats.first() else { return Ok(()) };
    if nats.len() > 1 {
        return Err(ApiError::invalid_param(format!(
            "an endpoint takes one OutBoundNAT policy, this one has {}: merge their Exceptions and Destinations",
            nats.len()
        )));
    }
    let rule = nat.rule().map_err(ApiError::invalid_param)?;
    if !matches!(net.r#type, NetworkType::Nat | NetworkType::L2Bridge | NetworkType::L2Tunnel | NetworkType::Overlay) {
        return Err(ApiError::invalid_param(format!(
            "OutBoundNAT needs a network whose traffic the host routes out (NAT, L2Bridge, L2Tunnel, Overlay); {} is {:?}",
            net.name, net.r#type
        )));
    }
    if let Some(vip) = rule.virtual_ip {
        let families = net.ipams.iter().flat_map(|i| &i.subnets).map(|s| s.ip_address_prefix.addr().is_ipv4());
        if !families.clone().any(|v4| v4 == vip.is_ipv4()) {
            return Err(ApiError::invalid_param(format!(
                "OutBoundNAT VirtualIP {vip} is of a family network {} has no subnet of: give an address of the other family",
                net.name
            )));
        }
    }
    Ok(())
}
