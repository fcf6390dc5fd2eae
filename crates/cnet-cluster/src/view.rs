//! A host's view of the cluster: every live host and every network's blocks,
//! at an etcd revision, kept current by a watch.
//!
//! Invariants:
//! - The view is what etcd said at `revision`: built by one prefix read
//!   ([`Cluster::snapshot`]), then changed only by watch events in revision
//!   order ([`View::apply`]).
//! - [`Cluster::follow`] never trusts a watch it may have missed events of:
//!   after a compaction (the watch is canceled) it reads everything again; a
//!   lost stream resumes from the next revision. Either way the view
//!   converges on what etcd holds.
//! - A malformed value is skipped (and reported), never applied: one bad
//!   key cannot take a host's view down.
//! - The data plane is planned from [`View::remote_hosts`]: per network, the
//!   other **registered** hosts with their blocks — a host whose lease ended
//!   is out at once, even while its blocks wait to be reclaimed.

use std::collections::BTreeMap;

use etcd_client::{EventType, GetOptions, WatchOptions};
use ipnet::IpNet;
use uuid::Uuid;

use crate::{blocks, Block, Cluster, Host, Result, PREFIX};

/// One remote host as a network's data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteHost {
    pub host: Host,
    pub blocks: Vec<IpNet>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The etcd revision the view is at.
    pub revision: i64,
    pub hosts: BTreeMap<Uuid, Host>,
    /// Cluster-wide networks' definitions (every host makes them its own).
    pub networks: BTreeMap<Uuid, serde_json::Value>,
    /// Per network, its blocks and their holders.
    pub blocks: BTreeMap<Uuid, BTreeMap<IpNet, Uuid>>,
}

/// What a key under [`PREFIX`] names.
enum Key {
    Network(Uuid),
    Host(Uuid),
    Block(Uuid, IpNet),
}

fn parse(key: &[u8]) -> Option<Key> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(PREFIX)?;
    if let Some(id) = key.strip_prefix("networks/") {
        return id.parse().ok().map(Key::Network);
    }
    if let Some(id) = key.strip_prefix("hosts/") {
        return id.parse().ok().map(Key::Host);
    }
    let (net, block) = key.strip_prefix("blocks/")?.split_once('/')?;
    Some(Key::Block(net.parse().ok()?, blocks::parse_key(block)?))
}

impl View {
    /// Applies one key's new value (`None`: deleted). Answers whether the
    /// view changed; a value that does not decode is skipped.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        match (parse(key), value) {
            (Some(Key::Host(id)), Some(v)) => match serde_json::from_slice::<Host>(v) {
                Ok(h) if h.id == id => self.hosts.insert(id, h.clone()) != Some(h),
                _ => {
                    tracing::warn!("skipping host registration {id}: not a valid registration");
                    false
                }
            },
            (Some(Key::Host(id)), None) => self.hosts.remove(&id).is_some(),
            (Some(Key::Network(id)), Some(v)) => match serde_json::from_slice::<serde_json::Value>(v) {
                Ok(def) => self.networks.insert(id, def.clone()) != Some(def),
                Err(_) => {
                    tracing::warn!("skipping network {id}: its definition is not JSON");
                    false
                }
            },
            (Some(Key::Network(id)), None) => self.networks.remove(&id).is_some(),
            (Some(Key::Block(net, b)), Some(v)) => match serde_json::from_slice::<Block>(v) {
                Ok(holder) => self.blocks.entry(net).or_default().insert(b, holder.host) != Some(holder.host),
                Err(_) => {
                    tracing::warn!("skipping block {b} of network {net}: not a valid holder");
                    false
                }
            },
            (Some(Key::Block(net, b)), None) => {
                let gone = self.blocks.get_mut(&net).and_then(|m| m.remove(&b)).is_some();
                if self.blocks.get(&net).is_some_and(|m| m.is_empty()) {
                    self.blocks.remove(&net);
                }
                gone
            }
            (None, _) => false,
        }
    }

    /// The registered hosts other than `me` that hold blocks of `net`, with
    /// their blocks, in a stable order.
    pub fn remote_hosts(&self, net: Uuid, me: Uuid) -> Vec<RemoteHost> {
        let mut by_host: BTreeMap<Uuid, Vec<IpNet>> = BTreeMap::new();
        for (block, holder) in self.blocks.get(&net).into_iter().flatten() {
            if *holder != me {
                by_host.entry(*holder).or_default().push(*block);
            }
        }
        by_host
            .into_iter()
            .filter_map(|(id, blocks)| self.hosts.get(&id).map(|h| RemoteHost { host: h.clone(), blocks }))
            .collect()
    }

    /// Hosts that hold blocks of `net` but are not registered: their lease
    /// ended (their blocks are reclaimable after the grace period).
    pub fn departed(&self, net: Uuid) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self
            .blocks
            .get(&net)
            .into_iter()
            .flatten()
            .map(|(_, h)| *h)
            .filter(|h| !self.hosts.contains_key(h))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Cluster {
    /// Everything under [`PREFIX`], read at one revision.
    pub async fn snapshot(&mut self) -> Result<View> {
        let got = self.client.get(PREFIX, Some(GetOptions::new().with_prefix())).await?;
        let mut view = View { revision: got.header().map(|h| h.revision()).unwrap_or(0), ..View::default() };
        for kv in got.kvs() {
            view.apply(kv.key(), Some(kv.value()));
        }
        Ok(view)
    }

    /// Keeps `view` current until `changed` answers false: a watch from the
    /// view's next revision; a full read again after a compaction or a
    /// canceled watch; a lost stream resumed where it stopped. `changed` is
    /// called after each batch of events that changed the view.
    pub async fn follow(&mut self, view: &mut View, mut changed: impl FnMut(&View) -> bool) -> Result<()> {
        loop {
            let options = WatchOptions::new().with_prefix().with_start_revision(view.revision + 1);
            let mut stream = self.client.watch(PREFIX, Some(options)).await?;
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    // Lost: watch again from where we are.
                    Ok(None) | Err(_) => break,
                };
                if msg.canceled() || msg.compact_revision() > 0 {
                    // Events we never saw are gone: read everything again.
                    *view = self.snapshot().await?;
                    if !changed(view) {
                        return Ok(());
                    }
                    break;
                }
                let mut any = false;
                for e in msg.events() {
                    let Some(kv) = e.kv() else { continue };
                    let value = match e.event_type() {
                        EventType::Put => Some(kv.value()),
                        EventType::Delete => None,
                    };
                    any |= view.apply(kv.key(), value);
                    view.revision = view.revision.max(kv.mod_revision());
                }
                if let Some(h) = msg.header() {
                    view.revision = view.revision.max(h.revision());
                }
                if any && !changed(view) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: u128) -> Host {
        Host {
            id: Uuid::from_u128(n),
            hostname: format!("h{n}"),
            provider_address: format!("192.168.77.{n}").parse().unwrap(),
            vtep_mac: format!("02:00:00:00:00:{n:02x}"),
        }
    }

    fn put_host(v: &mut View, h: &Host) -> bool {
        v.apply(crate::host_key(h.id).as_bytes(), Some(serde_json::to_vec(h).unwrap().as_slice()))
    }

    fn put_block(v: &mut View, net: Uuid, b: &str, holder: u128) -> bool {
        let value = serde_json::to_vec(&Block { host: Uuid::from_u128(holder) }).unwrap();
        v.apply(crate::block_key(net, b.parse().unwrap()).as_bytes(), Some(value.as_slice()))
    }

    #[test]
    fn remote_hosts_are_the_registered_others_with_their_blocks() {
        let net = Uuid::from_u128(99);
        let mut v = View::default();
        let (me, b, c) = (host(1), host(2), host(3));
        for h in [&me, &b, &c] {
            assert!(put_host(&mut v, h));
        }
        assert!(!put_host(&mut v, &b), "the same registration again changes nothing");
        put_block(&mut v, net, "10.0.0.0/26", 1);
        put_block(&mut v, net, "10.0.0.64/26", 2);
        put_block(&mut v, net, "10.0.0.128/26", 2);
        put_block(&mut v, net, "10.0.0.192/26", 3);
        assert!(v.apply(crate::network_key(net).as_bytes(), Some(br#"{"Name":"ov"}"#)));
        assert_eq!(v.networks[&net]["Name"], "ov");
        let r = v.remote_hosts(net, me.id);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].blocks, vec!["10.0.0.64/26".parse::<IpNet>().unwrap(), "10.0.0.128/26".parse().unwrap()]);
        // C's lease ends: it is out of the data plane at once, its block departed.
        assert!(v.apply(crate::host_key(c.id).as_bytes(), None));
        assert_eq!(v.remote_hosts(net, me.id).len(), 1);
        assert_eq!(v.departed(net), vec![c.id]);
        assert!(v.apply(crate::block_key(net, "10.0.0.192/26".parse().unwrap()).as_bytes(), None));
        assert!(v.departed(net).is_empty());
    }

    #[test]
    fn malformed_values_and_foreign_keys_are_skipped() {
        let mut v = View::default();
        let id = Uuid::from_u128(5);
        assert!(!v.apply(crate::host_key(id).as_bytes(), Some(b"not json")));
        let other = host(6);
        let mismatched = serde_json::to_vec(&other).unwrap();
        assert!(!v.apply(crate::host_key(id).as_bytes(), Some(mismatched.as_slice())), "a key and ID that disagree");
        assert!(!v.apply(b"/cnet/v1/blocks/nonsense", Some(b"{}")));
        assert!(!v.apply(b"/elsewhere/key", Some(b"{}")));
        assert_eq!(v, View::default());
    }
}
