//! Name resolution in the service: the resolver configuration endpoints
//! get, `resolv.conf` of the namespaces cnetd made, the names a network
//! serves.
//!
//! Invariants:
//! - On a network with name resolution, an endpoint that asks for no `Dns`
//!   gets the network's gateways as its name servers and the network's
//!   domain as its search domain; the network's own `Dns.ServerList` is
//!   then where cnetd forwards to, not what endpoints use.
//! - A namespace cnetd made has `/etc/netns/<name>/resolv.conf` (which
//!   `ip netns exec` bind-mounts over `/etc/resolv.conf`) with the name
//!   servers of its endpoints, written after each attach and detach, and
//!   removed with its last endpoint.

use std::net::IpAddr;
use std::path::PathBuf;

use cnet_model::{Dns, ErrorCode, NetworkType};
use uuid::Uuid;

use super::Service;
use crate::dns::names;
use crate::error::{Result, ServiceError};
use crate::state::{NetworkRecord, Objects};

/// The resolver configuration of an endpoint of `net` that asked for none;
/// `None` when the network serves no names (its `Dns` is then used as is).
pub(super) fn endpoint_dns(net: &NetworkRecord) -> Option<Dns> {
    if !names::enabled(net) {
        return None;
    }
    let servers: Vec<IpAddr> = net.gateways().map(|(_, gw)| gw).collect();
    let d = net.dns.clone().unwrap_or_default();
    let mut search = d.search.clone();
    if !d.domain.is_empty() && !search.contains(&d.domain) {
        search.insert(0, d.domain.clone());
    }
    Some(Dns { domain: d.domain, search, server_list: servers, options: d.options })
}

/// A network request that asks for name resolution where cnetd cannot serve it.
pub(super) fn check_dns_request(net: &cnet_model::Network) -> Result<()> {
    let asked = net.automatic_dns() == Some(true) || net.flags & names::ENABLE_DNS != 0;
    if asked && !matches!(net.r#type, NetworkType::Nat | NetworkType::Internal) {
        return Err(ServiceError::unsupported(format!(
            "name resolution (AutomaticDNS, EnableDns) is served from the host's address on NAT and Internal networks; {} is {}: remove it",
            net.name, net.r#type
        )));
    }
    Ok(())
}

/// `resolv.conf` for a namespace whose endpoints have `dns`.
fn resolv_conf(dns: &[&Dns]) -> String {
    let mut servers: Vec<IpAddr> = Vec::new();
    let mut search: Vec<&str> = Vec::new();
    let mut options: Vec<&str> = Vec::new();
    for d in dns {
        for s in &d.server_list {
            if !servers.contains(s) {
                servers.push(*s);
            }
        }
        for s in &d.search {
            if !search.contains(&s.as_str()) {
                search.push(s);
            }
        }
        for o in &d.options {
            if !options.contains(&o.as_str()) {
                options.push(o);
            }
        }
    }
    let mut out = String::from("# Written by cnetd for this namespace's endpoints.\n");
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

impl Service {
    /// Opens and closes DNS servers as the networks now are.
    pub(crate) fn sync_dns(&self) {
        self.dns.sync(&self.state.read());
    }

    /// Writes (or removes) `/etc/netns/<name>/resolv.conf` of namespace `ns`
    /// when cnetd made it. Failures are logged: resolution is not worth an
    /// attach.
    pub(crate) fn write_resolv_conf(&self, ns: Uuid) {
        let (name, text) = {
            let o: std::sync::MutexGuard<'_, Objects> = self.state.read();
            let Some(rec) = o.namespaces.get(&ns).map(|s| &s.record) else { return };
            let Some(name) = rec.name.as_ref().filter(|_| rec.managed) else { return };
            let dns: Vec<&Dns> = o.endpoints_in(ns).filter_map(|e| e.dns.as_ref()).collect();
            (name.to_string(), (!dns.is_empty()).then(|| resolv_conf(&dns)))
        };
        let dir = PathBuf::from("/etc/netns").join(&name);
        let result = match text {
            Some(text) => std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join("resolv.conf"), text)),
            None => match std::fs::remove_file(dir.join("resolv.conf")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => {
                    let _ = std::fs::remove_dir(&dir);
                    Ok(())
                }
            },
        };
        if let Err(e) = result {
            tracing::warn!(namespace = %name, "writing {}/resolv.conf: {e}", dir.display());
        }
    }

    /// The names network `key` serves, with their addresses.
    pub fn dns_names(&self, key: &str) -> Result<Vec<cnet_model::DnsName>> {
        let net = self.get_network(key)?;
        if !names::enabled(&net) {
            return Err(ServiceError::new(
                ErrorCode::InvalidParameter,
                format!("network {} serves no names: its AutomaticDNS is off", net.name),
            ));
        }
        let ix = names::Index::build(&self.state.read());
        Ok(ix.names_of(net.id).into_iter().map(|(name, addresses)| cnet_model::DnsName { name, addresses }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_merges_the_endpoints_servers_search_domains_and_options() {
        let a = Dns {
            domain: "web.example".into(),
            search: vec!["web.example".into()],
            server_list: vec!["10.79.0.1".parse().unwrap(), "fd00:79::1".parse().unwrap()],
            options: vec!["ndots:1".into()],
        };
        let b = Dns { server_list: vec!["10.80.0.1".parse().unwrap(), "10.79.0.1".parse().unwrap()], ..a.clone() };
        let text = resolv_conf(&[&a, &b]);
        assert_eq!(
            text,
            "# Written by cnetd for this namespace's endpoints.\nsearch web.example\nnameserver 10.79.0.1\nnameserver fd00:79::1\nnameserver 10.80.0.1\noptions ndots:1\n"
        );
    }
}
