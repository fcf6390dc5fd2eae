//! Lifecycle tests of the Overlay driver on the fake, with a fake cluster
//! membership (blocks in memory, no etcd): the same harness as the other
//! types, and the block bookkeeping around it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use cnet_cluster::view::View;
use cnet_cluster::Host;
use cnet_model::cluster::ClusterStatus;
use ipnet::IpNet;
use uuid::Uuid;

use super::*;
use crate::cluster::{block_len, Member};

thread_local! {
    /// The cluster of the bed this test thread made last (Overlay beds only).
    pub(super) static MEMBER: std::cell::RefCell<Option<Arc<FakeMember>>> = const { std::cell::RefCell::new(None) };
}

/// A cluster of one host, in memory.
pub(super) struct FakeMember {
    host: Host,
    blocks: Mutex<BTreeMap<Uuid, BTreeSet<IpNet>>>,
    networks: Mutex<BTreeMap<Uuid, serde_json::Value>>,
}

impl FakeMember {
    pub(super) fn new() -> Arc<FakeMember> {
        Arc::new(FakeMember {
            host: Host {
                id: Uuid::from_u128(7),
                hostname: "unit".into(),
                // The bed's uplink0 address: the underlay's MTU is read there.
                provider_address: "198.18.0.2".parse().unwrap(),
                vtep_mac: "02:00:00:00:00:07".into(),
            },
            blocks: Mutex::default(),
            networks: Mutex::default(),
        })
    }

    fn held(&self) -> usize {
        self.blocks.lock().unwrap().values().map(|b| b.len()).sum()
    }
}

impl Member for FakeMember {
    fn host(&self) -> &Host {
        &self.host
    }
    fn view(&self) -> View {
        let mut v = View { networks: self.networks.lock().unwrap().clone(), ..View::default() };
        v.hosts.insert(self.host.id, self.host.clone());
        for (net, blocks) in self.blocks.lock().unwrap().iter() {
            v.blocks.insert(*net, blocks.iter().map(|b| (*b, self.host.id)).collect());
        }
        v
    }
    fn status(&self) -> ClusterStatus {
        ClusterStatus { enabled: true, health: "Healthy".into(), ..ClusterStatus::default() }
    }
    fn own_blocks(&self, net: Uuid) -> Vec<IpNet> {
        self.blocks.lock().unwrap().get(&net).into_iter().flatten().copied().collect()
    }
    fn claim_block(&self, net: Uuid, subnet: IpNet) -> Result<IpNet, String> {
        let mut all = self.blocks.lock().unwrap();
        let held: Vec<IpNet> = all.get(&net).into_iter().flatten().copied().collect();
        let b = cnet_cluster::blocks::first_free(subnet, block_len(subnet), &held, self.host.id)
            .ok_or("every block is held")?;
        all.entry(net).or_default().insert(b);
        Ok(b)
    }
    fn release_block(&self, net: Uuid, block: IpNet) {
        if let Some(b) = self.blocks.lock().unwrap().get_mut(&net) {
            b.remove(&block);
        }
    }
    fn create_network(&self, id: Uuid, _vni: u32, definition: &serde_json::Value) -> Result<(), String> {
        self.networks.lock().unwrap().insert(id, definition.clone());
        Ok(())
    }
    fn delete_network(&self, id: Uuid, _vni: u32) -> Result<bool, String> {
        if self.blocks.lock().unwrap().get(&id).is_some_and(|b| !b.is_empty()) {
            return Err("network still has endpoints".into());
        }
        Ok(self.networks.lock().unwrap().remove(&id).is_some())
    }
}

fn member() -> Arc<FakeMember> {
    MEMBER.with(|m| m.borrow().clone()).expect("an Overlay bed")
}

#[test]
fn overlay_lifecycles_failing_at_any_step_roll_back_or_finish_on_retry() {
    on("Overlay", || {
        let n = failing_each_step_rolls_back(Bed::new, create_network);
        assert!(n >= 2, "{n} steps");
        failing_each_step_rolls_back(
            || {
                let b = with_network(true);
                assert_eq!(member().held(), 0);
                b
            },
            create_attached_endpoint,
        );
        failing_each_step_finishes_on_retry(attached, detach, |b| {
            nothing_of_the_endpoint_is_left(b);
            assert_eq!(b.svc().get_endpoint(EP).unwrap().namespace, None);
        });
        failing_each_step_finishes_on_retry(attached, delete_endpoint, |b| {
            nothing_of_the_endpoint_is_left(b);
            assert_eq!(member().held(), 0, "the endpoint's blocks are given back");
        });
    });
}

#[test]
fn overlay_lifecycles_crashing_at_any_step_are_resolved_at_start() {
    on("Overlay", || {
        crashing_at_each_step_then_restarting_resolves_the_intent(Bed::new, create_network);
        crashing_at_each_step_then_restarting_resolves_the_intent(|| with_network(true), create_attached_endpoint);
        crashing_at_each_step_then_restarting_resolves_the_intent(attached, detach);
        crashing_at_each_step_then_restarting_resolves_the_intent(attached, delete_endpoint);
    });
}

#[test]
fn a_create_failing_at_any_step_gives_its_new_blocks_back() {
    on("Overlay", || {
        let n = steps_of(|| with_network(true), create_attached_endpoint);
        for step in 0..n {
            let b = with_network(true);
            b.fake.fail_step(step);
            if create_attached_endpoint(b.svc()).is_err() {
                assert_eq!(member().held(), 0, "step {step}: a block kept for an endpoint that does not exist");
            }
        }
    });
}

#[test]
fn overlay_endpoints_are_routed_hosts_in_blocks_of_this_host() {
    on("Overlay", || {
        let b = attached();
        let ep = b.svc().get_endpoint(EP).unwrap();
        let blocks = member().own_blocks(Uuid::parse_str(NET).unwrap());
        assert_eq!(blocks.len(), 2, "one block per family: {blocks:?}");
        for c in &ep.ip_configurations {
            assert!(blocks.iter().any(|b| b.contains(&c.ip_address)), "{} outside {blocks:?}", c.ip_address);
            assert_eq!(c.prefix_length, if c.ip_address.is_ipv4() { 32 } else { 128 });
        }
        let net = b.svc().get_network(NET).unwrap();
        assert_eq!(net.mtu(), 1450, "the uplink's 1500 less VXLAN's 50");
        let k = b.fake.objects();
        assert!(k.links.keys().any(|l| l.starts_with("cnx")), "the VXLAN device: {:?}", k.links.keys());
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        // A second endpoint shares the blocks; deleting both gives them back.
        let second: Endpoint = serde_json::from_value(json!({"HostComputeNetwork": "web"})).unwrap();
        let second = b.svc().create_endpoint(second).unwrap();
        assert_eq!(member().own_blocks(net.id).len(), 2);
        b.svc().delete_endpoint(EP).unwrap();
        assert_eq!(member().own_blocks(net.id).len(), 2, "still used by the second");
        b.svc().delete_endpoint(&second.id.to_string()).unwrap();
        assert!(member().own_blocks(net.id).is_empty());
        b.svc().delete_network(NET).unwrap();
        assert!(b.fake.objects().links.keys().all(|l| !l.starts_with("cnx") && !l.starts_with("cnb")));
    });
}

#[test]
fn an_overlay_network_keeps_its_tunnel_end_through_a_modify() {
    on("Overlay", || {
        let b = attached();
        let set =
            serde_json::from_value(json!({"Type": "SetPolicy", "Settings": {"Id": "peers", "PolicyType": "IPSET",
            "Values": "10.80.9.0/24"}}))
            .unwrap();
        let change = NetworkChange::Policies(crate::service::NetworkPolicyChange::Add(vec![set]));
        let net = b.svc().modify_network("web", change).expect("the VXLAN device is set up again from the record");
        assert!(net.overlay_host.is_some() && net.sets.len() == 1);
        assert!(b.drift().is_empty(), "{:?}", b.drift());
    });
}
