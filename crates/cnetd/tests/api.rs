//! The API's contract: objects, filters, attach/detach, error codes for bad
//! input (and no partial state after them), idempotent deletes, concurrency.

mod common;
use cnet_model::{Endpoint, ErrorCode, Namespace, Network};
use common::*;
use serde_json::{json, Value};

fn raw(w: &World, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let r = w.client().raw(method, path, Some(body)).expect("request");
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn code_of(v: &Value) -> &str {
    v["ErrorCode"].as_str().unwrap_or("<none>")
}

#[test]
fn bad_input_gets_a_clear_error_code_and_leaves_no_state() {
    cnet_testkit::require_root!();
    let w = World::new();
    network(&w, "taken", "NAT", &["10.101.0.0/24"]);
    let long = "x".repeat(65);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/networks", "{not json".into(), 400, "InvalidJson"),
        ("/networks", "[1,2]".into(), 400, "InvalidJson"),
        ("/networks", r#"{"Name": 5}"#.into(), 400, "InvalidJson"),
        ("/networks", r#"{"Name":"n","Ipams":"nope"}"#.into(), 400, "InvalidJson"),
        ("/networks", r#"{"Name":"n","Ipams":[{"Subnets":[{"IpAddressPrefix":"10.999.0.0/24"}]}]}"#.into(), 400, "InvalidSubnet"),
        ("/networks", r#"{"Name":"n","Ipams":[{"Subnets":[{"IpAddressPrefix":"10.102.0.7/24"}]}]}"#.into(), 400, "InvalidSubnet"),
        ("/networks", r#"{"Name":"n","Ipams":[{"Subnets":[{"IpAddressPrefix":"10.101.0.0/16"}]}]}"#.into(), 400, "InvalidSubnet"),
        ("/networks", r#"{"Name":"n","Ipams":[]}"#.into(), 400, "InvalidSubnet"),
        ("/networks", format!(r#"{{"Name":"{long}","Ipams":[{{"Subnets":[{{"IpAddressPrefix":"10.103.0.0/24"}}]}}]}}"#), 400, "InvalidParameter"),
        ("/networks", r#"{"Name":"taken","Ipams":[{"Subnets":[{"IpAddressPrefix":"10.104.0.0/24"}]}]}"#.into(), 409, "NetworkAlreadyExists"),
        ("/networks", r#"{"Name":"o","Type":"Overlay","Ipams":[{"Subnets":[{"IpAddressPrefix":"10.105.0.0/24"}]}]}"#.into(), 422, "MappingNotSupported"),
        ("/networks", r#"{"Name":"o","Type":"Bogus"}"#.into(), 400, "InvalidParameter"),
        ("/networks", r#"{"Name":"p","Policies":[{"Type":"VxlanPort","Settings":{"Port":4789}}],"Ipams":[{"Subnets":[{"IpAddressPrefix":"10.106.0.0/24"}]}]}"#.into(), 400, "InvalidParameter"),
        ("/networks", r#"{"Name":"p","Policies":[{"Type":"HostRoute","Settings":{}}],"Ipams":[{"Subnets":[{"IpAddressPrefix":"10.106.0.0/24"}]}]}"#.into(), 422, "MappingNotSupported"),
        ("/endpoints", r#"{"HostComputeNetwork":"nope"}"#.into(), 404, "NetworkNotFound"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","IpConfigurations":[{"IpAddress":"10.200.0.5"}]}"#.into(), 400, "AddrInvalidOrReserved"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","IpConfigurations":[{"IpAddress":"10.101.0.1"}]}"#.into(), 400, "AddrInvalidOrReserved"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","IpConfigurations":[{"IpAddress":"banana"}]}"#.into(), 400, "InvalidJson"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","InterfaceName":"abcdefghijklmnopq"}"#.into(), 400, "InvalidParameter"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","MacAddress":"01:00:5e:00:00:01"}"#.into(), 400, "InvalidParameter"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"L2Driver","Settings":{}}]}"#.into(), 422, "MappingNotSupported"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"ACL","Settings":{}}]}"#.into(), 400, "InvalidJson"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"QOS","Settings":{"MaximumOutgoingBandwidthInBytes":0}}]}"#.into(), 400, "InvalidParameter"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"QOS","Settings":{"MaximumOutgoingBandwidthInBytes":1000,"Burst":1}}]}"#.into(), 400, "InvalidJson"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"Bandwidth","Settings":{"IngressRate":1000}}]}"#.into(), 400, "InvalidParameter"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"ACL","Settings":{"Action":"Allow","Direction":"In","LocalPorts":"9-1","Protocols":"6"}}]}"#.into(), 400, "InvalidParameter"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"PortMapping","Settings":{"Protocol":6,"InternalPort":0,"ExternalPort":80}}]}"#.into(), 400, "InvalidInternalPort"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","Policies":[{"Type":"PortMapping","Settings":{"Protocol":1,"InternalPort":80,"ExternalPort":80}}]}"#.into(), 400, "InvalidParameter"),
        ("/endpoints", r#"{"HostComputeNetwork":"taken","HostComputeNamespace":"nope"}"#.into(), 404, "NamespaceNotFound"),
        ("/namespaces", r#"{}"#.into(), 400, "InvalidParameter"),
        ("/namespaces", r#"{"Name":"../../etc"}"#.into(), 400, "InvalidParameter"),
        ("/namespaces", r#"{"NetnsPath":"/etc/passwd"}"#.into(), 404, "NamespaceNotFound"),
    ];
    for (path, body, status, code) in &cases {
        let (got_status, v) = raw(&w, "POST", path, body.as_bytes());
        assert_eq!((got_status, code_of(&v)), (*status, *code), "POST {path} {body}: {v}");
        assert_eq!(v["Success"], json!(false));
        assert!(v["Error"].as_str().unwrap().len() > 10, "the error must say what to fix: {v}");
    }
    // Over 1 MiB.
    let big = format!(r#"{{"Name":"big","Pad":"{}"}}"#, "x".repeat(1 << 20));
    let (status, v) = raw(&w, "POST", "/networks", big.as_bytes());
    assert_eq!((status, code_of(&v)), (413, "RequestTooLarge"));
    // Nothing was created by any of them, and the daemon still answers.
    let nets: Vec<Network> = w.client().get("/networks").unwrap();
    assert_eq!(nets.len(), 1);
    let eps: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert!(eps.is_empty(), "{eps:?}");
    let nss: Vec<Namespace> = w.client().get("/namespaces").unwrap();
    assert!(nss.is_empty());
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn an_address_already_taken_is_refused_and_never_given_twice() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "n", "NAT", &["10.107.0.0/24"]);
    let a: Endpoint = w
        .client()
        .post("/endpoints", &json!({"HostComputeNetwork": net.id, "IpConfigurations": [{"IpAddress": "10.107.0.9"}]}))
        .unwrap();
    assert_eq!(a.ip_configurations[0].ip_address.to_string(), "10.107.0.9");
    let err = w
        .client()
        .post::<Endpoint>(
            "/endpoints",
            &json!({"HostComputeNetwork": net.id, "IpConfigurations": [{"IpAddress": "10.107.0.9"}]}),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AddrInvalidOrReserved));
    // A freed address can be taken again.
    w.client().delete(&format!("/endpoints/{}", a.id)).unwrap();
    w.client()
        .post::<Endpoint>(
            "/endpoints",
            &json!({"HostComputeNetwork": net.id, "IpConfigurations": [{"IpAddress": "10.107.0.9"}]}),
        )
        .unwrap();
}

#[test]
fn thirty_two_concurrent_creates_on_one_network_get_32_distinct_addresses() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "n", "NAT", &["10.108.0.0/24"]);
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let client = w.client();
            let ns_name = w.name(&format!("c{i}"));
            let id = net.id;
            std::thread::spawn(move || {
                let ns: Namespace = client.post("/namespaces", &json!({"Name": ns_name})).expect("namespace");
                let ep: Endpoint = client
                    .post("/endpoints", &json!({"HostComputeNetwork": id, "HostComputeNamespace": ns.id}))
                    .expect("endpoint");
                ep.ip_configurations[0].ip_address
            })
        })
        .collect();
    let mut addrs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 32, "duplicate addresses handed out");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn deletes_are_idempotent_and_references_are_protected() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "n", "NAT", &["10.109.0.0/24"]);
    let c = container(&w, &net, "c", json!([]));
    let (status, v) = raw(&w, "DELETE", &format!("/networks/{}", net.id), b"");
    assert_eq!((status, code_of(&v)), (409, "EntityHasReferences"));
    let (status, v) = raw(&w, "DELETE", &format!("/namespaces/{}", c.ns.id), b"");
    assert_eq!((status, code_of(&v)), (409, "EntityHasReferences"));
    for _ in 0..2 {
        w.client().delete(&format!("/endpoints/{}", c.ep.id)).expect("endpoint delete, twice");
        w.client().delete(&format!("/namespaces/{}", c.ns.id)).expect("namespace delete, twice");
    }
    assert!(!std::path::Path::new(&c.path()).exists(), "the managed netns must go with its namespace");
    for _ in 0..2 {
        w.client().delete(&format!("/networks/{}", net.id)).expect("network delete, twice");
    }
    // The bridge is cut off at once and deleted in the background.
    let bridge_gone =
        || !String::from_utf8_lossy(&w.exec_in(&w.host_path(), &["ip", "-o", "link"]).stdout).contains("cnb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !bridge_gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(bridge_gone(), "bridge left behind");
    let table = w.exec_in(&w.host_path(), &["nft", "list", "table", "inet", "cnet"]);
    assert!(!table.status.success(), "the nftables table must go with the last network");
}

#[test]
fn attach_and_detach_through_namespace_modify_requests() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "n", "NAT", &["10.110.0.0/24"]);
    let ns: Namespace = w.client().post("/namespaces", &json!({"Name": w.name("c")})).unwrap();
    let ep: Endpoint = w
        .client()
        .post("/endpoints", &json!({"HostComputeNetwork": "n", "Name": "web", "InterfaceName": "web0"}))
        .unwrap();
    assert_eq!(ep.host_compute_namespace, None);
    let add = json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": ep.id}});
    let got: Namespace = w.client().patch(&format!("/namespaces/{}", ns.id), &add).unwrap();
    assert_eq!(got.resources.len(), 1);
    assert_eq!(got.resources[0].data.id, ep.id);
    let path = ns.netns_path.clone().unwrap();
    assert!(probe::ping(&path, "10.110.0.1"));
    let inside = w.exec_in(&path, &["ip", "-o", "link", "show", "web0"]);
    assert!(inside.status.success(), "InterfaceName must be honoured");
    // The bridge port carries no address at all, not even an IPv6 link-local one.
    let host = ep.host_interface_name.clone().unwrap();
    let port = w.exec_in(&w.host_path(), &["ip", "-o", "address", "show", "dev", &host]);
    assert!(port.status.success() && port.stdout.is_empty(), "{}", String::from_utf8_lossy(&port.stdout));
    // An IPv4-only endpoint has no IPv6 address inside either: no link-local chatter.
    let inside6 = w.exec_in(&path, &["ip", "-6", "-o", "address", "show", "dev", "web0"]);
    assert!(inside6.status.success() && inside6.stdout.is_empty(), "{}", String::from_utf8_lossy(&inside6.stdout));
    // Attaching elsewhere while attached is refused.
    let ns2: Namespace = w.client().post("/namespaces", &json!({"Name": w.name("d")})).unwrap();
    let (status, v) = raw(&w, "PATCH", &format!("/namespaces/{}", ns2.id), add.to_string().as_bytes());
    assert_eq!((status, code_of(&v)), (409, "EndpointAlreadyAttached"));
    let remove = json!({"ResourceType": "Endpoint", "RequestType": "Remove", "Settings": {"EndpointId": "web"}});
    let got: Namespace = w.client().patch(&format!("/namespaces/{}", ns.id), &remove).unwrap();
    assert!(got.resources.is_empty());
    assert!(w.link_cut_off_then_gone(&path, "web0"), "veth must be cut off, then gone");
    let ep: Endpoint = w.client().get("/endpoints/web").unwrap();
    assert_eq!(ep.host_compute_namespace, None);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
    let _ = net;
}

#[test]
fn an_existing_netns_can_be_adopted_by_path() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "n", "NAT", &["10.111.0.0/24"]);
    let name = w.name("adopt");
    assert!(std::process::Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    let path = format!("/run/netns/{name}");
    let ns: Namespace = w.client().post("/namespaces", &json!({"NetnsPath": path})).unwrap();
    assert!(!ns.managed);
    let ep: Endpoint =
        w.client().post("/endpoints", &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id})).unwrap();
    assert!(probe::ping(&path, "10.111.0.1"));
    w.client().delete(&format!("/endpoints/{}", ep.id)).unwrap();
    w.client().delete(&format!("/namespaces/{}", ns.id)).unwrap();
    assert!(std::path::Path::new(&path).exists(), "an adopted netns is not cnet's to delete");
}

#[test]
fn lists_filter_by_name_type_network_and_namespace() {
    cnet_testkit::require_root!();
    let w = World::new();
    let a = network(&w, "a", "NAT", &["10.112.0.0/24"]);
    network(&w, "b", "Internal", &["10.113.0.0/24"]);
    let c = container(&w, &a, "c", json!([]));
    w.client().post::<Endpoint>("/endpoints", &json!({"HostComputeNetwork": "b"})).unwrap();
    let by_type: Vec<Network> = w.client().get("/networks?type=internal").unwrap();
    assert_eq!(by_type.iter().map(|n| n.name.to_string()).collect::<Vec<_>>(), vec!["b"]);
    let by_name: Vec<Network> = w.client().get("/networks?name=a").unwrap();
    assert_eq!(by_name.len(), 1);
    let on_a: Vec<Endpoint> = w.client().get("/endpoints?network=a").unwrap();
    assert_eq!(on_a.len(), 1);
    let in_c: Vec<Endpoint> = w.client().get(&format!("/endpoints?namespace={}", c.ns.id)).unwrap();
    assert_eq!(in_c[0].id, c.ep.id);
    let all: Vec<Endpoint> = w.client().get("/endpoints").unwrap();
    assert_eq!(all.len(), 2);
    let v: Value = w.client().get("/globals/version").unwrap();
    assert_eq!(v["Major"], 2);
    let caps: Value = w.client().get("/capabilities").unwrap();
    assert!(caps["NetworkTypes"].as_array().unwrap().contains(&json!("NAT")));
    let served = w.client().raw("GET", "/openapi.json", None).unwrap();
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap();
    assert_eq!(served.body, committed, "GET /openapi.json must serve the committed document");
}

#[test]
fn a_subnet_can_be_added_to_a_live_network() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "n", "NAT", &["10.114.0.0/24"]);
    let add = json!({"ResourceType": "Subnet", "RequestType": "Add", "Settings": {"IpAddressPrefix": "fd00:114::/64"}});
    let got: Network = w.client().patch(&format!("/networks/{}", net.id), &add).unwrap();
    assert_eq!(got.subnets().count(), 2);
    let c = container(&w, &got, "c", json!([]));
    assert!(probe::ping(&c.path(), "fd00:114::1"), "new IPv6 gateway");
    let remove =
        json!({"ResourceType": "Subnet", "RequestType": "Remove", "Settings": {"IpAddressPrefix": "fd00:114::/64"}});
    let (status, v) = raw(&w, "PATCH", &format!("/networks/{}", net.id), remove.to_string().as_bytes());
    assert_eq!((status, code_of(&v)), (409, "EntityHasReferences"), "{v}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn the_cli_tour_of_the_readme_works() {
    cnet_testkit::require_root!();
    let w = World::new();
    let ok = |args: &[&str]| {
        let out = w.cnet(args);
        assert!(out.status.success(), "cnet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["network", "create", "web", "--subnet", "10.115.0.0/24"]);
    let (c1, c2) = (w.name("c1"), w.name("c2"));
    ok(&["namespace", "create", &c1]);
    ok(&["namespace", "create", &c2]);
    ok(&["endpoint", "create", "--network", "web", "--namespace", &c1, "--name", "web1", "-p", "8080:80"]);
    ok(&["endpoint", "create", "--network", "web", "--name", "web2"]);
    ok(&["namespace", "attach", &c2, "web2"]);
    let table = ok(&["endpoint", "list"]);
    assert!(table.contains("web1") && table.contains("8080:80/tcp"), "{table}");
    let json: Vec<Endpoint> =
        serde_json::from_str(&ok(&["-o", "json", "endpoint", "list", "--network", "web"])).unwrap();
    assert_eq!(json.len(), 2);
    let _srv = probe::tcp_server(&format!("/run/netns/{c1}"), "0.0.0.0:80");
    assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8080")).is_some());
    assert!(ok(&["diag"]).contains("no drift"));
    let bad = w.cnet(&["network", "show", "nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NetworkNotFound"));
    ok(&["namespace", "detach", &c2, "web2"]);
    ok(&["endpoint", "delete", "web1", "web2"]);
    ok(&["namespace", "delete", &c1, &c2]);
    ok(&["network", "delete", "web"]);
    assert!(ok(&["network", "list"]).lines().count() == 1, "only the header is left");
}
