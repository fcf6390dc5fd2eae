//! What the DNS server knows: per network with name resolution on, the
//! names of its endpoints (their `Name` and aliases, with and without the
//! network's domain) and their addresses, and which networks each client
//! address may resolve.
//!
//! Invariants:
//! - The index is a pure function of the store's objects ([`Index::build`]):
//!   rebuilt whenever the store's generation moves, so a name answers as
//!   soon as the call that made its endpoint returns, and is gone as soon as
//!   the delete returns.
//! - Names are kept lowercased, without the trailing dot; only names that
//!   are valid host names (labels of letters, digits, `-` and `_`, at most
//!   63 bytes each, 253 in all) are served.
//! - A client resolves the names of the networks its own namespace is
//!   attached to, and nothing else.

use std::collections::HashMap;
use std::net::IpAddr;

use uuid::Uuid;

use cnet_model::NetworkType;

use crate::state::{NetworkRecord, Objects};

/// `Flags` bit of a network: name resolution on (HCN `EnableDns`).
pub const ENABLE_DNS: u32 = 1;

/// The TTL of container names: short, since containers come and go.
pub const NAME_TTL: u32 = 5;

/// Whether network `net` has name resolution: its `AutomaticDNS` policy
/// says so, else the `EnableDns` flag, else on for NAT and Internal.
pub fn enabled(net: &NetworkRecord) -> bool {
    match net.automatic_dns {
        Some(on) => on,
        None => net.flags & ENABLE_DNS != 0 || matches!(net.kind, NetworkType::Nat | NetworkType::Internal),
    }
}

/// Whether names not on the network are forwarded upstream: only from NAT
/// networks (Internal and Private ones have no way out).
pub fn forwards(net: &NetworkRecord) -> bool {
    net.kind == NetworkType::Nat
}

/// Whether `name` (lowercase, no trailing dot) is a valid host name.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
        })
}

/// One served network.
#[derive(Clone, Debug)]
pub struct Served {
    pub id: Uuid,
    pub name: String,
    /// The host's addresses on it: where the server listens.
    pub gateways: Vec<IpAddr>,
    pub forwards: bool,
    /// Upstream servers from the network's `Dns.ServerList` (empty: the host's resolv.conf).
    pub upstreams: Vec<IpAddr>,
    pub domain: Option<String>,
    pub subnets: Vec<ipnet::IpNet>,
}

#[derive(Debug, Default)]
pub struct Index {
    pub networks: HashMap<Uuid, Served>,
    /// Client address → the served networks it may resolve.
    clients: HashMap<IpAddr, Vec<Uuid>>,
    /// (network, name) → addresses.
    names: HashMap<(Uuid, String), Vec<IpAddr>>,
    /// (network, address) → its first name, with the domain when there is one.
    ptr: HashMap<(Uuid, IpAddr), String>,
}

/// What a name looks up to.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A name of the client's networks, with all its addresses.
    Addresses(Vec<IpAddr>),
    /// Not a name of the client's networks.
    Unknown,
}

impl Index {
    pub fn build(o: &Objects) -> Index {
        let mut ix = Index::default();
        for s in o.networks.values().filter(|s| s.intent.is_none() && enabled(&s.record)) {
            let n = &s.record;
            let domain =
                n.dns.as_ref().map(|d| d.domain.trim_end_matches('.').to_ascii_lowercase()).filter(|d| is_host_name(d));
            ix.networks.insert(
                n.id,
                Served {
                    id: n.id,
                    name: n.name.to_string(),
                    gateways: n.gateways().map(|(_, gw)| gw).collect(),
                    forwards: forwards(n),
                    upstreams: n.dns.as_ref().map(|d| d.server_list.clone()).unwrap_or_default(),
                    domain,
                    subnets: n.subnets.iter().map(|s| s.ip_address_prefix).collect(),
                },
            );
        }
        // A namespace's served networks: every client address in it resolves all of them.
        let mut per_ns: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for e in o.endpoints.values().map(|s| &s.record) {
            if let (Some(ns), true) = (e.namespace, ix.networks.contains_key(&e.network)) {
                let nets = per_ns.entry(ns).or_default();
                if !nets.contains(&e.network) {
                    nets.push(e.network);
                }
            }
        }
        for s in o.endpoints.values() {
            let e = &s.record;
            let Some(net) = ix.networks.get(&e.network) else { continue };
            if let Some(nets) = e.namespace.and_then(|ns| per_ns.get(&ns)) {
                for ip in e.ips() {
                    ix.clients.insert(ip, nets.clone());
                }
            }
            let mut names: Vec<String> = e.name.iter().map(|n| n.as_str().to_ascii_lowercase()).collect();
            names.extend(e.aliases.iter().map(|a| a.trim_end_matches('.').to_ascii_lowercase()));
            names.retain(|n| is_host_name(n));
            let qualified: Vec<String> = match &net.domain {
                Some(d) => names.iter().map(|n| format!("{n}.{d}")).collect(),
                None => vec![],
            };
            for (i, name) in names.iter().chain(qualified.iter()).enumerate() {
                let addrs = ix.names.entry((e.network, name.clone())).or_default();
                for ip in e.ips() {
                    if !addrs.contains(&ip) {
                        addrs.push(ip);
                    }
                }
                if i == 0 {
                    let first = qualified.first().unwrap_or(name).clone();
                    for ip in e.ips() {
                        ix.ptr.entry((e.network, ip)).or_insert_with(|| first.clone());
                    }
                }
            }
        }
        ix
    }

    /// The served networks client `ip` may resolve.
    pub fn networks_of(&self, ip: IpAddr) -> &[Uuid] {
        self.clients.get(&ip).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// `name` (lowercase, no trailing dot) as seen from `nets`.
    pub fn lookup(&self, nets: &[Uuid], name: &str) -> Found {
        let mut out: Vec<IpAddr> = Vec::new();
        for n in nets {
            for ip in self.names.get(&(*n, name.to_string())).into_iter().flatten() {
                if !out.contains(ip) {
                    out.push(*ip);
                }
            }
        }
        if out.is_empty() {
            Found::Unknown
        } else {
            Found::Addresses(out)
        }
    }

    /// The name of address `ip` on one of `nets`.
    pub fn reverse(&self, nets: &[Uuid], ip: IpAddr) -> Option<&str> {
        nets.iter().find_map(|n| self.ptr.get(&(*n, ip)).map(|s| s.as_str()))
    }

    /// Whether `ip` is in a subnet of one of `nets` (its reverse name is ours to answer).
    pub fn in_served_subnet(&self, nets: &[Uuid], ip: IpAddr) -> bool {
        nets.iter().filter_map(|n| self.networks.get(n)).any(|n| n.subnets.iter().any(|s| s.contains(&ip)))
    }

    /// A small index for tests and the fuzz target: network
    /// `Uuid::from_u128(1)` (10.0.0.0/24, fd00::/64, domain `cnet.test`,
    /// forwarding) with client 10.0.0.2 and the names `web` (10.0.0.2,
    /// fd00::2) and `db` (10.0.0.3, alias `store`).
    pub fn sample() -> Index {
        let net = Uuid::from_u128(1);
        let mut ix = Index::default();
        ix.networks.insert(
            net,
            Served {
                id: net,
                name: "sample".into(),
                gateways: vec!["10.0.0.1".parse().unwrap()],
                forwards: true,
                upstreams: vec![],
                domain: Some("cnet.test".into()),
                subnets: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            },
        );
        ix.clients.insert("10.0.0.2".parse().unwrap(), vec![net]);
        let web: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let db: Vec<IpAddr> = vec!["10.0.0.3".parse().unwrap()];
        for (names, addrs) in
            [(&["web", "web.cnet.test"][..], &web), (&["db", "store", "db.cnet.test", "store.cnet.test"][..], &db)]
        {
            for n in names {
                ix.names.insert((net, n.to_string()), addrs.clone());
            }
        }
        for ip in &web {
            ix.ptr.insert((net, *ip), "web.cnet.test".into());
        }
        ix.ptr.insert((net, db[0]), "db.cnet.test".into());
        ix
    }

    /// Every name network `net` serves, with its addresses (for `cnet dns`).
    pub fn names_of(&self, net: Uuid) -> Vec<(String, Vec<IpAddr>)> {
        let mut out: Vec<(String, Vec<IpAddr>)> =
            self.names.iter().filter(|((n, _), _)| *n == net).map(|((_, name), a)| (name.clone(), a.clone())).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_letters_digits_dashes_and_underscores_in_short_labels() {
        assert!(is_host_name("web"));
        assert!(is_host_name("web-1.dns.podman"));
        assert!(is_host_name("_svc"));
        assert!(!is_host_name(""));
        assert!(!is_host_name("a..b"));
        assert!(!is_host_name("-web"));
        assert!(!is_host_name("web server"));
        assert!(!is_host_name(&"a".repeat(64)));
        assert!(!is_host_name(&["a"; 130].join(".")));
    }
}
