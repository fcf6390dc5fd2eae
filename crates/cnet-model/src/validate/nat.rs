//! Checks of an endpoint's `OutBoundNAT` and `L4Proxy` policies: what the
//! host's NAT does with its traffic.

use crate::endpoint::{l4proxies_in, outbound_nats_in, EndpointPolicy};
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
    if net.r#type == NetworkType::Transparent {
        return Err(ApiError::invalid_param(format!(
            "OutBoundNAT has nothing to translate on Transparent network {}: its endpoints are on the LAN at their own addresses and their traffic never passes the host; remove it, or use an L2Bridge network (whose traffic the host routes out)",
            net.name
        )));
    }
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

/// At most one `L4Proxy` policy, whose settings the kernel can take, on a
/// network whose endpoints reach the host, with a proxy that is not the
/// endpoint itself.
pub fn check_l4proxy(policies: &[EndpointPolicy], ips: &[std::net::IpAddr], net: &Network) -> Result<()> {
    let proxies: Vec<_> = l4proxies_in(policies).collect();
    let Some(proxy) = proxies.first() else { return Ok(()) };
    if proxies.len() > 1 {
        return Err(ApiError::invalid_param(format!(
            "an endpoint takes one L4Proxy policy, this one has {}: one proxy takes all its flows",
            proxies.len()
        )));
    }
    let rule = proxy.rule().map_err(ApiError::invalid_param)?;
    if net.r#type == NetworkType::Transparent {
        return Err(ApiError::invalid_param(format!(
            "L4Proxy is not supported on Transparent network {}: its endpoints' flows never pass the host, and a proxy in the endpoint's own namespace would have its own flows redirected too (L4Proxy names no proxy user to exempt); use an L2Bridge or NAT network",
            net.name
        )));
    }
    if !matches!(
        net.r#type,
        NetworkType::Nat | NetworkType::Internal | NetworkType::L2Bridge | NetworkType::L2Tunnel | NetworkType::Overlay
    ) {
        return Err(ApiError::invalid_param(format!(
            "L4Proxy needs a network whose endpoints reach the host (NAT, Internal, L2Bridge, L2Tunnel, Overlay); {} is {:?}",
            net.name, net.r#type
        )));
    }
    if let Some(ip) = rule.ip.filter(|ip| ips.contains(ip)) {
        return Err(ApiError::invalid_param(format!(
            "L4Proxy IP {ip} is the endpoint's own address: a proxy inside the endpoint is not supported in this build; run it on the host and leave IP empty"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ty: &str) -> Network {
        serde_json::from_value(serde_json::json!({"Name": "lan", "Type": ty})).unwrap()
    }
    fn policy(v: serde_json::Value) -> EndpointPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn on_a_transparent_network_outbound_nat_and_l4proxy_are_refused_saying_why_and_what_instead() {
        let nat = [policy(serde_json::json!({"Type": "OutBoundNAT", "Settings": {}}))];
        let err = check_outbound_nat(&nat, &net("Transparent")).unwrap_err();
        assert!(err.error.contains("never passes the host") && err.error.contains("L2Bridge"), "{}", err.error);
        assert!(check_outbound_nat(&nat, &net("L2Bridge")).is_ok());
        let proxy = [policy(serde_json::json!({"Type": "L4Proxy", "Settings": {"Port": "15001"}}))];
        let err = check_l4proxy(&proxy, &[], &net("Transparent")).unwrap_err();
        assert!(err.error.contains("exempt") && err.error.contains("L2Bridge"), "{}", err.error);
        assert!(check_l4proxy(&proxy, &[], &net("NAT")).is_ok());
    }
}
