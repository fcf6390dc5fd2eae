//! Lifecycle tests of VM endpoints (TAP on bridges, macvtap on Transparent)
//! on the fake: the same harness as the NAT ones.

use serde_json::json;

use super::*;

/// A NAT network and a Guest (VM) namespace with the test's namespace ID.
fn with_guest() -> Bed {
    let b = with_network(false);
    b.svc()
        .create_namespace(serde_json::from_value(json!({"ID": NS, "Name": "vm1", "Type": "Guest"})).unwrap())
        .unwrap();
    b
}

#[test]
fn a_vm_endpoint_is_a_tap_on_the_bridge_and_its_lifecycles_roll_back_finish_and_repair() {
    failing_each_step_rolls_back(with_guest, create_attached_endpoint);
    crashing_at_each_step_then_restarting_resolves_the_intent(with_guest, create_attached_endpoint);
    let attached_vm = || {
        let b = with_guest();
        b.svc().create_endpoint(ep_req(Some(NS))).unwrap();
        b
    };
    failing_each_step_finishes_on_retry(attached_vm, detach, nothing_of_the_endpoint_is_left);
    crashing_at_each_step_then_restarting_resolves_the_intent(attached_vm, delete_endpoint);

    let mut b = attached_vm();
    let ep = b.svc().get_endpoint(EP).unwrap();
    let k = b.fake.objects();
    let tap = &k.links[&ep.host_interface_name];
    assert_eq!(
        (tap.kind, tap.master.as_deref(), tap.up),
        ("tun", Some(b.svc().get_network(NET).unwrap().bridge.as_str()), true)
    );
    assert!(k.inside.is_empty(), "a VM endpoint has nothing inside a namespace");
    assert!(k.table.unwrap().iter().any(|e| e.set == "pm4"), "its port mappings are published");
    assert!(b.drift().is_empty(), "{:?}", b.drift());
    b.fake.tamper(|k| {
        k.links.remove(&ep.host_interface_name);
    });
    assert!(b.drift().iter().any(|d| d.contains(&ep.host_interface_name)), "{:?}", b.drift());
    b.restart();
    assert!(b.drift().is_empty(), "{:?}", b.drift());
    assert_eq!(b.fake.objects().links[&ep.host_interface_name].kind, "tun");
}

#[test]
fn a_guest_namespaces_vm_nic_options_make_its_devices_and_belong_to_guests_only() {
    let vm =
        json!({"ID": NS, "Name": "vm1", "Type": "Guest", "VmNic": {"Owner": 1000, "Group": 36, "MultiQueue": true}});
    let b = with_network(false);
    b.svc().create_namespace(serde_json::from_value(vm.clone()).unwrap()).unwrap();
    assert_eq!(b.svc().get_namespace(NS).unwrap().to_wire().vm_nic.unwrap().owner, Some(1000), "stored and answered");
    let ep = b.svc().create_endpoint(ep_req(Some(NS))).unwrap();
    let tap = format!("create_tap {} ", ep.host_interface_name);
    let call = b.fake.calls().into_iter().find(|c| c.starts_with(&tap)).expect("the TAP was created");
    // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE
    assert!(call.ends_with("flags=0x5102 owner=Some(1000) group=Some(36)"), "{call}");
    on("Transparent", || {
        let b = with_network(false);
        b.svc().create_namespace(serde_json::from_value(vm.clone()).unwrap()).unwrap();
        b.svc().create_endpoint(ep_req(Some(NS))).unwrap();
        assert!(b
            .fake
            .calls()
            .iter()
            .any(|c| c.starts_with("create_macvtap") && c.ends_with("owner=Some(1000) group=Some(36)")));
    });
    let b = with_network(false);
    let err = b
        .svc()
        .create_namespace(serde_json::from_value(json!({"Name": "c1", "VmNic": {"Owner": 1000}})).unwrap())
        .unwrap_err();
    assert!(err.message.contains("Guest namespaces"), "{}", err.message);
}

#[test]
fn guest_namespaces_take_no_path_and_a_transparent_vm_endpoint_is_a_macvtap() {
    let b = with_network(false);
    let err = b
        .svc()
        .create_namespace(serde_json::from_value(json!({"NetnsPath": "/proc/1/ns/net", "Type": "Guest"})).unwrap())
        .unwrap_err();
    assert!(err.message.contains("no NetnsPath"), "{}", err.message);
    // On a Transparent network a VM endpoint is a macvtap of the uplink with
    // the guest's MAC, opened by its device path.
    on("Transparent", || {
        let b = with_guest();
        let ep = b.svc().create_endpoint(ep_req(Some(NS))).unwrap();
        let tap = crate::driver::transparent::vm_link(&ep);
        let k = b.fake.objects();
        assert_eq!(k.links[&tap].kind, "macvtap");
        assert_eq!(k.links[&tap].parent.as_deref(), Some("uplink0"));
        assert_eq!(k.links[&tap].mac, Some(cnet_dataplane::Mac(ep.mac.0)));
        assert!(ep.vm_device.is_some(), "the device the VMM opens");
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        b.svc().delete_endpoint(EP).unwrap();
        assert!(!b.fake.objects().links.contains_key(&tap));
        assert!(b.fake.objects().routes.is_empty(), "its host route is gone");
    });
}

#[test]
fn a_vm_endpoint_on_a_vlan_is_a_tagged_macvtap_whose_lost_programs_are_found_and_restored() {
    on("Transparent", || {
        let mut b = with_guest();
        let mut req = ep_req(Some(NS));
        req.policies = vec![serde_json::from_value(json!({"Type": "VLAN", "Settings": {"IsolationId": 10}})).unwrap()];
        let ep = b.svc().create_endpoint(req).unwrap();
        let tap = crate::driver::transparent::vm_link(&ep);
        assert_eq!(b.fake.objects().links[&tap].vlan, Some(10), "tagged from its creation");
        assert!(b.fake.objects().routes.is_empty(), "no host route to a VLAN endpoint (the shim is untagged)");
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        b.fake.tamper(|k| k.links.get_mut(&tap).unwrap().vlan = None);
        assert!(b.drift().iter().any(|d| d.contains("VLAN 10")), "{:?}", b.drift());
        b.restart();
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        assert_eq!(b.fake.objects().links[&tap].vlan, Some(10));
    });
}
