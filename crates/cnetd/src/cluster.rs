//! cnetd as a member of a cluster (`--etcd`): it registers this host in etcd
//! under a lease it keeps alive, and follows every host's registration and
//! every overlay network's blocks into a [`View`] (`cnet_cluster`).
//!
//! Invariants:
//! - The host's ID is made once and kept in the state directory
//!   (`cluster-host-id`): a restarted cnetd is the same host, with the same
//!   VTEP MAC (derived from the ID).
//! - The lease of the last registration is kept (`cluster-lease`) and
//!   revoked at the next start, so a restarted host rejoins at once instead
//!   of being refused until its old registration expires.
//! - With etcd unreachable the membership is `Degraded` with the reason;
//!   nothing local is torn down (the data path keeps working); the agent
//!   retries (every second) and rejoins, then reads everything again.
//! - A host whose registration is gone (its lease ended) is out of the view
//!   as soon as etcd's delete is seen.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use cnet_cluster::view::View;
use cnet_cluster::{Cluster, Host};
use cnet_model::cluster::{ClusterBlock, ClusterHost, ClusterStatus};
use ipnet::IpNet;
use uuid::Uuid;

/// How cnetd joins its cluster.
#[derive(Clone, Debug)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub user: Option<(String, String)>,
    /// TLS to etcd: its CA, and this host's client certificate.
    pub tls: Option<cnet_cluster::TlsOptions>,
    /// The registration's lease, in seconds.
    pub ttl: i64,
    /// This host's underlay address; by default the source address of the
    /// route to the first etcd endpoint.
    pub provider_address: Option<IpAddr>,
    /// How long the blocks of a host whose lease ended stay its own before
    /// any host reclaims them (a host cut off from etcd for longer than its
    /// TTL plus this must not keep using its addresses).
    pub block_grace: Duration,
}

#[derive(Default)]
struct Status {
    joined: bool,
    /// Why keeping the registration or following the cluster fails now.
    keeper_error: Option<String>,
    follower_error: Option<String>,
    lease: Option<i64>,
    view: View,
    /// Blocks this host claimed that the view does not show yet, and blocks
    /// it gave back that the view still shows: the follower's copy lags
    /// behind this host's own transactions.
    claimed: BTreeSet<(Uuid, IpNet)>,
    released: BTreeSet<(Uuid, IpNet)>,
}

impl Status {
    /// The view changed: what it now shows of this host's own claims and
    /// releases needs no correction any more.
    fn prune(&mut self, me: Uuid) {
        let holder = |v: &View, net: &Uuid, b: &IpNet| v.blocks.get(net).and_then(|m| m.get(b)).copied();
        let view = &self.view;
        self.claimed.retain(|(n, b)| holder(view, n, b) != Some(me));
        self.released.retain(|(n, b)| holder(view, n, b) == Some(me));
    }
}

/// The size of the blocks a host claims of an overlay subnet: 64 addresses
/// (/26, /122), or the whole subnet when it is smaller.
pub fn block_len(subnet: IpNet) -> u8 {
    let len = if subnet.addr().is_ipv4() { 26 } else { 122 };
    len.max(subnet.prefix_len())
}

/// What the agent calls whenever the view changes (cnetd makes the
/// cluster's networks its own and programs its remote hosts from the
/// *latest* view, [`Membership::view`]: so changes handled late or twice
/// are harmless; [`crate::service::Service::cluster_changed`]).
pub type OnChange = Box<dyn Fn() + Send + Sync>;

/// What the service needs of this host's membership: a trait, so that the
/// Overlay lifecycles run against a fake in unit tests (no etcd).
pub trait Member: Send + Sync {
    /// This host as a tunnel end.
    fn host(&self) -> &Host;
    /// The latest view of the cluster.
    fn view(&self) -> View;
    /// The membership as `GET /cluster` answers it.
    fn status(&self) -> ClusterStatus;
    /// The blocks of network `net` this host holds.
    fn own_blocks(&self, net: Uuid) -> Vec<IpNet>;
    /// Claims a free block of `subnet` of network `net` (never a block twice).
    fn claim_block(&self, net: Uuid, subnet: IpNet) -> Result<IpNet, String>;
    /// Gives an empty block back: at once no longer this host's to allocate
    /// from; in etcd in the background.
    fn release_block(&self, net: Uuid, block: IpNet);
    /// Publishes a cluster-wide network (its VNI checked unique).
    fn create_network(&self, id: Uuid, vni: u32, definition: &serde_json::Value) -> Result<(), String>;
    /// Removes a cluster-wide network; refused while a host holds its blocks.
    fn delete_network(&self, id: Uuid, vni: u32) -> Result<bool, String>;
}

/// This host's membership, shared by the agent's tasks and the API.
pub struct Membership {
    host: Host,
    ttl: i64,
    cfg: Config,
    runtime: tokio::runtime::Handle,
    status: RwLock<Status>,
    /// One connection for the API's etcd operations (claims, releases,
    /// networks), made on first use and dropped after a failure: a claim
    /// pays no TCP and HTTP/2 handshake (nor a lost SYN's 1 s retransmit).
    shared: tokio::sync::Mutex<Option<Cluster>>,
    /// Itself, for the background tasks its methods start.
    this: std::sync::OnceLock<std::sync::Weak<Membership>>,
    /// Set once by the daemon.
    pub on_change: std::sync::OnceLock<OnChange>,
}

impl Membership {
    /// The membership as `GET /cluster` answers it.
    pub fn status(&self) -> ClusterStatus {
        let s = self.status.read().unwrap_or_else(|e| e.into_inner());
        let (health, reason) = match (&s.keeper_error, &s.follower_error, s.joined) {
            (Some(e), _, _) | (None, Some(e), _) => ("Degraded", e.clone()),
            (None, None, false) => ("Joining", String::new()),
            (None, None, true) => ("Healthy", String::new()),
        };
        ClusterStatus {
            enabled: true,
            health: health.into(),
            reason,
            host: Some(wire_host(&self.host)),
            lease: s.lease,
            lease_ttl: Some(self.ttl),
            hosts: s.view.hosts.values().map(wire_host).collect(),
            blocks: s
                .view
                .blocks
                .iter()
                .flat_map(|(net, blocks)| {
                    blocks.iter().map(|(b, h)| ClusterBlock { network: *net, block: b.to_string(), host: *h })
                })
                .collect(),
            revision: s.view.revision,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.write().unwrap_or_else(|e| e.into_inner());
        let before = (s.keeper_error.clone(), s.follower_error.clone());
        f(&mut s);
        // Every change of health is logged once.
        for (was, now) in [(&before.0, &s.keeper_error), (&before.1, &s.follower_error)] {
            match (was, now) {
                (_, Some(e)) if was.as_ref() != Some(e) => tracing::warn!("cluster degraded: {e}"),
                (Some(_), None) => tracing::info!("cluster healthy again"),
                _ => {}
            }
        }
    }

    fn changed(&self) {
        if let Some(f) = self.on_change.get() {
            f();
        }
    }

    /// The latest view of the cluster.
    pub fn view(&self) -> View {
        self.status.read().unwrap_or_else(|e| e.into_inner()).view.clone()
    }

    /// This host as a tunnel end.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The shared connection (made now if there is none).
    async fn shared(&self) -> cnet_cluster::Result<Cluster> {
        let mut g = self.shared.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(self, &self.cfg).await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Runs one etcd operation on the shared connection, at most 5 s: an
    /// API call never hangs on an unreachable etcd. A failure drops the
    /// connection (the next operation makes a new one).
    async fn run<T, F>(&self, op: impl FnOnce(Cluster) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = cnet_cluster::Result<T>>,
    {
        let attempt = async { op(self.shared().await?).await };
        let result = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("etcd did not answer within 5 s".to_string()),
        };
        if result.is_err() {
            *self.shared.lock().await = None;
        }
        result
    }

    /// [`Membership::run`] from a blocking thread (the service's).
    fn block<T, F>(&self, op: impl FnOnce(Cluster) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = cnet_cluster::Result<T>>,
    {
        self.runtime.block_on(self.run(op))
    }

    /// The blocks of network `net` this host holds.
    pub fn own_blocks(&self, net: Uuid) -> Vec<IpNet> {
        let s = self.status.read().unwrap_or_else(|e| e.into_inner());
        let me = self.host.id;
        let mut out: BTreeSet<IpNet> =
            s.view.blocks.get(&net).into_iter().flatten().filter(|(_, h)| **h == me).map(|(b, _)| *b).collect();
        out.extend(s.claimed.iter().filter(|(n, _)| *n == net).map(|(_, b)| *b));
        out.retain(|b| !s.released.contains(&(net, *b)));
        out.into_iter().collect()
    }

    /// Claims a free block of `subnet` of network `net` for this host (one
    /// etcd transaction: never a block twice); it is this host's at once.
    pub fn claim_block(&self, net: Uuid, subnet: IpNet) -> Result<IpNet, String> {
        let lease = self.status.read().unwrap_or_else(|e| e.into_inner()).lease;
        let lease =
            lease.ok_or("this host is not registered in the cluster (yet): retry when `cnet cluster` says Healthy")?;
        let block = self.block(|mut c| async move {
            c.adopt_lease(lease);
            c.claim(net, subnet, block_len(subnet)).await
        })?;
        self.update(|s| {
            s.released.remove(&(net, block));
            s.claimed.insert((net, block));
        });
        tracing::info!(network = %net, %block, "block claimed");
        Ok(block)
    }

    /// Gives `block` of network `net` back (the caller knows it is empty):
    /// it is no longer this host's to allocate from at once, and goes from
    /// etcd in the background; if etcd refuses or cannot be reached, it is
    /// this host's again (a later release retries).
    pub fn release_block(self: &Arc<Self>, net: Uuid, block: IpNet) {
        self.update(|s| {
            s.claimed.remove(&(net, block));
            s.released.insert((net, block));
        });
        let m = self.clone();
        self.runtime.spawn(async move {
            match m.run(|mut c| async move { c.release(net, block).await }).await {
                Ok(_) => tracing::info!(network = %net, %block, "empty block given back"),
                Err(why) => {
                    tracing::warn!(network = %net, %block, "giving an empty block back: {why}; keeping it");
                    m.update(|s| {
                        s.released.remove(&(net, block));
                    });
                }
            }
        });
    }

    /// Publishes a cluster-wide network (its VNI checked unique).
    pub fn create_network(&self, id: Uuid, vni: u32, definition: &serde_json::Value) -> Result<(), String> {
        self.block(|mut c| async move { c.create_network(id, vni, definition).await })
    }

    /// Removes a cluster-wide network; refused while a host holds its blocks.
    pub fn delete_network(&self, id: Uuid, vni: u32) -> Result<bool, String> {
        self.block(|mut c| async move { c.delete_network(id, vni).await })
    }
}

impl Member for Membership {
    fn host(&self) -> &Host {
        Membership::host(self)
    }
    fn view(&self) -> View {
        Membership::view(self)
    }
    fn status(&self) -> ClusterStatus {
        Membership::status(self)
    }
    fn own_blocks(&self, net: Uuid) -> Vec<IpNet> {
        Membership::own_blocks(self, net)
    }
    fn claim_block(&self, net: Uuid, subnet: IpNet) -> Result<IpNet, String> {
        Membership::claim_block(self, net, subnet)
    }
    fn release_block(&self, net: Uuid, block: IpNet) {
        if let Some(me) = self.this.get().and_then(std::sync::Weak::upgrade) {
            Membership::release_block(&me, net, block)
        }
    }
    fn create_network(&self, id: Uuid, vni: u32, definition: &serde_json::Value) -> Result<(), String> {
        Membership::create_network(self, id, vni, definition)
    }
    fn delete_network(&self, id: Uuid, vni: u32) -> Result<bool, String> {
        Membership::delete_network(self, id, vni)
    }
}

fn wire_host(h: &Host) -> ClusterHost {
    ClusterHost {
        id: h.id,
        hostname: h.hostname.clone(),
        provider_address: h.provider_address.to_string(),
        vtep_mac: h.vtep_mac.clone(),
    }
}

/// This host's ID, made on the first start and kept in `state_dir`.
fn host_id(state_dir: &Path) -> anyhow::Result<Uuid> {
    let path = state_dir.join("cluster-host-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{} is not a UUID: remove it to get a new host ID", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            std::fs::write(&path, format!("{id}\n")).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A locally administered unicast MAC from the host ID: stable across restarts.
fn vtep_mac(id: Uuid) -> String {
    let b = id.as_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3], b[4], b[5])
}

/// The source address of the route to the first etcd endpoint (a UDP
/// socket's connect sends nothing).
fn provider_towards(endpoint: &str) -> anyhow::Result<IpAddr> {
    let hostport = endpoint.split("://").last().unwrap_or(endpoint).trim_end_matches('/');
    let target = hostport
        .to_socket_addrs()
        .with_context(|| format!("etcd endpoint {endpoint}: not host:port"))?
        .next()
        .with_context(|| format!("etcd endpoint {endpoint} resolves to nothing"))?;
    let any: IpAddr = if target.is_ipv4() { "0.0.0.0".parse()? } else { "::".parse()? };
    let sock = UdpSocket::bind((any, 0))?;
    sock.connect(target).with_context(|| format!("no route to etcd at {endpoint}: pass --provider-address"))?;
    Ok(sock.local_addr()?.ip())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Starts the agent's tasks on the current runtime; answers the membership.
pub fn start(cfg: Config, state_dir: &Path, on_change: OnChange) -> anyhow::Result<Arc<Membership>> {
    anyhow::ensure!(!cfg.endpoints.is_empty(), "--etcd needs at least one endpoint (http://HOST:2379)");
    let id = host_id(state_dir)?;
    let provider = match cfg.provider_address {
        Some(a) => a,
        None => provider_towards(&cfg.endpoints[0])?,
    };
    let host = Host { id, hostname: hostname(), provider_address: provider, vtep_mac: vtep_mac(id) };
    tracing::info!(host = %id, %provider, etcd = ?cfg.endpoints, "joining the cluster");
    let m = Arc::new(Membership {
        host,
        ttl: cfg.ttl,
        cfg: cfg.clone(),
        runtime: tokio::runtime::Handle::current(),
        status: RwLock::default(),
        shared: tokio::sync::Mutex::new(None),
        this: std::sync::OnceLock::new(),
        on_change: std::sync::OnceLock::new(),
    });
    let _ = m.this.set(Arc::downgrade(&m));
    let _ = m.on_change.set(on_change);
    let lease_file = state_dir.join("cluster-lease");
    tokio::spawn(keep(m.clone(), cfg.clone(), lease_file));
    tokio::spawn(follow(m.clone(), cfg.clone()));
    tokio::spawn(reclaim(m.clone(), cfg));
    Ok(m)
}

async fn connect(m: &Membership, cfg: &Config) -> cnet_cluster::Result<Cluster> {
    let mut options = cnet_cluster::ConnectOptions::new();
    if let Some((user, password)) = &cfg.user {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &cfg.tls {
        options = options.with_tls(tls.clone());
    }
    Cluster::connect(&cfg.endpoints, Some(options), m.host.clone()).await
}

/// TLS options from PEM files: the CA that signed etcd's certificate, and
/// this host's client certificate and key (etcd's `--client-cert-auth`).
pub fn tls_options(ca: Option<&Path>, cert_key: Option<(&Path, &Path)>) -> anyhow::Result<cnet_cluster::TlsOptions> {
    let read =
        |p: &Path, what: &str| std::fs::read(p).with_context(|| format!("reading the etcd {what} {}", p.display()));
    let mut tls = cnet_cluster::TlsOptions::new();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(cnet_cluster::Certificate::from_pem(read(ca, "CA certificate")?));
    }
    if let Some((cert, key)) = cert_key {
        tls =
            tls.identity(cnet_cluster::Identity::from_pem(read(cert, "client certificate")?, read(key, "client key")?));
    }
    Ok(tls)
}

/// Keeps this host registered: joins (revoking the previous lease), then
/// keeps the lease alive every third of its TTL; rejoins when it ended.
async fn keep(m: Arc<Membership>, cfg: Config, lease_file: PathBuf) {
    let retry = Duration::from_secs(1);
    loop {
        let previous = std::fs::read_to_string(&lease_file).ok().and_then(|s| s.trim().parse().ok());
        let joined = async {
            let mut c = connect(&m, &cfg).await?;
            let lease = c.join(cfg.ttl, previous).await?;
            Ok::<_, cnet_cluster::Error>((c, lease))
        };
        let (mut c, lease) = match joined.await {
            Ok(j) => j,
            Err(e) => {
                m.update(|s| s.keeper_error = Some(format!("cannot register this host in etcd ({e}); retrying")));
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        let _ = std::fs::write(&lease_file, format!("{lease}\n"));
        m.update(|s| {
            s.joined = true;
            s.keeper_error = None;
            s.lease = Some(lease);
        });
        tracing::info!(lease, "registered in the cluster");
        let every = Duration::from_millis((cfg.ttl.max(1) as u64 * 1000) / 3);
        loop {
            tokio::time::sleep(every).await;
            // A slow answer is not yet a lost lease: wait up to a third of
            // the TTL more (the next keep-alive is due then anyway).
            match tokio::time::timeout(every, c.keep_alive()).await {
                Ok(Ok(ttl)) if ttl > 0 => {
                    tracing::debug!(lease, ttl, "lease kept alive");
                    m.update(|s| s.keeper_error = None)
                }
                Ok(Ok(_)) => {
                    m.update(|s| s.keeper_error = Some("this host's lease ended: registering again".into()));
                    // Nothing to revoke: register under a new lease.
                    let _ = std::fs::remove_file(&lease_file);
                    break;
                }
                Ok(Err(e)) => m.update(|s| {
                    s.keeper_error = Some(format!("etcd unreachable ({e}): keeping the data path as it is"))
                }),
                Err(_) => {
                    // The connection may be stuck: the next keep-alive goes
                    // over a new one, for the same lease.
                    if let Ok(mut fresh) = connect(&m, &cfg).await {
                        fresh.adopt_lease(lease);
                        c = fresh;
                    } else {
                        c.reset_keep_alive().await;
                    }
                    m.update(|s| s.keeper_error = Some("etcd does not answer: keeping the data path as it is".into()))
                }
            }
        }
    }
}

/// Follows the cluster into the membership's view; reads everything again
/// after any failure.
async fn follow(m: Arc<Membership>, cfg: Config) {
    let retry = Duration::from_secs(1);
    loop {
        let run = async {
            let mut c = connect(&m, &cfg).await?;
            let mut view = c.snapshot().await?;
            let me = m.host.id;
            m.update(|s| {
                s.view = view.clone();
                s.follower_error = None;
                s.prune(me);
            });
            m.changed();
            c.follow(&mut view, |v| {
                m.update(|s| {
                    s.view = v.clone();
                    s.prune(me);
                });
                m.changed();
                true
            })
            .await
        };
        if let Err(e) = run.await {
            m.update(|s| s.follower_error = Some(format!("cannot follow the cluster in etcd ({e}); retrying")));
        }
        tokio::time::sleep(retry).await;
    }
}

/// Reclaims the blocks of hosts that are gone: a host whose registration
/// has been absent for the grace period loses its blocks (each delete a
/// transaction that checks it is still absent: a host that came back keeps
/// them). Every host does this; the first one's transaction wins.
async fn reclaim(m: Arc<Membership>, cfg: Config) {
    let mut absent_since: std::collections::HashMap<(Uuid, Uuid), tokio::time::Instant> = Default::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let view = m.view();
        let now = tokio::time::Instant::now();
        let departed: BTreeSet<(Uuid, Uuid)> =
            view.blocks.keys().flat_map(|net| view.departed(*net).into_iter().map(move |h| (*net, h))).collect();
        absent_since.retain(|k, _| departed.contains(k));
        for k in &departed {
            absent_since.entry(*k).or_insert(now);
        }
        let due: Vec<(Uuid, Uuid)> =
            absent_since.iter().filter(|(_, t)| now.duration_since(**t) >= cfg.block_grace).map(|(k, _)| *k).collect();
        if due.is_empty() {
            continue;
        }
        let Ok(mut c) = connect(&m, &cfg).await else { continue };
        for (net, dead) in due {
            match c.reclaim(net, dead).await {
                Ok(blocks) if !blocks.is_empty() => {
                    tracing::info!(network = %net, host = %dead, ?blocks, "blocks of a departed host reclaimed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(network = %net, host = %dead, "reclaiming blocks: {e}"),
            }
            absent_since.remove(&(net, dead));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_keeps_its_id_and_vtep_mac_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let id = host_id(dir.path()).unwrap();
        assert_eq!(host_id(dir.path()).unwrap(), id);
        let mac = vtep_mac(id);
        assert!(mac.starts_with("02:") && mac.len() == 17, "{mac}");
        std::fs::write(dir.path().join("cluster-host-id"), "garbage").unwrap();
        assert!(host_id(dir.path()).unwrap_err().to_string().contains("remove it"));
    }

    #[test]
    fn the_provider_address_is_the_source_towards_etcd() {
        assert_eq!(provider_towards("http://127.0.0.1:2379").unwrap(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(provider_towards("http://no-port").is_err());
    }
}
