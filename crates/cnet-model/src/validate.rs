//! The rules a request must follow, and the normalisation that fills in
//! what cnetd decides (addresses, MACs, routes). Pure: the caller passes in
//! what already exists.

use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

use crate::alloc;
use crate::endpoint::{Endpoint, EndpointPolicy, IpConfig, PortMapping};
use crate::error::{ApiError, ErrorCode, Result};
use crate::net::MacAddr;
use crate::network::{Network, Route, Subnet};
use uuid::Uuid;

/// Rejects policies whose `Type` this build does not know, before the typed
/// parse, so the answer is `MappingNotSupported` rather than a JSON error.
pub fn check_policy_types(body: &serde_json::Value, supported: &[&str], what: &str) -> Result<()> {
    let Some(list) = body.get("Policies").and_then(|p| p.as_array()) else {
        return Ok(());
    };
    for p in list {
        let ty = p.get("Type").and_then(|t| t.as_str()).unwrap_or("");
        if !supported.contains(&ty) {
            let known = if supported.is_empty() { "none yet".to_string() } else { supported.join(", ") };
            return Err(ApiError::unsupported(format!(
                "{what} policy type {ty:?} is not supported by this build (supported: {known}); remove it from Policies"
            )));
        }
    }
    Ok(())
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_subnet(s: &Subnet) -> Result<()> {
    let p = s.ip_address_prefix;
    if p.trunc() != p {
        return Err(ApiError::invalid_subnet(format!("subnet {p} has host bits set: write {}", p.trunc())));
    }
    let max = match p {
        IpNet::V4(_) => 30,
        IpNet::V6(_) => 126,
    };
    if p.prefix_len() > max || p.prefix_len() < 8 {
        return Err(ApiError::invalid_subnet(format!(
            "subnet {p} has no room for endpoints or is too large: use a prefix length between /8 and /{max}"
        )));
    }
    if s.policies.len() > 1 {
        return Err(ApiError::invalid_param(format!("subnet {p} has more than one VLAN policy: keep one")));
    }
    if let Some(v) = s.vlan() {
        v.vlan_id()?;
    }
    for (i, b) in s.ip_subnets.iter().enumerate() {
        let bp = b.ip_address_prefix;
        if bp.trunc() != bp || !p.contains(&bp.network()) || bp.prefix_len() < p.prefix_len() {
            return Err(ApiError::invalid_subnet(format!(
                "IpSubnet {bp} is not a block of subnet {p}: give a prefix inside it, without host bits"
            )));
        }
        if let Some(o) = s.ip_subnets[..i].iter().find(|o| overlaps(&o.ip_address_prefix, &bp)) {
            return Err(ApiError::invalid_subnet(format!(
                "IpSubnets {bp} and {} of subnet {p} overlap: give each address once",
                o.ip_address_prefix
            )));
        }
    }
    for r in &s.routes {
        if let Some(hop) = r.next_hop {
            if !p.contains(&hop) || hop == p.network() {
                return Err(ApiError::invalid_ip(format!("route NextHop {hop} is not a usable address of subnet {p}")));
            }
        }
        if r.destination_prefix.trunc() != r.destination_prefix {
            return Err(ApiError::invalid_subnet(format!(
                "route destination {} has host bits set: write {}",
                r.destination_prefix,
                r.destination_prefix.trunc()
            )));
        }
    }
    Ok(())
}

/// Checks a network request against the rules and the networks that exist.
mod acls;
mod nat;
mod overlay;
mod ports;
mod qos;
pub use acls::{check_acls, check_network_policies};
pub use nat::{check_l4proxy, check_outbound_nat};
use overlay::check_overlay;
pub use ports::{check_port_mappings, Publisher};
pub use qos::check_qos;

/// The `Type` of a network policy on the wire.
pub fn policy_type(p: &crate::NetworkPolicy) -> &'static str {
    match p {
        crate::NetworkPolicy::NetAdapterName(_) => "NetAdapterName",
        crate::NetworkPolicy::VxlanPort(_) => "VxlanPort",
        crate::NetworkPolicy::DrMacAddress(_) => "DrMacAddress",
        crate::NetworkPolicy::RemoteSubnetRoute(_) => "RemoteSubnetRoute",
        crate::NetworkPolicy::AutomaticDns(_) => "AutomaticDNS",
        crate::NetworkPolicy::SetPolicy(_) => "SetPolicy",
        crate::NetworkPolicy::NetworkAcl(_) => "NetworkACL",
    }
}

pub fn validate_network(net: &Network, existing: &[&Network]) -> Result<()> {
    check_annotations(&net.annotations)?;
    match (net.r#type.needs_uplink(), net.adapter_name()) {
        (true, None) => {
            return Err(ApiError::invalid_param(format!(
                "a {} network needs its uplink: add Policies: [{{\"Type\": \"NetAdapterName\", \"Settings\": {{\"NetworkAdapterName\": \"eth0\"}}}}]",
                net.r#type
            )))
        }
        // An Overlay network may name the underlay link its tunnels leave by.
        (false, Some(_)) if net.r#type != crate::NetworkType::Overlay => {
            return Err(ApiError::invalid_param(format!(
                "a {} network has no uplink: remove the NetAdapterName policy (it is for Transparent, L2Bridge and L2Tunnel)",
                net.r#type
            )))
        }
        _ => {}
    }
    let count = |t: &str| net.policies.iter().filter(|p| policy_type(p) == t).count();
    for t in crate::NetworkPolicy::SUPPORTED.into_iter().filter(|t| !crate::NetworkPolicy::REPEATED.contains(t)) {
        if count(t) > 1 {
            return Err(ApiError::invalid_param(format!("a network takes one {t} policy: keep one")));
        }
    }
    check_overlay(net)?;
    check_network_policies(net)?;
    if net.subnets().any(|s| s.vlan().is_some()) && net.r#type != crate::NetworkType::Transparent {
        return Err(ApiError::unsupported(format!(
            "VLAN subnet policies need a Transparent network in this build; {} is {}",
            net.name, net.r#type
        )));
    }
    if let Some(mtu) = net.mtu {
        if !(576..=65535).contains(&mtu) {
            return Err(ApiError::invalid_param(format!("Mtu {mtu} is out of range: use 576 to 65535")));
        }
    }
    for ipam in &net.ipams {
        let dhcp = ipam.r#type.eq_ignore_ascii_case("Dhcp");
        if !ipam.r#type.eq_ignore_ascii_case("Static") && !dhcp {
            return Err(ApiError::invalid_param(format!(
                "IPAM type {:?} is unknown: use Static (cnetd allocates addresses) or Dhcp (the LAN's DHCP server leases them)",
                ipam.r#type
            )));
        }
        if dhcp && net.r#type != crate::NetworkType::Transparent {
            return Err(ApiError::unsupported(format!(
                "Dhcp IPAM needs a Transparent network (its endpoints are on the LAN with their own MAC); {} is {}: use Static",
                net.name, net.r#type
            )));
        }
    }
    if net.ipams.len() > 1 && net.ipams.iter().any(|i| !i.r#type.eq_ignore_ascii_case(&net.ipams[0].r#type)) {
        return Err(ApiError::invalid_param("all Ipams of a network take the same Type"));
    }
    let subnets: Vec<&Subnet> = net.subnets().collect();
    if net.is_dhcp() {
        // The lease decides the address, prefix and gateway; a subnet, if
        // given, only documents the LAN and is checked for overlaps.
        for s in &subnets {
            check_subnet(s)?;
        }
    } else if subnets.is_empty() {
        return Err(ApiError::invalid_subnet(
            "the network has no subnet: add Ipams: [{\"Subnets\": [{\"IpAddressPrefix\": \"10.79.0.0/24\"}]}]",
        ));
    }
    for s in &subnets {
        check_subnet(s)?;
    }
    for fam_v4 in [true, false] {
        if subnets.iter().filter(|s| s.ip_address_prefix.addr().is_ipv4() == fam_v4).count() > 1 {
            return Err(ApiError::invalid_subnet(
                "a network takes at most one IPv4 and one IPv6 subnet: create another network for more",
            ));
        }
    }
    for other in existing.iter().filter(|o| o.id != net.id) {
        if other.name == net.name {
            return Err(ApiError::new(
                ErrorCode::NetworkAlreadyExists,
                format!("a network named {} already exists ({}): pick another name or delete it", net.name, other.id),
            ));
        }
        if let (Some(a), Some(b)) = (net.adapter_name(), other.adapter_name()) {
            if a == b && other.r#type != net.r#type {
                return Err(ApiError::invalid_param(format!(
                    "uplink {a} is already the {} network {}'s: a {} network needs an uplink of its own (or make it {} too)",
                    other.r#type, other.name, net.r#type, other.r#type
                )));
            }
        }
        for s in &subnets {
            if let Some(o) = other.subnets().find(|o| overlaps(&o.ip_address_prefix, &s.ip_address_prefix)) {
                return Err(ApiError::invalid_subnet(format!(
                    "subnet {} overlaps {} of network {}: pick a subnet no other network uses",
                    s.ip_address_prefix, o.ip_address_prefix, other.name
                )));
            }
        }
    }
    Ok(())
}

/// What is already in use where a new endpoint goes.
#[derive(Default)]
pub struct Usage<'a> {
    /// Addresses of the network's endpoints.
    pub ips: HashSet<IpAddr>,
    /// Addresses that are not the network's to hand out: the host's own on
    /// the LAN of a physical network.
    pub reserved: HashSet<IpAddr>,
    /// MACs of the network's endpoints.
    pub macs: HashSet<MacAddr>,
    /// Every port mapping on the host, with its endpoint.
    pub port_mappings: Vec<(&'a PortMapping, Publisher<'a>)>,
    /// The address handed out last on the network, per family: allocation
    /// goes on after it, so a freed address is not handed out again at once.
    pub last_allocated: Vec<IpAddr>,
    /// The namespace the endpoint goes into, if known.
    pub namespace: Option<Uuid>,
}

/// Annotations of a network or an endpoint: bounded, so a client cannot
/// grow the store without limit.
pub fn check_annotations(a: &std::collections::BTreeMap<String, String>) -> Result<()> {
    if a.len() > 64 || a.iter().any(|(k, v)| k.is_empty() || k.len() > 253 || v.len() > 4096) {
        return Err(ApiError::invalid_param(
            "Annotations: at most 64 entries, keys of 1 to 253 bytes, values up to 4096 bytes",
        ));
    }
    Ok(())
}

/// The gateway of a subnet on this network, if the network has one.
pub fn gateway_of(net: &Network, s: &Subnet) -> Option<IpAddr> {
    net.r#type.has_gateway().then(|| s.gateway())
}

/// Each `SDNRoute` makes a route the endpoint's network can carry: a
/// `NextHop` on one of its subnets, a gateway for `NeedEncap`.
pub fn check_sdn_routes(policies: &[crate::EndpointPolicy], net: &Network) -> Result<()> {
    let subnets: Vec<&Subnet> = net.ipams.iter().flat_map(|i| &i.subnets).collect();
    let gateways: Vec<IpAddr> = subnets.iter().filter_map(|s| gateway_of(net, s)).collect();
    for r in crate::endpoint::sdn_routes(policies, &gateways).map_err(ApiError::invalid_param)? {
        if let Some(hop) = r.next_hop.filter(|h| !subnets.iter().any(|s| s.ip_address_prefix.contains(h))) {
            return Err(ApiError::invalid_param(format!(
                "SDNRoute {} via {hop}: the next hop must be on a subnet of network {} (or use NeedEncap to go through its gateway)",
                r.destination_prefix, net.name
            )));
        }
    }
    Ok(())
}

/// The endpoint's MTU, after its `EncapOverhead`, is one Linux takes (576
/// to 65535; 1280 at least on a network with IPv6).
pub fn check_mtu(policies: &[crate::EndpointPolicy], net: &Network) -> Result<()> {
    let mtu = crate::endpoint::mtu_in(policies);
    if let Some(mtu) = mtu.filter(|m| !(576..=65535).contains(m)) {
        return Err(ApiError::invalid_param(format!("endpoint Mtu {mtu} is out of range: use 576 to 65535")));
    }
    let default = if net.r#type == crate::NetworkType::Overlay { 1450 } else { 1500 };
    let effective = crate::endpoint::effective_mtu(policies, net.mtu.unwrap_or(default));
    let v6 = net.ipams.iter().flat_map(|i| &i.subnets).any(|s| s.ip_address_prefix.addr().is_ipv6());
    let least = if v6 { 1280 } else { 576 };
    if effective < least {
        return Err(ApiError::invalid_param(format!(
            "the endpoint's MTU after its EncapOverhead would be {effective}, below {least}{}: lower the Overhead or raise the Mtu",
            if v6 { " (IPv6's minimum)" } else { "" }
        )));
    }
    Ok(())
}

/// Validates an endpoint request for `net` and fills in what cnetd decides:
/// addresses (one per subnet family), prefix lengths, MAC, routes.
pub fn prepare_endpoint(ep: &mut Endpoint, net: &Network, usage: &Usage, sctp: bool) -> Result<()> {
    check_annotations(&ep.annotations)?;
    check_mtu(&ep.policies, net)?;
    let mappings: Vec<&PortMapping> = ep.port_mappings().collect();
    if !mappings.is_empty() && !net.r#type.publishes_ports() {
        return Err(ApiError::unsupported(port_mappings_refused(net)));
    }
    check_vlan_policies(&ep.policies, net)?;
    check_acls(&ep.policies, net)?;
    check_outbound_nat(&ep.policies, net)?;
    check_sdn_routes(&ep.policies, net)?;
    let given: Vec<IpAddr> = ep.ip_configurations.iter().map(|c| c.ip_address).collect();
    check_l4proxy(&ep.policies, &given, net)?;
    check_qos(&ep.policies, net)?;
    overlay::check_remote_endpoint(ep, net)?;
    if net.is_dhcp() {
        if !ep.ip_configurations.is_empty() {
            return Err(ApiError::invalid_ip(format!(
                "network {} leases addresses from the LAN's DHCP server: omit IpConfigurations",
                net.name
            )));
        }
        if !ep.routes.is_empty() {
            return Err(ApiError::invalid_param(format!(
                "network {} takes routes from the DHCP lease: omit Routes",
                net.name
            )));
        }
        let mac = match ep.mac_address {
            Some(mac) if usage.macs.contains(&mac) => {
                return Err(ApiError::invalid_param(format!(
                    "MAC address {mac} is already used on network {}: pick another or omit it",
                    net.name
                )))
            }
            Some(mac) => mac,
            None => alloc::mac_for_id(&ep.id),
        };
        ep.mac_address = Some(mac);
        if ep.dns.is_none() {
            ep.dns = net.dns.clone();
        }
        return Ok(());
    }
    check_port_mappings(&mappings, &usage.port_mappings, usage.namespace, sctp)?;

    // Addresses: each requested one must fit a subnet and be free; families
    // the request leaves out are allocated.
    let mut configs: Vec<IpConfig> = Vec::new();
    for c in &ep.ip_configurations {
        let Some(s) = net.subnets().find(|s| s.ip_address_prefix.contains(&c.ip_address)) else {
            return Err(ApiError::new(
                ErrorCode::AddrInvalidOrReserved,
                format!("address {} is outside every subnet of network {}", c.ip_address, net.name),
            ));
        };
        if !alloc::is_assignable(s, gateway_of(net, s), c.ip_address) {
            return Err(ApiError::new(
                ErrorCode::AddrInvalidOrReserved,
                format!(
                    "address {} is reserved in {} (network address, gateway or broadcast): pick another",
                    c.ip_address, s.ip_address_prefix
                ),
            ));
        }
        if usage.reserved.contains(&c.ip_address) {
            return Err(ApiError::new(
                ErrorCode::AddrInvalidOrReserved,
                format!("address {} is the host's own on network {}: pick another", c.ip_address, net.name),
            ));
        }
        if usage.ips.contains(&c.ip_address) {
            return Err(ApiError::new(
                ErrorCode::AddrInvalidOrReserved,
                format!("address {} is already taken on network {}: pick another or omit it", c.ip_address, net.name),
            ));
        }
        if configs.iter().any(|o| o.ip_address.is_ipv4() == c.ip_address.is_ipv4()) {
            return Err(ApiError::invalid_ip("at most one address per family per endpoint"));
        }
        if c.prefix_length != 0 && c.prefix_length != s.ip_address_prefix.prefix_len() {
            return Err(ApiError::invalid_ip(format!(
                "PrefixLength {} does not match subnet {}: omit it",
                c.prefix_length, s.ip_address_prefix
            )));
        }
        if !s.ip_subnets.is_empty() && !s.ip_subnets.iter().any(|b| b.ip_address_prefix.contains(&c.ip_address)) {
            return Err(ApiError::new(
                ErrorCode::AddrInvalidOrReserved,
                format!(
                    "address {} is outside the IpSubnets of {} (the blocks endpoints take addresses from): pick one inside them",
                    c.ip_address, s.ip_address_prefix
                ),
            ));
        }
        configs.push(IpConfig { ip_address: c.ip_address, prefix_length: s.ip_address_prefix.prefix_len() });
    }
    // A remote endpoint has the addresses it was given, and no others.
    let remote = ep.flags & crate::endpoint::REMOTE_ENDPOINT != 0;
    for s in net.subnets().filter(|_| !remote) {
        let v4 = s.ip_address_prefix.addr().is_ipv4();
        if configs.iter().any(|c| c.ip_address.is_ipv4() == v4) {
            continue;
        }
        let after = usage.last_allocated.iter().copied().find(|ip| s.ip_address_prefix.contains(ip));
        let taken: std::borrow::Cow<HashSet<IpAddr>> = if usage.reserved.is_empty() {
            std::borrow::Cow::Borrowed(&usage.ips)
        } else {
            std::borrow::Cow::Owned(usage.ips.union(&usage.reserved).copied().collect())
        };
        let ip = alloc::first_free(s, gateway_of(net, s), &taken, after).ok_or_else(|| {
            ApiError::new(
                ErrorCode::AddressPoolExhausted,
                format!(
                    "subnet {} of network {} has no free address left: delete endpoints or add a subnet",
                    s.ip_address_prefix, net.name
                ),
            )
        })?;
        configs.push(IpConfig { ip_address: ip, prefix_length: s.ip_address_prefix.prefix_len() });
    }
    configs.sort_by_key(|c| !c.ip_address.is_ipv4());
    ep.ip_configurations = configs;

    match ep.mac_address {
        Some(mac) if usage.macs.contains(&mac) => {
            return Err(ApiError::invalid_param(format!(
                "MAC address {mac} is already used on network {}: pick another or omit it",
                net.name
            )))
        }
        Some(_) => {}
        None => {
            let pool = net.mac_pool.as_ref().filter(|p| !p.ranges.is_empty());
            let mac = match pool {
                Some(pool) => alloc::mac_from_pool(pool, &usage.macs).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::AddressPoolExhausted,
                        format!("the MacPool of network {} is exhausted", net.name),
                    )
                })?,
                None => alloc::mac_for_ip(ep.ip_configurations[0].ip_address),
            };
            ep.mac_address = Some(mac);
        }
    }

    if ep.routes.is_empty() {
        for s in net.subnets() {
            if let Some(gw) = gateway_of(net, s) {
                let default: IpNet = if gw.is_ipv4() { "0.0.0.0/0".parse().unwrap() } else { "::/0".parse().unwrap() };
                ep.routes.push(Route { next_hop: Some(gw), destination_prefix: default, metric: 0 });
            }
        }
    }
    for r in &ep.routes {
        if let Some(hop) = r.next_hop {
            if !net.subnets().any(|s| s.ip_address_prefix.contains(&hop)) {
                return Err(ApiError::invalid_ip(format!("route NextHop {hop} is not on network {}", net.name)));
            }
        }
    }
    if ep.dns.is_none() {
        ep.dns = net.dns.clone();
    }
    Ok(())
}

/// An endpoint's `VLAN` policies: at most one, a valid ID, on a Transparent network.
pub fn check_vlan_policies(policies: &[EndpointPolicy], net: &Network) -> Result<()> {
    let vlans: Vec<_> = policies.iter().filter(|p| matches!(p, EndpointPolicy::Vlan(_))).collect();
    if vlans.len() > 1 {
        return Err(ApiError::invalid_param("an endpoint takes one VLAN policy: keep one"));
    }
    if let Some(v) = crate::endpoint::vlan_in(policies) {
        v.vlan_id()?;
        if net.r#type != crate::NetworkType::Transparent {
            return Err(ApiError::unsupported(format!(
                "VLAN endpoint policies need a Transparent network in this build; {} is {}",
                net.name, net.r#type
            )));
        }
    }
    Ok(())
}

/// Why `net` refuses port mappings, and what to do instead.
pub fn port_mappings_refused(net: &Network) -> String {
    match net.r#type {
        crate::NetworkType::Transparent => format!(
            "network {} is Transparent: its endpoints are on the LAN at their own addresses, reach them there (port mappings are for NAT, L2Bridge and L2Tunnel networks)",
            net.name
        ),
        t => format!("port mappings need a NAT, L2Bridge or L2Tunnel network; {} is {t}", net.name),
    }
}

/// Supported endpoint policy types, for [`check_policy_types`].
pub fn endpoint_policy_types() -> &'static [&'static str] {
    &EndpointPolicy::SUPPORTED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Ipam;

    fn network(name: &str, prefixes: &[&str]) -> Network {
        serde_json::from_value(serde_json::json!({
            "ID": uuid::Uuid::new_v4(),
            "Name": name,
            "Type": "NAT",
            "Ipams": [{"Type": "Static", "Subnets": prefixes.iter().map(|p| serde_json::json!({"IpAddressPrefix": p})).collect::<Vec<_>>()}]
        }))
        .unwrap()
    }

    fn endpoint(net: &Network) -> Endpoint {
        serde_json::from_value(serde_json::json!({"HostComputeNetwork": net.id.to_string()})).unwrap()
    }

    #[test]
    fn overlapping_subnets_are_refused() {
        let a = network("a", &["10.0.0.0/16"]);
        let b = network("b", &["10.0.5.0/24"]);
        let err = validate_network(&b, &[&a]).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidSubnet);
        assert!(err.error.contains("overlaps"));
    }

    #[test]
    fn subnets_with_host_bits_are_refused_with_the_fix() {
        let a = network("a", &["10.0.0.5/24"]);
        let err = validate_network(&a, &[]).unwrap_err();
        assert!(err.error.contains("10.0.0.0/24"), "{}", err.error);
    }

    #[test]
    fn dual_stack_endpoint_gets_both_families_and_routes() {
        let net = network("a", &["10.0.0.0/24", "fd00:1::/64"]);
        let mut ep = endpoint(&net);
        prepare_endpoint(&mut ep, &net, &Usage::default(), false).unwrap();
        assert_eq!(ep.ip_configurations.len(), 2);
        assert_eq!(ep.ip_configurations[0].ip_address, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ep.ip_configurations[1].ip_address, "fd00:1::2".parse::<IpAddr>().unwrap());
        assert_eq!(ep.routes.len(), 2);
        assert_eq!(ep.mac_address.unwrap().to_string(), "0a:58:0a:00:00:02");
    }

    #[test]
    fn taken_and_reserved_addresses_are_refused() {
        let net = network("a", &["10.0.0.0/24"]);
        let mut usage = Usage::default();
        usage.ips.insert("10.0.0.7".parse().unwrap());
        for (ip, word) in [("10.0.0.7", "taken"), ("10.0.0.1", "reserved"), ("10.0.1.1", "outside")] {
            let mut ep = endpoint(&net);
            ep.ip_configurations = vec![IpConfig { ip_address: ip.parse().unwrap(), prefix_length: 0 }];
            let err = prepare_endpoint(&mut ep, &net, &usage, false).unwrap_err();
            assert_eq!(err.error_code, ErrorCode::AddrInvalidOrReserved);
            assert!(err.error.contains(word), "{}", err.error);
        }
    }

    #[test]
    fn no_subnet_is_an_invalid_subnet() {
        let mut a = network("a", &[]);
        a.ipams = vec![Ipam { r#type: "Static".into(), subnets: vec![] }];
        assert_eq!(validate_network(&a, &[]).unwrap_err().error_code, ErrorCode::InvalidSubnet);
    }
}
