//! cnet's cluster: the hosts of a multi-host deployment, their overlay
//! networks and the address blocks each host holds, in **etcd** (an existing,
//! proven store: no consensus or gossip of our own).
//!
//! Keys (prefix `/cnet/v1/`, values JSON):
//! - `hosts/<host-id>`: a host's registration ([`Host`]), put under the
//!   host's **lease** (seconds, kept alive): a host that stops keeping it
//!   alive is gone from every peer's view within the TTL.
//! - `networks/<network-id>`: a cluster-wide (Overlay) network's definition,
//!   and `vnis/<vni>`: the network that has this VNI (made in the same
//!   transaction: a VNI belongs to one network).
//! - `blocks/<network-id>/claims`: bumped by every claim of a block of the
//!   network, so a delete that saw no blocks can tell that none came since.
//! - `blocks/<network-id>/<ip>_<len>`: the host that holds this block of the
//!   network's subnet ([`Block`]). Not leased, so a short etcd outage or a
//!   restart keeps a host's addresses; a dead host's blocks are reclaimed by
//!   [`Cluster::reclaim`] after a grace period.
//!
//! Invariants:
//! - A block is claimed in one transaction that succeeds only if the block
//!   key does not exist **and** the claimer's registration still carries its
//!   current lease: two hosts never hold one block, and a host whose lease
//!   ended cannot claim.
//! - A host joins only if no live host has its ID (put-if-absent under its
//!   lease); a restarted host first revokes the lease it held before, if it
//!   remembers it.
//! - Releases and reclaims compare the block's holder, so they never delete
//!   a block someone else has claimed in the meantime.
//! - A network is deleted only when no host holds a block of it, checked
//!   in the delete's transaction (the claims counter); a block is claimed
//!   only while its network exists: no block outlives its network.
//! - A host holds a block only while it has endpoints in it (it releases
//!   the block with its last one), so "no blocks" means "no endpoints".

use std::net::IpAddr;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

pub mod blocks;
pub mod view;

/// The prefix of every key cnet writes.
pub const PREFIX: &str = "/cnet/v1/";

/// The key of network `id`'s definition.
pub fn network_key(id: Uuid) -> String {
    format!("{PREFIX}networks/{id}")
}

/// The key that names the network holding VNI `vni`.
pub fn vni_key(vni: u32) -> String {
    format!("{PREFIX}vnis/{vni}")
}

fn claims_key(net: Uuid) -> String {
    format!("{}claims", blocks_prefix(net))
}

/// The key of host `id`'s registration.
pub fn host_key(id: Uuid) -> String {
    format!("{PREFIX}hosts/{id}")
}

/// The prefix of network `net`'s blocks.
pub fn blocks_prefix(net: Uuid) -> String {
    format!("{PREFIX}blocks/{net}/")
}

/// The key of `block` of network `net` (`/` is not a key character of ours).
pub fn block_key(net: Uuid, block: IpNet) -> String {
    format!("{}{}_{}", blocks_prefix(net), block.addr(), block.prefix_len())
}

/// A host's registration: what its peers need to reach its blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Host {
    #[serde(rename = "ID")]
    pub id: Uuid,
    pub hostname: String,
    /// Its underlay address: the tunnels' far end.
    pub provider_address: IpAddr,
    /// Its VTEP MAC (`aa:bb:…`), stable across restarts.
    pub vtep_mac: String,
}

/// A block's holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Block {
    pub host: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("another live host is registered as {0}: give this host another ID, or stop the other one")]
    HostTaken(Uuid),
    #[error("this host's registration is gone (its lease ended): it must join again before it claims blocks")]
    NotJoined,
    #[error("every block of {0} is held: use a larger subnet or smaller blocks")]
    Exhausted(IpNet),
    #[error("network {0} already exists in the cluster")]
    NetworkExists(Uuid),
    #[error("VNI {vni} is network {owner}'s: give this network another VSID")]
    VniTaken { vni: u32, owner: String },
    #[error("network {0} does not exist in the cluster")]
    NoSuchNetwork(Uuid),
    #[error("network {net} still has endpoints on host(s) {}: delete them first (a dead host's blocks are reclaimed after the grace period)", hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", "))]
    NetworkInUse { net: Uuid, hosts: Vec<Uuid> },
    #[error("a stored value under {key} is not valid JSON: {source}")]
    Corrupt { key: String, source: serde_json::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The one keep-alive stream of a lease (shared by clones of a [`Cluster`]).
type KeepAlive =
    std::sync::Arc<tokio::sync::Mutex<Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>>>;

/// A connection to the cluster's etcd, as one host.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// This host's registration and its current lease, once joined.
    host: Host,
    lease: Option<i64>,
    keep_alive: KeepAlive,
}

impl Cluster {
    /// Connects to etcd at `endpoints` (with `options`: TLS, user) as `host`.
    pub async fn connect(endpoints: &[String], options: Option<ConnectOptions>, host: Host) -> Result<Self> {
        let options = options.unwrap_or_default().with_connect_timeout(Duration::from_secs(3));
        Ok(Cluster {
            client: Client::connect(endpoints, Some(options)).await?,
            host,
            lease: None,
            keep_alive: KeepAlive::default(),
        })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The lease this host is registered under, once joined.
    pub fn lease(&self) -> Option<i64> {
        self.lease
    }

    /// Registers this host under a new lease of `ttl` seconds (revoking
    /// `previous`, the lease it held before a restart, first); refused while
    /// another live host has its ID. Keep the lease alive with
    /// [`Cluster::keep_alive`].
    pub async fn join(&mut self, ttl: i64, previous: Option<i64>) -> Result<i64> {
        if let Some(old) = previous {
            // Gone already (it expired) is fine.
            let _ = self.client.lease_revoke(old).await;
        }
        let lease = self.client.lease_grant(ttl, None).await?.id();
        let key = host_key(self.host.id);
        let value = serde_json::to_string(&self.host).expect("a registration serialises");
        let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
        if !self.client.txn(txn).await?.succeeded() {
            let _ = self.client.lease_revoke(lease).await;
            return Err(Error::HostTaken(self.host.id));
        }
        self.lease = Some(lease);
        Ok(lease)
    }

    /// Sends one keep-alive for this host's lease on the lease's one
    /// stream (made on first use, made again after a failure); answers the
    /// TTL left (0: the lease ended, join again). Call it every third of the
    /// TTL.
    pub async fn keep_alive(&mut self) -> Result<i64> {
        let lease = self.lease.ok_or(Error::NotJoined)?;
        let mut slot = self.keep_alive.lock().await;
        let mut client = self.client.clone();
        let answer = async {
            if slot.is_none() {
                *slot = Some(client.lease_keep_alive(lease).await?);
            }
            let (keeper, stream) = slot.as_mut().expect("just made");
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()).unwrap_or(0))
        };
        match answer.await {
            Ok(ttl) => {
                if ttl <= 0 {
                    self.lease = None;
                    *slot = None;
                }
                Ok(ttl)
            }
            Err(e) => {
                *slot = None;
                if e.to_string().contains("lease not found") {
                    self.lease = None;
                    return Ok(0);
                }
                Err(e.into())
            }
        }
    }

    /// Takes over `lease`, this host's current registration's, on a new
    /// connection (the old one stopped answering).
    pub fn adopt_lease(&mut self, lease: i64) {
        self.lease = Some(lease);
    }

    /// Drops the lease's keep-alive stream (one that stopped answering): the
    /// next [`Cluster::keep_alive`] opens a new one.
    pub async fn reset_keep_alive(&mut self) {
        *self.keep_alive.lock().await = None;
    }

    /// Leaves the cluster at once: revokes the lease (the registration goes).
    pub async fn leave(&mut self) -> Result<()> {
        if let Some(lease) = self.lease.take() {
            *self.keep_alive.lock().await = None;
            self.client.lease_revoke(lease).await?;
        }
        Ok(())
    }

    /// Every live host's registration.
    pub async fn hosts(&mut self) -> Result<Vec<Host>> {
        let prefix = format!("{PREFIX}hosts/");
        let got = self.client.get(prefix, Some(GetOptions::new().with_prefix())).await?;
        got.kvs().iter().map(|kv| decode(kv.key(), kv.value())).collect()
    }

    /// Network `net`'s blocks and their holders.
    pub async fn blocks(&mut self, net: Uuid) -> Result<Vec<(IpNet, Uuid)>> {
        let prefix = blocks_prefix(net);
        let got = self.client.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
        let mut out = Vec::new();
        for kv in got.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(block) = blocks::parse_key(&key[prefix.len()..]) else { continue };
            let holder: Block = decode(kv.key(), kv.value())?;
            out.push((block, holder.host));
        }
        Ok(out)
    }

    /// Claims a free block of `subnet` (blocks of `/block_len`) for this host
    /// in network `net`, in one transaction per try; answers it.
    pub async fn claim(&mut self, net: Uuid, subnet: IpNet, block_len: u8) -> Result<IpNet> {
        let lease = self.lease.ok_or(Error::NotJoined)?;
        let value = serde_json::to_string(&Block { host: self.host.id }).expect("a block serialises");
        loop {
            let held: Vec<IpNet> = self.blocks(net).await?.into_iter().map(|(b, _)| b).collect();
            let Some(block) = blocks::first_free(subnet, block_len, &held, self.host.id) else {
                return Err(Error::Exhausted(subnet));
            };
            let key = block_key(net, block);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    Compare::lease(host_key(self.host.id), CompareOp::Equal, lease),
                    Compare::create_revision(network_key(net), CompareOp::Greater, 0),
                ])
                .and_then([TxnOp::put(key, value.clone(), None), TxnOp::put(claims_key(net), block.to_string(), None)]);
            if self.client.txn(txn).await?.succeeded() {
                return Ok(block);
            }
            if self.client.get(network_key(net), None).await?.kvs().is_empty() {
                return Err(Error::NoSuchNetwork(net));
            }
            // Someone claimed it first, or our registration went: which?
            if !self.registered(lease).await? {
                self.lease = None;
                return Err(Error::NotJoined);
            }
        }
    }

    /// Creates cluster-wide network `id` with VNI `vni` and its `definition`
    /// (the network's JSON), both keys in one transaction.
    pub async fn create_network(&mut self, id: Uuid, vni: u32, definition: &serde_json::Value) -> Result<()> {
        let txn = Txn::new()
            .when([
                Compare::create_revision(network_key(id), CompareOp::Equal, 0),
                Compare::create_revision(vni_key(vni), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(network_key(id), definition.to_string(), None),
                TxnOp::put(vni_key(vni), id.to_string(), None),
            ]);
        if self.client.txn(txn).await?.succeeded() {
            return Ok(());
        }
        if !self.client.get(network_key(id), None).await?.kvs().is_empty() {
            return Err(Error::NetworkExists(id));
        }
        let owner = self.client.get(vni_key(vni), None).await?;
        let owner = owner.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).unwrap_or_default();
        Err(Error::VniTaken { vni, owner })
    }

    /// Every cluster-wide network's definition.
    pub async fn networks(&mut self) -> Result<Vec<(Uuid, serde_json::Value)>> {
        let prefix = format!("{PREFIX}networks/");
        let got = self.client.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
        let mut out = Vec::new();
        for kv in got.kvs() {
            let Ok(id) = String::from_utf8_lossy(&kv.key()[prefix.len()..]).parse() else { continue };
            out.push((id, decode(kv.key(), kv.value())?));
        }
        Ok(out)
    }

    /// Deletes cluster-wide network `id` (and its VNI), refused while any
    /// host holds a block of it; answers whether it existed.
    pub async fn delete_network(&mut self, id: Uuid, vni: u32) -> Result<bool> {
        loop {
            let got = self.client.get(blocks_prefix(id), Some(GetOptions::new().with_prefix())).await?;
            let mut holders = Vec::new();
            let mut claims_rev = 0;
            for kv in got.kvs() {
                if kv.key() == claims_key(id).as_bytes() {
                    claims_rev = kv.mod_revision();
                } else if let Ok(b) = decode::<Block>(kv.key(), kv.value()) {
                    holders.push(b.host);
                }
            }
            if !holders.is_empty() {
                holders.sort();
                holders.dedup();
                return Err(Error::NetworkInUse { net: id, hosts: holders });
            }
            let txn =
                Txn::new().when([Compare::mod_revision(claims_key(id), CompareOp::Equal, claims_rev)]).and_then([
                    TxnOp::delete(network_key(id), Some(etcd_client::DeleteOptions::new().with_prev_key())),
                    TxnOp::delete(vni_key(vni), None),
                    TxnOp::delete(claims_key(id), None),
                ]);
            let resp = self.client.txn(txn).await?;
            if resp.succeeded() {
                // The first operation is the network's own delete.
                let existed = matches!(
                    resp.op_responses().into_iter().next(),
                    Some(etcd_client::TxnOpResponse::Delete(d)) if d.deleted() > 0
                );
                return Ok(existed);
            }
            // A block was claimed since we looked: look again.
        }
    }

    /// Gives `block` of network `net` back; only if this host still holds it.
    pub async fn release(&mut self, net: Uuid, block: IpNet) -> Result<bool> {
        self.delete_if_held(net, block, self.host.id, false).await
    }

    /// Deletes the blocks of network `net` that host `dead` held, if `dead`
    /// is still not registered (each in one transaction: a host that came
    /// back keeps its blocks). Answers the blocks reclaimed.
    pub async fn reclaim(&mut self, net: Uuid, dead: Uuid) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        for (block, holder) in self.blocks(net).await? {
            if holder == dead && self.delete_if_held(net, block, dead, true).await? {
                out.push(block);
            }
        }
        Ok(out)
    }

    async fn delete_if_held(&mut self, net: Uuid, block: IpNet, holder: Uuid, only_if_gone: bool) -> Result<bool> {
        let key = block_key(net, block);
        let value = serde_json::to_string(&Block { host: holder }).expect("a block serialises");
        let mut when = vec![Compare::value(key.clone(), CompareOp::Equal, value)];
        if only_if_gone {
            when.push(Compare::create_revision(host_key(holder), CompareOp::Equal, 0));
        }
        let txn = Txn::new().when(when).and_then([TxnOp::delete(key, None)]);
        Ok(self.client.txn(txn).await?.succeeded())
    }

    /// Whether this host's registration still carries `lease`.
    async fn registered(&mut self, lease: i64) -> Result<bool> {
        let got = self.client.get(host_key(self.host.id), None).await?;
        Ok(got.kvs().first().is_some_and(|kv| kv.lease() == lease))
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value)
        .map_err(|source| Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source })
}
