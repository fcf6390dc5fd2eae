//! Checks of Overlay networks' own settings: one VNI (`VSID`) on every
//! subnet; `VxlanPort` and `DrMacAddress` only on Overlay networks.

use super::policy_type;
use crate::{ApiError, Network};

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
        if let Some(t) = net.policies.iter().map(policy_type).find(|t| *t != "NetAdapterName") {
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
}
