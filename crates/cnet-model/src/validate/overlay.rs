//! Checks of Overlay networks' own settings: one VNI (`VSID`) on every
//! subnet; `VxlanPort` and `DrMacAddress` only on Overlay networks.

use super::policy_type;
use crate::endpoint::{provider_in, REMOTE_ENDPOINT};
use crate::{ApiError, Endpoint, EndpointPolicy, Network};

type Result<T> = std::result::Result<T, ApiError>;

/// An Overlay network: every subnet has one `VSID` (the VNI, 1 to
/// 16777215), all the same; `VxlanPort` and `DrMacAddress` only here.
pub(super) fn check_overlay(net: &Network) -> Result<()> {
    if net.policies.iter().any(|p| matches!(p, crate::NetworkPolicy::RemoteSubnetRoute(_))) {
        return Err(ApiError::invalid_param(
            "RemoteSubnetRoute policies are cnet's answer of where other hosts' blocks are (from the cluster): remove them from the request",
        ));
    }
    let overlay = net.r#type == crate::NetworkType::Overlay;
    if !overlay {
        if let Some(t) = net
            .policies
            .iter()
            .map(policy_type)
            .find(|t| !matches!(*t, "NetAdapterName" | "AutomaticDNS" | "SetPolicy" | "NetworkACL"))
        {
            return Err(ApiError::invalid_param(format!(
                "{t} is a policy of Overlay networks; {} is {}: remove it",
                net.name, net.r#type
            )));
        }
        if net.subnets().any(|s| s.vsid().is_some()) {
            return Err(ApiError::invalid_param(format!(
                "VSID subnet policies are for Overlay networks; {} is {}: remove them",
                net.name, net.r#type
            )));
        }
        return Ok(());
    }
    if net.subnets().next().is_none() || net.is_dhcp() {
        return Err(ApiError::invalid_param(
            "an Overlay network needs its subnets (Static IPAM): its hosts hand out blocks of them",
        ));
    }
    let vnis: Vec<Option<u32>> = net.subnets().map(|s| s.vsid()).collect();
    let vni = match vnis[0] {
        Some(v) if vnis.iter().all(|x| *x == Some(v)) => v,
        _ => {
            return Err(ApiError::invalid_param(
                "every subnet of an Overlay network needs the same VSID policy (its VNI): add {\"Type\": \"VSID\", \"Settings\": {\"IsolationId\": 4096}} to each",
            ))
        }
    };
    if !(1..=0xff_ffff).contains(&vni) {
        return Err(ApiError::invalid_param(format!("VSID {vni} is out of range: a VNI is 1 to 16777215")));
    }
    if net.vxlan_port() == Some(0) {
        return Err(ApiError::invalid_param("VxlanPort 0 is not a port: use 4789 (the default) or another UDP port"));
    }
    Ok(())
}

/// A remote endpoint (`Flags: RemoteEndpoint`): on an Overlay network, with
/// its `ProviderAddress`, its addresses and its MAC given, no port
/// mappings; a `ProviderAddress` policy only on a remote endpoint.
pub(crate) fn check_remote_endpoint(ep: &Endpoint, net: &Network) -> Result<()> {
    let remote = ep.flags & REMOTE_ENDPOINT != 0;
    let provider = provider_in(&ep.policies);
    if !remote {
        return match provider {
            Some(_) => Err(ApiError::invalid_param(
                "a ProviderAddress policy belongs to a remote endpoint: add Flags 1 (RemoteEndpoint) or remove it",
            )),
            None => Ok(()),
        };
    }
    let what = "a remote endpoint (Flags 1) says where addresses of an Overlay network live";
    if net.r#type != crate::NetworkType::Overlay {
        return Err(ApiError::invalid_param(format!("{what}; network {} is {}", net.name, net.r#type)));
    }
    if provider.is_none() || ep.policies.iter().filter(|p| matches!(p, EndpointPolicy::ProviderAddress(_))).count() > 1
    {
        return Err(ApiError::invalid_param(format!(
            "{what}: give one ProviderAddress policy, the underlay address of the host it lives behind"
        )));
    }
    if ep.ip_configurations.is_empty() || ep.mac_address.is_none() {
        return Err(ApiError::invalid_param(format!("{what}: give its IpConfigurations and its MacAddress")));
    }
    if ep.port_mappings().next().is_some() {
        return Err(ApiError::invalid_param("a remote endpoint is not on this host: it takes no port mappings"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_network;
    use serde_json::json;

    fn net(v: serde_json::Value) -> Network {
        serde_json::from_value(v).unwrap()
    }

    fn vsid(id: u32) -> serde_json::Value {
        json!([{"Type": "VSID", "Settings": {"IsolationId": id}}])
    }

    #[test]
    fn an_overlay_network_needs_one_vni_on_every_subnet_and_its_policies_are_its_own() {
        let ok = net(json!({"Name": "ov", "Type": "Overlay",
            "Policies": [{"Type": "VxlanPort", "Settings": {"Port": 4789}}, {"Type": "DrMacAddress", "Settings": {"Address": "0a:58:0a:ff:00:01"}}],
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.220.0.0/16", "Policies": vsid(4096)},
                                   {"IpAddressPrefix": "fd22::/64", "Policies": vsid(4096)}]}]}));
        validate_network(&ok, &[]).unwrap();
        assert_eq!(
            (ok.vni(), ok.vxlan_port(), ok.dr_mac().map(|m| m.to_string())),
            (Some(4096), Some(4789), Some("0a:58:0a:ff:00:01".into()))
        );
        let refused = |v: serde_json::Value| validate_network(&net(v), &[]).unwrap_err().error;
        let e = refused(
            json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.220.0.0/16"}]}]}),
        );
        assert!(e.contains("same VSID"), "{e}");
        let e = refused(json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [
            {"IpAddressPrefix": "10.220.0.0/16", "Policies": vsid(1)}, {"IpAddressPrefix": "fd22::/64", "Policies": vsid(2)}]}]}));
        assert!(e.contains("same VSID"), "{e}");
        let e = refused(
            json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.220.0.0/16", "Policies": vsid(1 << 24)}]}]}),
        );
        assert!(e.contains("out of range"), "{e}");
        let e = refused(
            json!({"Name": "n", "Type": "NAT", "Policies": [{"Type": "VxlanPort", "Settings": {"Port": 4789}}],
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.221.0.0/24"}]}]}),
        );
        assert!(e.contains("policy of Overlay networks"), "{e}");
        let e = refused(
            json!({"Name": "n", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.221.0.0/24", "Policies": vsid(7)}]}]}),
        );
        assert!(e.contains("VSID subnet policies are for Overlay"), "{e}");
    }

    #[test]
    fn a_remote_endpoint_needs_an_overlay_its_provider_its_addresses_and_its_mac() {
        let ov = net(json!({"Name": "ov", "Type": "Overlay",
            "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.9.0.0/16", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 9}}]}]}]}));
        let nat = net(json!({"Name": "n", "Type": "NAT"}));
        let pa = json!([{"Type": "ProviderAddress", "Settings": {"ProviderAddress": "192.168.1.20"}}]);
        let ep = |v: serde_json::Value| -> Endpoint { serde_json::from_value(v).unwrap() };
        let good = ep(json!({"HostComputeNetwork": "ov", "Flags": 1, "MacAddress": "02:00:00:00:00:05",
            "IpConfigurations": [{"IpAddress": "10.9.3.5"}], "Policies": pa}));
        assert!(check_remote_endpoint(&good, &ov).is_ok());
        let refused = |e: &Endpoint, n: &Network, want: &str| {
            let err = check_remote_endpoint(e, n).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        };
        refused(&good, &nat, "is NAT");
        refused(
            &ep(json!({"HostComputeNetwork": "ov", "Flags": 1, "MacAddress": "02:00:00:00:00:05",
            "IpConfigurations": [{"IpAddress": "10.9.3.5"}]})),
            &ov,
            "ProviderAddress",
        );
        refused(&ep(json!({"HostComputeNetwork": "ov", "Flags": 1, "Policies": pa})), &ov, "MacAddress");
        refused(&ep(json!({"HostComputeNetwork": "ov", "Policies": pa})), &ov, "Flags 1");
    }
}
