//! A store written by the release before the typed records (schema 1, made
//! by that cnetd: `fixtures/store-v1.redb`) is migrated at start, in one
//! transaction, and nothing in it is lost. Needs no root.

use std::net::IpAddr;

use cnet_model::{EndpointState, NetworkType};
use cnetd::state::records::NamespaceType;
use cnetd::state::State;
use uuid::Uuid;

fn id(s: &str) -> Uuid {
    s.parse().unwrap()
}

fn open_copy_of_the_fixture(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("cnet.redb");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1.redb"), &path).unwrap();
    path
}

#[test]
fn a_store_of_the_previous_release_is_migrated_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = open_copy_of_the_fixture(&dir);
    let store = cnet_store::Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1, "the fixture is a schema 1 store");
    let state = State::open(store).unwrap();
    let o = state.read().clone();
    drop(state);

    assert_eq!(o.networks.len(), 3);
    assert_eq!(o.endpoints.len(), 4);
    assert_eq!(o.namespaces.len(), 3);
    assert!(o.intents().is_empty());

    let web = &o.networks[&id("4bcd0784-7f94-4cb0-8a66-f03847281e10")].record;
    assert_eq!((web.name.as_str(), web.kind, web.bridge.as_str()), ("web", NetworkType::Nat, "cnb5842b6a5ac"));
    assert_eq!(web.subnets.len(), 2);
    let top: Vec<IpAddr> = vec!["10.79.0.4".parse().unwrap(), "fd00:79::4".parse().unwrap()];
    assert_eq!(web.last_allocated, top, "allocation goes on after the highest address in use");
    let private = &o.networks[&id("bfee9beb-6ee2-41f1-84c0-a4a64784b9be")].record;
    assert_eq!(private.kind, NetworkType::Private);

    let cni = &o.endpoints[&id("757ec828-f4ba-4d38-9c3c-cdb928f663ac")].record;
    assert_eq!(cni.network, web.id);
    assert_eq!(cni.namespace, Some(id("81662cd0-0892-48b2-a7fe-b9d0482b0a7d")));
    assert_eq!(cni.mac.to_string(), "0a:58:0a:4f:00:04");
    assert_eq!(cni.interface_name.as_str(), "net1");
    assert_eq!(cni.host_interface_name, "cnvc2ec15ebfe2");
    assert_eq!(cni.state, EndpointState::Attached);
    assert_eq!(cni.mtu(), Some(1400));
    let udp = cni.port_mappings().next().unwrap();
    assert_eq!((udp.external_port, udp.internal_port), (5353, 53));
    assert_eq!(udp.vip, Some("198.18.0.2".parse().unwrap()));
    assert_eq!(cni.annotations["cni.dev/container"], "abc");

    let loose = &o.endpoints[&id("a98c2a97-131b-43f3-b5a0-15faa7bbd1b5")].record;
    assert_eq!((loose.namespace, loose.state), (None, EndpointState::Created));
    assert_eq!(loose.interface_name.as_str(), "eth0");

    let adopted = &o.namespaces[&id("81662cd0-0892-48b2-a7fe-b9d0482b0a7d")].record;
    assert_eq!((adopted.managed, adopted.netns_path.as_str()), (false, "/run/netns/fixadopt"));
    assert_eq!(adopted.kind, NamespaceType::HostDefault);
    let managed = &o.namespaces[&id("4082fbc6-72bb-4041-a052-5a458d94b343")].record;
    assert_eq!((managed.managed, managed.name.as_ref().unwrap().as_str()), (true, "fixc1"));

    // The store now says schema 2, and opening it again reads the same.
    let store = cnet_store::Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), cnet_store::SCHEMA_VERSION);
    assert_eq!(State::open(store).unwrap().read().clone(), o);
}
