//! The policies that the host's NAT carries out, compiled to elements of
//! `inet cnet` (whose fixed postrouting and `l4proxy` chains read them):
//! `OutBoundNAT` and `L4Proxy`. Pure: an endpoint in, elements out.
//!
//! Invariants:
//! - Elements are keyed by the endpoint's addresses (and for `L4Proxy` its
//!   switch), so an endpoint's policy never touches another's traffic.
//! - Prefixes are written as nft lists them (a single address without its
//!   length), so the firewall's drift check compares like with like.

use crate::dataplane::FwElem;
use crate::state::EndpointRecord;

/// An endpoint's `L4Proxy`, keyed by (its switch, its address): what is
/// not redirected (`l4p_exc`, and with a Destination `l4p_only` +
/// `l4p_dst`), then where the rest goes: the proxy's address and port
/// (`l4p_dnat`), or the port on the host (`l4p_redir`).
pub fn l4proxy_elems(ep: &EndpointRecord, switch: &str) -> Vec<FwElem> {
    let mut out = Vec::new();
    let Some(rule) = cnet_model::endpoint::l4proxies_in(&ep.policies).next().and_then(|p| p.rule().ok()) else {
        return out;
    };
    let elem = |set, key: String, value: Option<String>| FwElem { set, key, value };
    for ip in ep.ips() {
        let v4 = ip.is_ipv4();
        if rule.ip.is_some_and(|p| p.is_ipv4() != v4) {
            continue;
        }
        let f = |a, b| if v4 { a } else { b };
        let key = format!("\"{switch}\" . {ip}");
        for n in rule.exceptions.iter().filter(|n| n.addr().is_ipv4() == v4) {
            out.push(elem(f("l4p_exc4", "l4p_exc6"), format!("{key} . {}", nft_prefix(n)), None));
        }
        if let Some(d) = rule.destination {
            out.push(elem(f("l4p_only4", "l4p_only6"), key.clone(), None));
            if d.addr().is_ipv4() == v4 {
                out.push(elem(f("l4p_dst4", "l4p_dst6"), format!("{key} . {}", nft_prefix(&d)), None));
            }
        }
        match rule.ip {
            Some(p) => out.push(elem(f("l4p_dnat4", "l4p_dnat6"), key, Some(format!("{p} . {}", rule.port)))),
            None => out.push(elem(f("l4p_redir4", "l4p_redir6"), key, Some(rule.port.to_string()))),
        }
    }
    out
}

/// An endpoint's `OutBoundNAT`, per address of the endpoint: its exceptions
/// (`onat_exc`), its destinations (`onat_only` + `onat_dst`), then either
/// its VirtualIP (`onat_vip`) or the host's address (`onat_masq`), for the
/// postrouting rules before the network's own masquerade.
pub fn outbound_nat_elems(ep: &EndpointRecord) -> Vec<FwElem> {
    let mut out = Vec::new();
    let Some(rule) = cnet_model::endpoint::outbound_nats_in(&ep.policies).next().and_then(|n| n.rule().ok()) else {
        return out;
    };
    let elem = |set, key: String, value: Option<String>| FwElem { set, key, value };
    for ip in ep.ips() {
        let v4 = ip.is_ipv4();
        let f = |a, b| if v4 { a } else { b };
        let same = |n: &&ipnet::IpNet| n.addr().is_ipv4() == v4;
        for n in rule.exceptions.iter().filter(same) {
            out.push(elem(f("onat_exc4", "onat_exc6"), format!("{ip} . {}", nft_prefix(n)), None));
        }
        if !rule.destinations.is_empty() {
            out.push(elem(f("onat_only4", "onat_only6"), ip.to_string(), None));
            for n in rule.destinations.iter().filter(same) {
                out.push(elem(f("onat_dst4", "onat_dst6"), format!("{ip} . {}", nft_prefix(n)), None));
            }
        }
        match rule.virtual_ip.filter(|vip| vip.is_ipv4() == v4) {
            Some(vip) => out.push(elem(f("onat_vip4", "onat_vip6"), ip.to_string(), Some(vip.to_string()))),
            None => out.push(elem(f("onat_masq4", "onat_masq6"), ip.to_string(), None)),
        }
    }
    out
}

/// A prefix as nft lists it: a single address without its length.
pub(crate) fn nft_prefix(n: &ipnet::IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}
