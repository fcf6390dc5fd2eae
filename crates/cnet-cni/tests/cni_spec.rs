//! The plugin driven exactly as the CNI spec says (environment, stdin,
//! stdout, exit code), against a private cnetd, with real namespaces and
//! packets; plus what real runtimes send that bends the spec.

use std::io::Write;
use std::process::{Command, Stdio};

use cnet_model::{Endpoint, Namespace};
use cnet_testkit::{bin, probe, World, HOST_IP, LAN_IP};
use serde_json::{json, Value};

mod common;
use common::*;

#[test]
fn version_answers_without_the_daemon_for_every_version() {
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let (ok, out) = cni(
            &Call { command: "VERSION", container: "", netns: "dummy", ifname: "dummy", args: "" },
            &json!({"cniVersion": v, "socket": "/nonexistent.sock"}),
        );
        assert!(ok, "{out}");
        assert_eq!(out["cniVersion"], v);
        let supported: Vec<&str> =
            out["supportedVersions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(supported, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    }
}

#[test]
fn add_check_del_work_for_every_spec_version_with_that_versions_result() {
    cnet_testkit::require_root!();
    let w = World::new();
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let ns = netns(&w, &format!("v{i}"));
        let id = format!("container{i}");
        let c = conf(&w, v, "10.131.0.0/24");
        let (ok, result) = cni(&Call::new("ADD", &id, &ns), &c);
        assert!(ok, "ADD {v}: {result}");
        assert_eq!(result["cniVersion"], v);
        let ip = result["ips"][0]["address"].as_str().unwrap().to_string();
        assert_eq!(result["ips"][0].get("version").is_some(), v.starts_with("0."), "{v}: {result}");
        assert_eq!(result["ips"][0]["gateway"], "10.131.0.1");
        assert_eq!(result["interfaces"][1]["sandbox"], ns.as_str());
        assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
        assert!(addr_in(&w, &ns, "eth0").contains(&ip), "{ip} not on eth0");
        assert!(probe::ping(&ns, "10.131.0.1"));

        let mut with_prev = c.clone();
        with_prev["prevResult"] = result.clone();
        if v != "0.3.0" && v != "0.3.1" {
            let (ok, out) = cni(&Call::new("CHECK", &id, &ns), &with_prev);
            assert!(ok, "CHECK {v}: {out}");
        }
        for _ in 0..2 {
            let (ok, out) = cni(&Call::new("DEL", &id, &ns), &with_prev);
            assert!(ok, "DEL {v} (twice): {out}");
        }
        assert!(w.link_cut_off_then_gone(&ns, "eth0"), "eth0 left behind");
    }
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "{eps:?}");
    let nss: Vec<Namespace> = w.client().get("/namespaces").unwrap();
    assert!(nss.is_empty(), "adopted namespaces must be released: {nss:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn add_of_an_existing_interface_is_an_error_and_changes_nothing() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "a");
    let c = conf(&w, "1.0.0", "10.132.0.0/24");
    let (ok, first) = cni(&Call::new("ADD", "ctr1", &ns), &c);
    assert!(ok, "{first}");
    let (ok, out) = cni(&Call::new("ADD", "ctr1", &ns), &c);
    assert!(!ok);
    assert_eq!(out["code"], 102, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("already"), "{out}");
    // A second container asking for the same interface name in the same netns.
    let (ok, out) = cni(&Call::new("ADD", "ctr2", &ns), &c);
    assert!(!ok, "{out}");
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert_eq!(eps.len(), 1);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn del_succeeds_when_the_netns_is_gone_never_existed_or_cnetd_lost_the_endpoint() {
    cnet_testkit::require_root!();
    let w = World::new();
    let c = conf(&w, "1.1.0", "10.133.0.0/24");
    // Netns deleted before DEL.
    let ns = netns(&w, "gone");
    let (ok, r) = cni(&Call::new("ADD", "gone", &ns), &c);
    assert!(ok, "{r}");
    let freed = r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert!(Command::new("ip").args(["netns", "del", &w.name("gone")]).status().unwrap().success());
    assert!(cni(&Call::new("DEL", "gone", &ns), &c).0);
    // Never created.
    assert!(cni(&Call::new("DEL", "never", "/run/netns/never-existed"), &c).0);
    // cnetd lost it (deleted behind the runtime's back).
    let ns2 = netns(&w, "lost");
    assert!(cni(&Call::new("ADD", "lost", &ns2), &c).0);
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    for ep in eps {
        w.client().delete(&format!("/endpoints/{}", ep.id)).unwrap();
    }
    assert!(cni(&Call::new("DEL", "lost", &ns2), &c).0);
    // containerd/ctr: DEL with an empty CNI_NETNS.
    assert!(cni(&Call::new("DEL", "lost", ""), &c).0);
    // The freed address is given out again.
    let ns3 = netns(&w, "again");
    let mut pinned = c.clone();
    pinned["runtimeConfig"] = json!({"ips": [format!("{freed}/24")]});
    let (ok, r) = cni(&Call::new("ADD", "again", &ns3), &pinned);
    assert!(ok, "{r}");
    assert!(r["ips"][0]["address"].as_str().unwrap().starts_with(&freed));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn check_names_the_difference() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "c");
    let mut c = conf(&w, "1.1.0", "10.134.0.0/24");
    c["runtimeConfig"] = json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let (ok, r) = cni(&Call::new("ADD", "ctr", &ns), &c);
    assert!(ok, "{r}");
    c["prevResult"] = r.clone();
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(w.exec_in(&ns, &["ip", "addr", "del", &addr, "dev", "eth0"]).status.success());
    let (ok, out) = cni(&Call::new("CHECK", "ctr", &ns), &c);
    assert!(!ok);
    assert_eq!(out["code"], 101);
    assert!(out["msg"].as_str().unwrap().contains(addr.split('/').next().unwrap()), "{out}");
    assert!(w.exec_in(&ns, &["ip", "addr", "add", &addr, "dev", "eth0"]).status.success());
    assert!(w.exec_in(&ns, &["ip", "route", "add", "default", "via", "10.134.0.1"]).status.success());
    assert!(cni(&Call::new("CHECK", "ctr", &ns), &c).0);
    // The port mapping's firewall element removed by hand.
    let del = "delete element inet cnet pm4 { tcp . 18080 }";
    assert!(w.exec_in(&w.host_path(), &["nft", del]).status.success());
    let (ok, out) = cni(&Call::new("CHECK", "ctr", &ns), &c);
    assert!(!ok);
    assert!(out["msg"].as_str().unwrap().contains("18080"), "{out}");
    // CHECK of something never added.
    let (ok, out) = cni(&Call::new("CHECK", "other", &ns), &c);
    assert!(!ok);
    assert_eq!(out["code"], 3);
}

#[test]
fn status_is_0_when_healthy_50_when_cnetd_is_down_51_when_degraded_or_a_foreign_chain_drops() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    let ns = netns(&w, "s");
    let c = conf(&w, "1.1.0", "10.135.0.0/24");
    assert!(cni(&Call::new("ADD", "ctr", &ns), &c).0);
    let (ok, out) = cni(&Call::new("STATUS", "", ""), &c);
    assert!(ok, "{out}");
    // Another firewall's forward chain with policy drop (Docker's FORWARD DROP).
    let drop = "table ip filter {\n chain FORWARD { type filter hook forward priority 0; policy drop; }\n}\n";
    let load = w.exec_in(&w.host_path(), &["bash", "-c", &format!("printf '{drop}' | nft -f -")]);
    assert!(load.status.success(), "{load:?}");
    let (ok, out) = cni(&Call::new("STATUS", "", ""), &c);
    assert!(!ok);
    assert_eq!(out["code"], 51, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("ip filter FORWARD"), "the chain is named: {out}");
    assert!(w.exec_in(&w.host_path(), &["nft", "delete", "table", "ip", "filter"]).status.success());
    let (ok, out) = cni(&Call::new("STATUS", "", ""), &c);
    assert!(ok, "{out}");
    let bridge = w.client().get::<cnet_model::Network>("/networks/cninet").unwrap().bridge_name.unwrap();
    assert!(w.exec_in(&w.host_path(), &["ip", "link", "set", &bridge, "down"]).status.success());
    let (ok, out) = cni(&Call::new("STATUS", "", ""), &c);
    assert!(!ok);
    assert_eq!(out["code"], 51, "{out}");
    w.stop_daemon();
    let (ok, out) = cni(&Call::new("STATUS", "", ""), &c);
    assert!(!ok);
    assert_eq!(out["code"], 50, "{out}");
    let (ok, out) = cni(&Call::new("ADD", "ctr2", &ns), &c);
    assert!(!ok);
    assert_eq!(out["code"], 11, "ADD with cnetd down: try again later: {out}");
}

#[test]
fn gc_removes_every_attachment_not_in_the_valid_list() {
    cnet_testkit::require_root!();
    let w = World::new();
    let c = conf(&w, "1.1.0", "10.136.0.0/24");
    let keep = netns(&w, "keep");
    let drop1 = netns(&w, "drop");
    let mut with_ports = c.clone();
    with_ports["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]});
    assert!(cni(&Call::new("ADD", "keep", &keep), &c).0);
    assert!(cni(&Call::new("ADD", "drop", &drop1), &with_ports).0);
    // An endpoint made through the API directly is not the plugin's to collect.
    w.client().post::<Endpoint>("/endpoints", &json!({"HostComputeNetwork": "cninet"})).unwrap();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let (ok, out) = cni(&Call::new("GC", "", ""), &gc);
    assert!(ok, "{out}");
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert!(eps.iter().all(|e| e.annotations.get("cni.dev/containerID").map(|s| s.as_str()) != Some("drop")));
    assert!(w.link_cut_off_then_gone(&drop1, "eth0"));
    let table =
        String::from_utf8_lossy(&w.exec_in(&w.host_path(), &["nft", "list", "map", "inet", "cnet", "pm4"]).stdout)
            .into_owned();
    assert!(!table.contains("18081"), "the collected port mapping must go: {table}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn errors_carry_the_specs_codes() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "e");
    let good = conf(&w, "1.0.0", "10.137.0.0/24");
    let run = |call: &Call, c: &Value| {
        let (ok, out) = cni(call, c);
        assert!(!ok, "{out}");
        assert!(out["msg"].as_str().unwrap().len() > 10, "{out}");
        out["code"].as_u64().unwrap()
    };
    // Undecodable config.
    let mut child = Command::new(bin("cnet-cni"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "x")
        .env("CNI_NETNS", &ns)
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{not json").unwrap();
    let out: Value = serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(out["code"], 6);
    assert_eq!(run(&Call::new("BOGUS", "x", &ns), &good), 4);
    assert_eq!(run(&Call { ifname: "", ..Call::new("ADD", "x", &ns) }, &good), 4);
    assert_eq!(run(&Call::new("ADD", "-bad id", &ns), &good), 4);
    let mut old = good.clone();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(run(&Call::new("ADD", "x", &ns), &old), 1);
    // The network exists with another subnet than the config says.
    assert!(cni(&Call::new("ADD", "x", &ns), &good).0);
    let ns2 = netns(&w, "e2");
    assert_eq!(run(&Call::new("ADD", "y", &ns2), &conf(&w, "1.0.0", "10.138.0.0/24")), 7);
    let mut no_net = good.clone();
    no_net["name"] = json!("unknown");
    no_net.as_object_mut().unwrap().remove("network");
    assert_eq!(run(&Call::new("ADD", "y", &ns2), &no_net), 7);
    let mut down = good.clone();
    down["socket"] = json!("/nonexistent/cnetd.sock");
    assert_eq!(run(&Call::new("ADD", "y", &ns2), &down), 11);
    assert_eq!(run(&Call::new("ADD", "y", "/etc/hostname"), &good), 4);
}

#[test]
fn podman_style_static_ip_and_mac_in_cni_args_and_published_ports_work() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "p");
    let mut c = conf(&w, "0.4.0", "10.139.0.0/24");
    c["runtimeConfig"] = json!({
        "portMappings": [{"hostPort": 18083, "containerPort": 8080, "protocol": "tcp", "hostIP": ""}],
        "aliases": {"cninet": ["web", "abc123"]}
    });
    let call = Call {
        args: "IgnoreUnknown=1;K8S_POD_NAME=web;MAC=0a:58:0a:8b:00:63;IP=10.139.0.99",
        ..Call::new("ADD", "podmanctr", &ns)
    };
    let (ok, r) = cni(&call, &c);
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.139.0.99/24");
    assert_eq!(r["interfaces"][1]["mac"], "0a:58:0a:8b:00:63");
    let _srv = probe::tcp_server(&ns, "0.0.0.0:8080");
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:18083")), Some(LAN_IP.to_string()));
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps[0].annotations["cni.dev/aliases"].contains("web"));
    // The aliases answer in the network's DNS, which the result names.
    assert_eq!(r["dns"]["nameservers"][0], "10.139.0.1");
    let dig = std::process::Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .args(["dig", "+short", "+tries=1", "@10.139.0.1", "abc123"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "10.139.0.99");
}

#[test]
fn cri_style_capitalised_port_mappings_random_args_and_a_double_del() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ns = netns(&w, "k");
    let mut c = conf(&w, "1.0.0", "10.140.0.0/24");
    c["runtimeConfig"] =
        json!({"portMappings": [{"HostPort": 18095, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""}]});
    let args = "K8S_POD_UID=1;IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_NAME=p;K8S_POD_NAMESPACE=default";
    let (ok, r) = cni(&Call { args, ..Call::new("ADD", "default-abc", &ns) }, &c);
    assert!(ok, "{r}");
    let _srv = probe::tcp_server(&ns, "0.0.0.0:8080");
    assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:18095")).is_some());
    // StopPodSandbox, then RemovePodSandbox with an empty netns.
    assert!(cni(&Call { args, ..Call::new("DEL", "default-abc", &ns) }, &c).0);
    assert!(cni(&Call { args, ..Call::new("DEL", "default-abc", "") }, &c).0);
    assert_eq!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:18095")), None);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn sixty_four_parallel_adds_get_distinct_addresses_and_64_dels_leave_nothing() {
    cnet_testkit::require_root!();
    let w = World::new();
    let c = conf(&w, "1.1.0", "10.141.0.0/24");
    let paths: Vec<String> = (0..64).map(|i| netns(&w, &format!("par{i}"))).collect();
    let adds: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (p, c) = (p.clone(), c.clone());
            std::thread::spawn(move || cni(&Call::new("ADD", &format!("par{i}"), &p), &c))
        })
        .collect();
    let mut addrs: Vec<String> = adds
        .into_iter()
        .map(|h| {
            let (ok, r) = h.join().unwrap();
            assert!(ok, "{r}");
            r["ips"][0]["address"].as_str().unwrap().to_string()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 64);
    let dels: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (p, c) = (p.clone(), c.clone());
            std::thread::spawn(move || cni(&Call::new("DEL", &format!("par{i}"), &p), &c))
        })
        .collect();
    for h in dels {
        let (ok, r) = h.join().unwrap();
        assert!(ok, "{r}");
    }
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty());
    let nss: Vec<Namespace> = w.client().get("/namespaces").unwrap();
    assert!(nss.is_empty(), "{nss:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn a_container_goes_on_the_lan_with_a_dhcp_lease_and_del_releases_it() {
    cnet_testkit::require_root!();
    let w = World::new();
    let dhcp = cnet_testkit::lan::DhcpServer::start(&w, "198.18.0.100", "198.18.0.150", 60);
    let c = json!({
        "cniVersion": "1.0.0", "name": "lan", "type": "cnet-cni", "socket": w.socket,
        "network": {"Type": "Transparent", "Ipams": [{"Type": "Dhcp"}],
                    "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}]}
    });
    let ns = netns(&w, "dhcp");
    let (ok, result) = cni(&Call::new("ADD", "dhcp1", &ns), &c);
    assert!(ok, "ADD: {result}");
    let ip = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert!(ip.starts_with("198.18.0.1"), "leased from the server's range: {result}");
    assert_eq!(result["ips"][0]["gateway"], LAN_IP);
    assert_eq!(result["ips"][0]["interface"], 0, "a macvlan has only its inside: {result}");
    assert_eq!(result["dns"]["nameservers"][0], LAN_IP, "{result}");
    assert!(probe::ping(&w.lan_path(), &ip), "the LAN reaches the container");
    let mut with_prev = c.clone();
    with_prev["prevResult"] = result.clone();
    let (ok, out) = cni(&Call::new("CHECK", "dhcp1", &ns), &with_prev);
    assert!(ok, "CHECK: {out}");
    let mac = result["interfaces"][0]["mac"].as_str().unwrap().to_string();
    let (ok, out) = cni(&Call::new("DEL", "dhcp1", &ns), &with_prev);
    assert!(ok, "DEL: {out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while dhcp.count("DHCPRELEASE", &mac) == 0 {
        assert!(std::time::Instant::now() < deadline, "no release: {}", dhcp.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!addr_in(&w, &ns, "eth0").contains(&ip));
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
