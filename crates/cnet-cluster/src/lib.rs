//! cnet's cluster: the hosts of a multi-host deployment, their overlay
//! networks and the address blocks each host holds, in **etcd** (an existing,
//! proven store: no consensus or gossip of our own).
//!
//! Keys (prefix `/cnet/v1/`, values JSON):
//! - `hosts/<host-id>`: a host's registration ([`Host`]), put under the
//!   host's **lease** (seconds, kept alive): a host that stops keeping it
//!   alive is gone from every peer's view within the TTL.
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

use std::net::IpAddr;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use etcd_client::ConnectOptions;

pub mod blocks;
pub mod view;

/// The prefix of every key cnet writes.
pub const PREFIX: &str = "/cnet/v1/";

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
    #[error("a stored value under {key} is not valid JSON: {source}")]
    Corrupt { key: String, source: serde_json::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A connection to the cluster's etcd, as one host.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// This host's registration and its current lease, once joined.
    host: Host,
    lease: Option<i64>,
}

impl Cluster {
    /// Connects to etcd at `endpoints` (with `options`: TLS, user) as `host`.
    pub async fn connect(endpoints: &[String], options: Option<ConnectOptions>, host: Host) -> Result<Self> {
        let options = options.unwrap_or_default().with_connect_timeout(Duration::from_secs(3));
        Ok(Cluster { client: Client::connect(endpoints, Some(options)).await?, host, lease: None })
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

    /// Sends one keep-alive for this host's lease; answers the TTL left
    /// (0: the lease ended, join again). Call it every third of the TTL.
    pub async fn keep_alive(&mut self) -> Result<i64> {
        let lease = self.lease.ok_or(Error::NotJoined)?;
        let (mut keeper, mut stream) = self.client.lease_keep_alive(lease).await?;
        keeper.keep_alive().await?;
        let ttl = stream.message().await?.map(|r| r.ttl()).unwrap_or(0);
        if ttl <= 0 {
            self.lease = None;
        }
        Ok(ttl)
    }

    /// Leaves the cluster at once: revokes the lease (the registration goes).
    pub async fn leave(&mut self) -> Result<()> {
        if let Some(lease) = self.lease.take() {
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
                ])
                .and_then([TxnOp::put(key, value.clone(), None)]);
            if self.client.txn(txn).await?.succeeded() {
                return Ok(block);
            }
            // Someone claimed it first, or our registration went: which?
            if !self.registered(lease).await? {
                self.lease = None;
                return Err(Error::NotJoined);
            }
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
