//! cnetd's DNS server: on every network with name resolution on
//! ([`names::enabled`]: NAT and Internal by default), it answers on the
//! network's gateway addresses, UDP and TCP port 53, in the host's
//! namespace — the names of the client's networks itself, everything else
//! forwarded upstream from NAT networks.
//!
//! Invariants:
//! - A network's sockets are open before the call that made (or
//!   restored) the network returns ([`Servers::sync`]); they are bound with
//!   `IP_FREEBIND`, so an IPv6 gateway still in duplicate address detection
//!   does not keep them from opening.
//! - Names come from an index of the store's objects, rebuilt when the
//!   store's generation moved ([`Servers::index`]): a name answers as soon
//!   as its endpoint's create returns, and is gone when its delete returns.
//! - Forwarding tries each upstream for at most [`PER_SERVER`] (well under
//!   a client's 5 s) and answers SERVFAIL when none answered: a lookup never
//!   hangs. Nothing is cached, so no answer outlives its TTL.
//! - Upstreams are the network's `Dns.ServerList`, else the host's
//!   `/etc/resolv.conf` (re-read when it changes); the server's own
//!   addresses are never upstreams (no loops).

pub mod answer;
pub mod names;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::service::Service;
use crate::state::Objects;
use answer::Reply;
use names::Index;

/// How long one upstream server may take.
pub const PER_SERVER: Duration = Duration::from_millis(1500);
/// The port the server answers on.
pub const PORT: u16 = 53;

struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Default)]
struct Cache {
    index: Arc<Index>,
    generation: Option<u64>,
}

/// The servers of every network with name resolution, started by the
/// daemon ([`Servers::start`]); inert in unit tests.
#[derive(Default)]
pub struct Servers {
    runtime: Mutex<Option<(tokio::runtime::Handle, Weak<Service>)>>,
    running: Mutex<HashMap<(Uuid, IpAddr), Running>>,
    cache: RwLock<Cache>,
    resolv: Mutex<Option<(SystemTime, Vec<IpAddr>)>>,
}

fn bound(ip: IpAddr, ty: Type) -> std::io::Result<Socket> {
    let domain = if ip.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let proto = if ty == Type::DGRAM { Protocol::UDP } else { Protocol::TCP };
    let s = Socket::new(domain, ty, Some(proto))?;
    s.set_reuse_address(true)?;
    if ip.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(ip, PORT).into())?;
    if ty == Type::STREAM {
        s.listen(128)?;
    }
    Ok(s)
}

impl Servers {
    /// Serves from now on, on `handle`, for `svc`; opens what the store holds.
    pub fn start(&self, svc: &Arc<Service>, handle: tokio::runtime::Handle) {
        *self.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some((handle, Arc::downgrade(svc)));
        self.sync(&svc.state.read());
    }

    /// Opens the sockets of the networks that serve names and have none
    /// yet; closes those of networks that are gone or stopped serving.
    pub fn sync(&self, o: &Objects) {
        let Some((handle, svc)) = self.runtime.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        let want: Vec<(Uuid, IpAddr)> = o
            .networks
            .values()
            .map(|s| &s.record)
            .filter(|n| names::enabled(n))
            .flat_map(|n| n.gateways().map(move |(_, gw)| (n.id, gw)))
            .collect();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|k, _| want.contains(k));
        for (net, ip) in want {
            if running.contains_key(&(net, ip)) {
                continue;
            }
            let _in_runtime = handle.enter();
            let udp = bound(ip, Type::DGRAM).and_then(|s| tokio::net::UdpSocket::from_std(s.into()));
            let tcp = bound(ip, Type::STREAM).and_then(|s| tokio::net::TcpListener::from_std(s.into()));
            match (udp, tcp) {
                (Ok(udp), Ok(tcp)) => {
                    let tasks = vec![
                        handle.spawn(serve_udp(svc.clone(), net, Arc::new(udp))),
                        handle.spawn(serve_tcp(svc.clone(), net, tcp)),
                    ];
                    running.insert((net, ip), Running { tasks });
                    tracing::debug!(network = %net, %ip, "DNS server listening");
                }
                (Err(e), _) | (_, Err(e)) => tracing::warn!(network = %net, %ip, "DNS server cannot listen: {e}"),
            }
        }
    }

    /// The names as of the store's latest commit.
    pub fn index(&self, svc: &Service) -> Arc<Index> {
        let generation = svc.state.generation();
        {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if c.generation == Some(generation) {
                return c.index.clone();
            }
        }
        let o = svc.state.read();
        // Read the generation again under the lock: the objects are as of it.
        let generation = svc.state.generation();
        let index = Arc::new(Index::build(&o));
        drop(o);
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        *c = Cache { index: index.clone(), generation: Some(generation) };
        index
    }

    /// The host's resolvers from `/etc/resolv.conf`, read again when it changed.
    fn host_resolvers(&self) -> Vec<IpAddr> {
        let path = std::path::Path::new("/etc/resolv.conf");
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut cached = self.resolv.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some((at, servers)), Some(m)) = (cached.as_ref(), mtime) {
            if *at == m {
                return servers.clone();
            }
        }
        let servers = parse_resolv_conf(&std::fs::read_to_string(path).unwrap_or_default());
        if let Some(m) = mtime {
            *cached = Some((m, servers.clone()));
        }
        servers
    }

    /// Where to forward a query for network `net`.
    fn upstreams(&self, ix: &Index, net: Uuid) -> Vec<SocketAddr> {
        let Some(n) = ix.networks.get(&net) else { return vec![] };
        let servers = if n.upstreams.is_empty() { self.host_resolvers() } else { n.upstreams.clone() };
        let own: Vec<IpAddr> = ix.networks.values().flat_map(|n| n.gateways.iter().copied()).collect();
        servers.into_iter().filter(|ip| !own.contains(ip)).map(|ip| SocketAddr::new(ip, 53)).collect()
    }
}

/// The `nameserver` lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|ip| ip.split('%').next()?.parse().ok())
        .collect()
}

/// A query ID for a forwarded query (not the client's, so answers cannot
/// be matched by guessing it).
fn fresh_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish() as u16
}

fn with_id(msg: &[u8], id: u16) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[..2].copy_from_slice(&id.to_be_bytes());
    m
}

/// The response code of a message (the low 4 bits of byte 3).
fn rcode(msg: &[u8]) -> u8 {
    msg.get(3).map(|b| b & 0x0f).unwrap_or(2)
}

/// Asks `upstreams` in turn (at most [`PER_SERVER`] each) over UDP or TCP;
/// the first answer that is not SERVFAIL or REFUSED, with the client's ID.
async fn forward(query: &[u8], upstreams: &[SocketAddr], tcp: bool) -> Option<Vec<u8>> {
    let client_id = [query[0], query[1]];
    for server in upstreams {
        let id = fresh_id();
        let ask = with_id(query, id);
        let attempt = async {
            if tcp {
                let mut s = tokio::net::TcpStream::connect(server).await.ok()?;
                s.write_all(&(ask.len() as u16).to_be_bytes()).await.ok()?;
                s.write_all(&ask).await.ok()?;
                let len = s.read_u16().await.ok()? as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await.ok()?;
                Some(buf)
            } else {
                let any: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
                let s = tokio::net::UdpSocket::bind(any).await.ok()?;
                s.connect(server).await.ok()?;
                s.send(&ask).await.ok()?;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = s.recv(&mut buf).await.ok()?;
                    if n >= 12 && buf[..2] == id.to_be_bytes() {
                        buf.truncate(n);
                        return Some(buf);
                    }
                }
            }
        };
        if let Ok(Some(mut answer)) = tokio::time::timeout(PER_SERVER, attempt).await {
            if answer.len() >= 12 && !matches!(rcode(&answer), 2 | 5) {
                answer[..2].copy_from_slice(&client_id);
                return Some(answer);
            }
        }
    }
    None
}

/// The upstreams' answer to `query` for network `net`, or SERVFAIL.
async fn forwarded(svc: &Weak<Service>, net: Uuid, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let upstreams = {
        let s = svc.upgrade()?;
        let ix = s.dns.index(&s);
        s.dns.upstreams(&ix, net)
    };
    match forward(query, &upstreams, tcp).await {
        Some(b) => Some(b),
        None => answer::servfail(query),
    }
}

/// What `query` from `client` gets from network `net`'s server at once.
fn local(svc: &Weak<Service>, net: Uuid, query: &[u8], client: IpAddr, udp: bool) -> Option<Reply> {
    let s = svc.upgrade()?;
    let ix = s.dns.index(&s);
    Some(answer::respond(query, client, net, &ix, udp))
}

async fn serve_udp(svc: Weak<Service>, net: Uuid, sock: Arc<tokio::net::UdpSocket>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        let query = buf[..n].to_vec();
        // Local names are answered here at once; a forward gets a task of
        // its own, so one slow upstream never holds up the others.
        let Some(reply) = local(&svc, net, &query, peer.ip(), true) else { return };
        match reply {
            Reply::Answer(b) => {
                let _ = sock.send_to(&b, peer).await;
            }
            Reply::Drop => {}
            Reply::Forward => {
                let (svc, sock) = (svc.clone(), sock.clone());
                tokio::spawn(async move {
                    if let Some(b) = forwarded(&svc, net, &query, false).await {
                        let _ = sock.send_to(&b, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(svc: Weak<Service>, net: Uuid, listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else { continue };
        let svc = svc.clone();
        tokio::spawn(async move {
            // Queries on one connection, one after another; idle for 10 s: closed.
            loop {
                let read = async {
                    let len = conn.read_u16().await.ok()? as usize;
                    let mut q = vec![0u8; len];
                    conn.read_exact(&mut q).await.ok()?;
                    Some(q)
                };
                let Ok(Some(q)) = tokio::time::timeout(Duration::from_secs(10), read).await else { return };
                let answer = match local(&svc, net, &q, peer.ip(), false) {
                    Some(Reply::Answer(b)) => b,
                    Some(Reply::Forward) => match forwarded(&svc, net, &q, true).await {
                        Some(b) => b,
                        None => return,
                    },
                    Some(Reply::Drop) | None => return,
                };
                let mut out = (answer.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&answer);
                if conn.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_are_read_and_the_rest_ignored() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver  2001:db8::53 \noptions ndots:2\n";
        let got: Vec<String> = parse_resolv_conf(text).iter().map(|i| i.to_string()).collect();
        assert_eq!(got, vec!["192.0.2.53", "fe80::1", "2001:db8::53"]);
    }
}
