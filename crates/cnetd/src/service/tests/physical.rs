//! Lifecycle tests of the physical-network drivers (Transparent, L2Bridge,
//! L2Tunnel) on the fake: the same harness as the NAT ones, run per type.

use serde_json::json;

use super::*;

#[test]
fn physical_lifecycles_failing_at_any_step_roll_back_or_finish_on_retry() {
    for t in PHYSICAL {
        on(t, || {
            let n = failing_each_step_rolls_back(Bed::new, create_network);
            assert!(n >= 2, "{t}: {n} steps");
            failing_each_step_rolls_back(|| with_network(true), create_attached_endpoint);
            failing_each_step_finishes_on_retry(attached, detach, |b| {
                nothing_of_the_endpoint_is_left(b);
                assert_eq!(b.svc().get_endpoint(EP).unwrap().namespace, None);
            });
            failing_each_step_finishes_on_retry(attached, delete_endpoint, nothing_of_the_endpoint_is_left);
        });
    }
}

#[test]
fn physical_lifecycles_crashing_at_any_step_are_resolved_at_start() {
    for t in PHYSICAL {
        on(t, || {
            crashing_at_each_step_then_restarting_resolves_the_intent(Bed::new, create_network);
            crashing_at_each_step_then_restarting_resolves_the_intent(|| with_network(true), create_attached_endpoint);
            crashing_at_each_step_then_restarting_resolves_the_intent(attached, detach);
            crashing_at_each_step_then_restarting_resolves_the_intent(attached, delete_endpoint);
        });
    }
}

#[test]
fn physical_endpoints_never_get_the_hosts_address_and_l2_endpoints_are_routed_and_proxied() {
    for t in PHYSICAL {
        on(t, || {
            let b = attached();
            let ep = b.svc().get_endpoint(EP).unwrap();
            let ip = ep.ips().next().unwrap();
            assert_eq!(ip.to_string(), "198.18.0.3", "{t}: .1 is the gateway, .2 the host's");
            let k = b.fake.objects();
            let routed = k.routes.iter().any(|r| r.destination.ip == ip && r.table == cnet_dataplane::HostRoute::MAIN);
            assert!(routed, "{t}: a host route to the endpoint: {:?}", k.routes);
            let proxied = k.proxies.contains(&("uplink0".to_string(), ip));
            assert_eq!(proxied, t != "Transparent", "{t}: {:?}", k.proxies);
            if t == "L2Tunnel" {
                assert_eq!(k.rules.len(), 1, "{:?}", k.rules);
            }
            let port = k.links.values().find(|l| l.kind == "veth" && l.master.is_some()).map(|l| l.port);
            if t != "Transparent" {
                let isolated = port.expect("a bridge port").isolated;
                assert_eq!(isolated, t == "L2Tunnel", "{t}: only L2Tunnel ports are isolated");
            }
            assert!(b.drift().is_empty(), "{t}: {:?}", b.drift());
            // Deleted behind cnet's back: diag finds it, start-up puts it back.
            b.fake.tamper(|k| k.routes.retain(|r| r.destination.ip != ip));
            assert!(b.drift().iter().any(|d| d.contains("host route")), "{t}: {:?}", b.drift());
            // So is its guard: the container's own (Transparent) or the switch's.
            b.fake.tamper(|k| {
                k.egress_guards.clear();
                k.guarded = None;
            });
            assert!(b.drift().iter().any(|d| d.contains("anti-spoofing guard is missing")), "{t}: {:?}", b.drift());
            let mut b = b;
            b.restart();
            assert!(b.drift().is_empty(), "{t}: {:?}", b.drift());
        });
    }
}

#[test]
fn start_up_removes_routes_and_proxy_entries_no_endpoint_owns() {
    for t in PHYSICAL {
        on(t, || {
            let mut b = attached();
            let stale: std::net::IpAddr = "198.18.0.77".parse().unwrap();
            let dev = if t == "Transparent" {
                crate::driver::transparent::shim(&b.svc().get_network(NET).unwrap())
            } else {
                b.svc().get_network(NET).unwrap().bridge
            };
            b.fake.tamper(|k| {
                k.routes.insert(cnet_dataplane::HostRoute {
                    dev: cnet_dataplane::IfName::new(dev.clone()).unwrap(),
                    destination: cnet_dataplane::Addr { ip: stale, prefix_len: 32 },
                    via: None,
                    src: None,
                    table: cnet_dataplane::HostRoute::MAIN,
                });
                k.proxies.insert(("uplink0".into(), stale));
                // Someone else's proxy entry outside the network's subnets stays.
                k.proxies.insert(("uplink0".into(), "203.0.113.9".parse().unwrap()));
            });
            b.restart();
            let k = b.fake.objects();
            assert!(!k.routes.iter().any(|r| r.destination.ip == stale), "{t}: {:?}", k.routes);
            let ep_ip = b.svc().get_endpoint(EP).unwrap().ips().next().unwrap();
            assert!(k.routes.iter().any(|r| r.destination.ip == ep_ip), "{t}: the live endpoint's route stays");
            assert!(k.proxies.contains(&("uplink0".into(), "203.0.113.9".parse().unwrap())));
            if t != "Transparent" {
                assert!(!k.proxies.contains(&("uplink0".into(), stale)), "{t}: {:?}", k.proxies);
            }
        });
    }
}

#[test]
fn a_vlan_endpoint_whose_programs_are_gone_is_found_and_repaired() {
    on("Transparent", || {
        let mut b = with_network(true);
        let mut req = ep_req(Some(NS));
        req.policies = vec![serde_json::from_value(json!({"Type": "VLAN", "Settings": {"IsolationId": 10}})).unwrap()];
        b.svc().create_endpoint(req).unwrap();
        assert!(b.fake.objects().inside.values().all(|i| i.vlan == Some(10)));
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        // A VLAN endpoint has no host route (the shim is untagged).
        assert!(b.fake.objects().routes.is_empty());
        b.fake.tamper(|k| k.inside.values_mut().for_each(|i| i.vlan = None));
        assert!(b.drift().iter().any(|d| d.contains("VLAN 10")), "{:?}", b.drift());
        b.restart();
        assert!(b.drift().is_empty(), "{:?}", b.drift());
        assert!(b.fake.objects().inside.values().all(|i| i.vlan == Some(10)));
    });
}

#[test]
fn a_missing_uplink_and_port_mappings_on_transparent_are_refused_with_the_fix() {
    on("Transparent", || {
        let b = Bed::new();
        b.fake.tamper(|k| {
            k.links.remove("uplink0");
        });
        let err = b.svc().create_network(net_req()).unwrap_err();
        assert!(err.message.contains("does not exist"), "{}", err.message);
        let b = with_network(false);
        let mut req = ep_req(None);
        req.policies = vec![serde_json::from_value(
            json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080}}),
        )
        .unwrap()];
        let err = b.svc().create_endpoint(req).unwrap_err();
        assert!(err.message.contains("own addresses"), "{}", err.message);
    });
}
