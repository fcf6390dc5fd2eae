//! Docker's remote IPAM driver (`IpamDriver.*`), answered from cnet's
//! networks.
//!
//! Invariants:
//! - A PoolID names its pool completely (`CnetLocal/10.80.0.0/24`, with
//!   `|<sub-pool>` for `--ip-range`), so an ID Docker kept across restarts
//!   of dockerd or cnetd still means the same pool; nothing about a pool
//!   needs to be remembered.
//! - A pool never overlaps a cnet network's subnet nor a pool handed out
//!   and not yet released (held in memory: libnetwork asks again while
//!   holding a pool it found in use on the host, and expects another one).
//! - An address handed out is not handed out again until it is released:
//!   the addresses of the endpoints cnet has in the pool, the gateways of
//!   its networks there, and the reservations in memory of addresses that
//!   Docker asked for and has not yet given to `CreateEndpoint` (that takes
//!   milliseconds; a cnetd restart in between forgets them — the window
//!   `docs/docker.md` names) or that it holds for the gateway and
//!   `--aux-address` until the network is created.
//! - Errors are answered in the `Error` field; releases always succeed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{nullable, Plugin};

pub const LOCAL_SPACE: &str = "CnetLocal";
pub const GLOBAL_SPACE: &str = "CnetGlobal";
/// `Options.RequestAddressType` of the gateway's RequestAddress.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
/// Where pools come from when `docker network create` gives no `--subnet`.
pub const DEFAULT_V4: &str = "10.90.0.0/16";
pub const DEFAULT_V4_LEN: u8 = 24;
pub const DEFAULT_V6: &str = "fd00:90::/48";
pub const DEFAULT_V6_LEN: u8 = 64;

/// The pools and addresses handed out and not yet released or consumed.
#[derive(Debug, Default)]
pub struct Book {
    pools: BTreeSet<IpNet>,
    reserved: BTreeMap<IpNet, BTreeSet<IpAddr>>,
    /// The address handed out last per pool: the next goes on after it.
    cursor: BTreeMap<IpNet, IpAddr>,
}

impl Book {
    /// CreateEndpoint took these addresses: the endpoint holds them now.
    pub fn consumed(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        for ip in ips {
            for set in self.reserved.values_mut() {
                set.remove(&ip);
            }
        }
    }
}

/// A pool as its PoolID names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolId {
    pub pool: IpNet,
    /// Addresses come from this part of the pool (`--ip-range`).
    pub sub: Option<IpNet>,
}

impl PoolId {
    pub fn parse(s: &str) -> Result<PoolId, String> {
        let bad = || {
            format!(
                "pool ID {s:?} is not one of cnet's (CnetLocal/<cidr>): was the network made by another IPAM driver?"
            )
        };
        let rest = s.strip_prefix("CnetLocal/").or_else(|| s.strip_prefix("CnetGlobal/")).ok_or_else(bad)?;
        let (pool, sub) = match rest.split_once('|') {
            Some((p, s)) => (p, Some(s.parse().map_err(|_| bad())?)),
            None => (rest, None),
        };
        Ok(PoolId { pool: pool.parse().map_err(|_| bad())?, sub })
    }
    pub fn text(&self) -> String {
        match self.sub {
            Some(sub) => format!("{LOCAL_SPACE}/{}|{sub}", self.pool),
            None => format!("{LOCAL_SPACE}/{}", self.pool),
        }
    }
    /// Where endpoint addresses come from.
    pub fn range(&self) -> IpNet {
        self.sub.unwrap_or(self.pool)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolRequest {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first block of the default range that overlaps nothing in `taken`.
pub fn choose_pool(v6: bool, taken: &[IpNet]) -> Option<IpNet> {
    let (range, len): (IpNet, u8) =
        if v6 { (DEFAULT_V6.parse().ok()?, DEFAULT_V6_LEN) } else { (DEFAULT_V4.parse().ok()?, DEFAULT_V4_LEN) };
    // A /48 holds 65,536 /64s: the first 4,096 are plenty to look at.
    range.subnets(len).ok()?.take(4096).find(|p| !taken.iter().any(|t| overlaps(p, t)))
}

fn offset(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn at(net: &IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(_) => IpAddr::V4((n as u32).into()),
        IpNet::V6(_) => IpAddr::V6(n.into()),
    }
}

/// Whether `ip` may be an endpoint's in `pool`: not the network address
/// (nor, in IPv4, the broadcast address).
pub fn assignable(pool: &IpNet, ip: IpAddr) -> bool {
    pool.contains(&ip)
        && ip != pool.network()
        && !(pool.addr().is_ipv4() && pool.prefix_len() < 31 && ip == pool.broadcast())
}

/// A free address of `range` (inside `pool`), onward from `after` and
/// wrapping around; at most 65,536 are looked at.
pub fn choose_address(pool: &IpNet, range: &IpNet, used: &HashSet<IpAddr>, after: Option<IpAddr>) -> Option<IpAddr> {
    let (first, last) = (offset(range.network()), offset(range.broadcast()));
    let size = last - first + 1;
    let start = after.filter(|a| range.contains(a)).map(|a| offset(a) - first + 1).unwrap_or(0);
    (0..size.min(65536))
        .map(|i| at(range, first + (start + i) % size))
        .find(|ip| assignable(pool, *ip) && !used.contains(ip))
}

impl Plugin {
    pub(super) fn request_pool(&self, r: PoolRequest) -> Result<Value, String> {
        if r.pool.is_empty() && !r.sub_pool.is_empty() {
            return Err("a sub-pool (--ip-range) needs a pool (--subnet)".into());
        }
        let networks = self.svc.list_networks(&Default::default()).map_err(|e| e.message)?;
        let mut book = self.book();
        let id = if r.pool.is_empty() {
            let mut taken: Vec<IpNet> = book.pools.iter().copied().collect();
            taken.extend(networks.iter().flat_map(|n| n.subnets.iter().map(|s| s.ip_address_prefix)));
            let pool = choose_pool(r.v6, &taken).ok_or_else(|| {
                format!(
                    "no free pool left in cnet's default range {}: give the network a --subnet",
                    if r.v6 { DEFAULT_V6 } else { DEFAULT_V4 }
                )
            })?;
            PoolId { pool, sub: None }
        } else {
            let pool: IpNet = r.pool.parse().map_err(|_| format!("pool {:?} is not a CIDR prefix", r.pool))?;
            if pool.trunc() != pool {
                return Err(format!("pool {pool} has host bits set: use {}", pool.trunc()));
            }
            if pool.addr().is_ipv6() != r.v6 {
                return Err(format!("pool {pool} is not of the address family asked for"));
            }
            let sub = match r.sub_pool.as_str() {
                "" => None,
                s => {
                    let sub: IpNet = s.parse().map_err(|_| format!("sub-pool {s:?} is not a CIDR prefix"))?;
                    if !pool.contains(&sub) {
                        return Err(format!("sub-pool (--ip-range) {sub} is not inside pool {pool}"));
                    }
                    Some(sub)
                }
            };
            for n in &networks {
                if let Some(s) = n.subnets.iter().find(|s| overlaps(&s.ip_address_prefix, &pool)) {
                    return Err(format!(
                        "pool {pool} overlaps subnet {} of cnet network {}: pick another --subnet",
                        s.ip_address_prefix, n.name
                    ));
                }
            }
            if let Some(p) = book.pools.iter().find(|p| overlaps(p, &pool)) {
                return Err(format!("pool {pool} overlaps pool {p}, which is being set up: pick another --subnet"));
            }
            PoolId { pool, sub }
        };
        book.pools.insert(id.pool);
        Ok(json!({"PoolID": id.text(), "Pool": id.pool.to_string(), "Data": {}}))
    }

    pub(super) fn release_pool(&self, pool_id: &str) -> Value {
        if let Ok(id) = PoolId::parse(pool_id) {
            let mut book = self.book();
            book.pools.remove(&id.pool);
            book.reserved.remove(&id.pool);
            book.cursor.remove(&id.pool);
        }
        json!({})
    }

    pub(super) fn request_address(&self, r: AddressRequest) -> Result<Value, String> {
        let id = PoolId::parse(&r.pool_id)?;
        let pool = id.pool;
        let asked = match r.address.as_str() {
            "" => None,
            a => Some(a.parse::<IpAddr>().map_err(|_| format!("address {a:?} is not an IP address"))?),
        };
        let answer = |ip: IpAddr| Ok(json!({"Address": format!("{ip}/{}", pool.prefix_len()), "Data": {}}));
        if r.options.get("RequestAddressType").map(String::as_str) == Some(GATEWAY_REQUEST) {
            let gw = asked.unwrap_or_else(|| cnet_model::alloc::nth_host(&pool, 1));
            if !assignable(&pool, gw) {
                return Err(format!("gateway {gw} is not a host address of pool {pool}"));
            }
            self.book().reserved.entry(pool).or_default().insert(gw);
            return answer(gw);
        }
        let mut used: HashSet<IpAddr> = HashSet::new();
        for n in self.svc.list_networks(&Default::default()).map_err(|e| e.message)? {
            used.extend(n.gateways().map(|(_, gw)| gw).filter(|gw| pool.contains(gw)));
        }
        let eps = self.svc.list_endpoints(&Default::default()).map_err(|e| e.message)?;
        used.extend(eps.iter().flat_map(|e| e.ips()).filter(|ip| pool.contains(ip)));
        let mut book = self.book();
        used.extend(book.reserved.get(&pool).into_iter().flatten().copied());
        let ip = match asked {
            Some(ip) if !assignable(&pool, ip) => {
                return Err(format!("address {ip} is not a host address of pool {pool}"))
            }
            Some(ip) if used.contains(&ip) => return Err(format!("address {ip} is in use: pick another --ip")),
            Some(ip) => ip,
            None => choose_address(&pool, &id.range(), &used, book.cursor.get(&pool).copied())
                .ok_or_else(|| format!("no free address left in {}", id.range()))?,
        };
        book.reserved.entry(pool).or_default().insert(ip);
        if asked.is_none() {
            book.cursor.insert(pool, ip);
        }
        answer(ip)
    }

    pub(super) fn release_address(&self, r: AddressRequest) -> Value {
        if let (Ok(id), Ok(ip)) = (PoolId::parse(&r.pool_id), r.address.parse::<IpAddr>()) {
            if let Some(set) = self.book().reserved.get_mut(&id.pool) {
                set.remove(&ip);
            }
        }
        json!({})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn pool_ids_name_their_pool_and_parse_back() {
        let id = PoolId { pool: net("10.80.0.0/24"), sub: Some(net("10.80.0.128/25")) };
        assert_eq!(id.text(), "CnetLocal/10.80.0.0/24|10.80.0.128/25");
        assert_eq!(PoolId::parse(&id.text()).unwrap(), id);
        assert_eq!(PoolId::parse("CnetLocal/fd00:90::/64").unwrap().pool, net("fd00:90::/64"));
        assert!(PoolId::parse("default/10.0.0.0/8").unwrap_err().contains("not one of cnet's"));
    }

    #[test]
    fn a_chosen_pool_overlaps_nothing_taken() {
        assert_eq!(choose_pool(false, &[]), Some(net("10.90.0.0/24")));
        let taken = [net("10.90.0.0/24"), net("10.90.1.0/25"), net("10.90.0.0/30")];
        assert_eq!(choose_pool(false, &taken), Some(net("10.90.2.0/24")));
        assert_eq!(choose_pool(false, &[net("10.0.0.0/8")]), None, "the whole range is taken");
        assert_eq!(choose_pool(true, &[net("fd00:90::/64")]), Some(net("fd00:90:0:1::/64")));
    }

    #[test]
    fn addresses_skip_the_used_the_network_and_the_broadcast_and_go_onward() {
        let pool = net("10.80.0.0/29");
        let used: HashSet<IpAddr> = ["10.80.0.1".parse().unwrap()].into();
        assert_eq!(choose_address(&pool, &pool, &used, None), Some("10.80.0.2".parse().unwrap()));
        let after = Some("10.80.0.5".parse().unwrap());
        assert_eq!(choose_address(&pool, &pool, &used, after), Some("10.80.0.6".parse().unwrap()));
        let after = Some("10.80.0.6".parse().unwrap());
        assert_eq!(
            choose_address(&pool, &pool, &used, after),
            Some("10.80.0.2".parse().unwrap()),
            "wraps, skips .7 and .0"
        );
        let full: HashSet<IpAddr> = (1..7).map(|i| format!("10.80.0.{i}").parse().unwrap()).collect();
        assert_eq!(choose_address(&pool, &pool, &full, None), None);
        let range = net("10.80.0.4/30");
        assert_eq!(
            choose_address(&pool, &range, &used, None),
            Some("10.80.0.4".parse().unwrap()),
            "inside the sub-pool"
        );
        let v6 = net("fd00:90::/64");
        assert_eq!(choose_address(&v6, &v6, &HashSet::new(), None), Some("fd00:90::1".parse().unwrap()));
    }

    #[test]
    fn requests_with_null_maps_parse() {
        let r: AddressRequest =
            serde_json::from_str(r#"{"PoolID":"CnetLocal/10.80.0.0/24","Address":"","Options":null}"#).unwrap();
        assert!(r.options.is_empty());
        let r: PoolRequest = serde_json::from_str(r#"{"AddressSpace":"CnetLocal","Pool":"","V6":true}"#).unwrap();
        assert!(r.v6 && r.pool.is_empty());
    }
}
