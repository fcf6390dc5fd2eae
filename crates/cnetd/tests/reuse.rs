//! What a new container inherits from the one before it: neither its
//! address at once, nor the flows still aimed at it.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cnet_dataplane::netns::run_in;
use cnet_model::{Endpoint, Namespace};
use common::*;
use serde_json::json;

/// A UDP server on `addr` inside `netns` that answers every datagram with `tag`.
struct Tagged(Arc<AtomicBool>);

impl Tagged {
    fn start(netns: &str, addr: &str, tag: &'static str) -> Tagged {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let sock = run_in(netns, move || UdpSocket::bind(addr)).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(tag.as_bytes(), peer);
                }
            }
        });
        Tagged(stop)
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A LAN client that keeps sending from one socket (one source port), as a
/// DNS or game client does: every datagram belongs to the same flow.
struct Client(UdpSocket);

impl Client {
    fn new(w: &World) -> Client {
        let sock = run_in(&w.lan_path(), || UdpSocket::bind(format!("{LAN_IP}:40053"))).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        Client(sock)
    }
    /// Sends once to the published port; who answered, if anyone.
    fn ask(&self) -> Option<String> {
        self.0.send_to(b"?", format!("{HOST_IP}:5300")).unwrap();
        let mut buf = [0u8; 64];
        self.0.recv_from(&mut buf).ok().map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
    /// Asks a few times; the first answer.
    fn answer(&self) -> Option<String> {
        (0..5).find_map(|_| self.ask())
    }
}

#[test]
fn udp_to_a_removed_container_s_port_never_reaches_the_next_owner_of_its_address() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.141.0.0/24"]);
    let a = container(&w, &net, "a", json!([port_map(17, 5300, 53)]));
    let _sa = Tagged::start(&a.path(), &format!("{}:53", a.ip()), "A");
    let client = Client::new(&w);
    assert_eq!(client.answer().as_deref(), Some("A"), "the published UDP port reaches A");

    // A goes; the client keeps sending on the same flow.
    w.client().delete(&format!("/endpoints/{}", a.ep.id)).unwrap();
    assert_eq!(client.ask(), None);

    // C gets A's old address (no published port); B publishes the port again.
    let ns: Namespace = w.client().post("/namespaces", &json!({"Name": w.name("c")})).unwrap();
    let c: Endpoint = w
        .client()
        .post(
            "/endpoints",
            &json!({"HostComputeNetwork": net.id, "HostComputeNamespace": ns.id, "IpConfigurations": [{"IpAddress": a.ip()}]}),
        )
        .unwrap();
    let _sc = Tagged::start(ns.netns_path.as_deref().unwrap(), &format!("{}:53", a.ip()), "C");
    assert_ne!(client.ask().as_deref(), Some("C"), "the old flow must not lead to the address's new owner");

    let b = container(&w, &net, "b", json!([port_map(17, 5300, 53)]));
    let _sb = Tagged::start(&b.path(), &format!("{}:53", b.ip()), "B");
    assert_eq!(client.answer().as_deref(), Some("B"), "the port's new owner gets the flow");
    assert_eq!(c.ip_configurations[0].ip_address.to_string(), a.ip());
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn a_freed_address_goes_to_the_next_container_only_after_the_rest_of_the_subnet() {
    cnet_testkit::require_root!();
    let w = World::new();
    network(&w, "nat", "NAT", &["10.142.0.0/29"]); // .2 to .6
    let make = |name: &str| -> Endpoint {
        w.client().post("/endpoints", &json!({"Name": name, "HostComputeNetwork": "nat"})).unwrap()
    };
    let ip = |e: &Endpoint| e.ip_configurations[0].ip_address.to_string();
    let first = make("a");
    let second = make("b");
    assert_eq!((ip(&first), ip(&second)), ("10.142.0.2".into(), "10.142.0.3".into()));
    w.client().delete(&format!("/endpoints/{}", first.id)).unwrap();
    let third = make("c");
    assert_eq!(ip(&third), "10.142.0.4", "not the address just freed");
    assert_ne!(third.mac_address, first.mac_address);
    let (d, e) = (make("d"), make("e"));
    assert_eq!((ip(&d), ip(&e)), ("10.142.0.5".into(), "10.142.0.6".into()));
    assert_eq!(ip(&make("f")), "10.142.0.2", "wrapped around to the freed one");
}
