//! The test guest on a TAP in a test world's LAN namespace, configured by
//! a real DHCP server (dnsmasq on the TAP's host side): the stand-in for a
//! VM that the VM-NIC tests build on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cnet_testkit::lan::DhcpServer;
use cnet_testkit::{bin, probe, World};

/// The guest process, killed when the test ends however it ends.
struct Guest(Child);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The guest's JSON lines, as they come.
fn spawn_guest(w: &World, tap: &str, mac: &str) -> (Guest, mpsc::Receiver<String>) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", w.lan_path()))
        .arg(bin("cnet-guest"))
        .args([tap, mac, "--port", "8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cnet-guest");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Guest(child), rx)
}

/// The next line that mentions `event`, within `secs`.
fn next_event(lines: &mpsc::Receiver<String>, event: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("no {event} event within {secs} s"));
        if line.contains(&format!("\"{event}\"")) {
            return line;
        }
    }
}

fn exec(w: &World, args: &[&str]) {
    let out = w.exec_in(&w.lan_path(), args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_guest_takes_a_lease_on_its_tap_serves_tcp_and_stops_cleanly_when_the_tap_goes() {
    cnet_testkit::require_root!();
    let w = World::bare();
    // The TAP (made as cnet makes VM NICs) with the "switch" side's address.
    let tap = cnet_dataplane::tap::TapSpec {
        name: cnet_dataplane::IfName::new("gtap0").unwrap(),
        vnet_hdr: true,
        multi_queue: false,
        owner: None,
        group: None,
    };
    cnet_dataplane::netns::run_in(&w.lan_path(), move || cnet_dataplane::tap::create(&tap)).unwrap().unwrap();
    exec(&w, &["ip", "address", "add", "198.18.5.1/24", "dev", "gtap0"]);
    exec(&w, &["ip", "link", "set", "gtap0", "up"]);
    let dhcp = DhcpServer::start_on(&w, &w.lan_path(), "gtap0", "198.18.5.1", "198.18.5.100", "198.18.5.150", 60);

    let mac = "0a:58:c6:12:05:64";
    let (mut guest, lines) = spawn_guest(&w, "gtap0", mac);
    let configured = next_event(&lines, "configured", 15);
    assert!(configured.contains("198.18.5.1"), "router and DNS from the lease: {configured}");
    let addr = configured.split("\"address\":\"").nth(1).unwrap().split('/').next().unwrap().to_string();
    assert!(dhcp.leases().iter().any(|l| l.contains(mac) && l.contains(&addr)), "{:?}", dhcp.leases());

    assert!(probe::ping(&w.lan_path(), &addr), "the guest answers ping");
    let mut conn = probe::tcp_connect(&w.lan_path(), &format!("{addr}:8080")).expect("the guest accepts TCP");
    assert_eq!(conn.echo("hello").unwrap(), "hello", "and echoes");
    let seen = Some(conn.seen_as.clone());
    assert_eq!(seen.as_deref(), Some("198.18.5.1"), "the guest serves TCP and sees the peer");

    // The device deleted under the guest: a clean error and exit 3, no hang.
    exec(&w, &["ip", "link", "del", "gtap0"]);
    next_event(&lines, "device-error", 5);
    assert_eq!(guest.0.wait().unwrap().code(), Some(3));
}
