//! cnet next to the host's own firewall: a flushed ruleset and a restarted
//! nftables service are repaired from the ruleset's change events (not by a
//! periodic listing: that one runs every 30 s, far later than the repair is
//! seen here), tables cnet does not own are never changed, and another
//! table's `policy drop` chain is named by `cnet diag` (exit 1) and
//! `GET /health`.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// cnet's tables, as `nft list tables` prints them.
const CNET_TABLES: [&str; 3] = ["table inet cnet", "table inet cnetpol", "table bridge cnetpol"];

/// A user's own table, as the nftables service loads it from its configuration.
const USER_TABLE: &str = "table inet userfw {
	set admins {
		type ipv4_addr
		elements = { 192.0.2.7 }
	}

	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @admins tcp dport 22 accept
	}
}";

fn nft(w: &World, script: &str) {
    let out = w.exec_in(&w.host_path(), &["bash", "-c", &format!("nft -f - <<'EOF'\n{script}\nEOF")]);
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

fn listing(w: &World, args: &[&str]) -> String {
    let out = w.exec_in(&w.host_path(), &[&["nft"][..], args].concat());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How long until all of cnet's tables are back (panics after 5 s).
fn restored_after(w: &World, start: Instant) -> Duration {
    loop {
        let tables = listing(w, &["list", "tables"]);
        if CNET_TABLES.iter().all(|t| tables.lines().any(|l| l.trim() == *t)) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "cnet's tables not restored within 5 s: {tables}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_flushed_ruleset_and_a_restarted_nftables_service_are_repaired_from_the_event_and_other_tables_kept() {
    cnet_testkit::require_root!();
    let w = World::new();
    nft(&w, USER_TABLE);
    let user_before = listing(&w, &["list", "table", "inet", "userfw"]);
    let net = network(&w, "nat", "NAT", &["10.126.0.0/24"]);
    let c = container(
        &w,
        &net,
        "c",
        json!([port_map(6, 8080, 80), acl("Block", "In", json!({"Protocols": "6", "LocalPorts": "81"}))]),
    );
    let _web = probe::tcp_server(&c.path(), "0.0.0.0:80");
    let _other = probe::tcp_server(&c.path(), "0.0.0.0:81");
    let works = |why: &str| {
        assert!(probe::tcp_seen_as(&w.lan_path(), &format!("{HOST_IP}:8080")).is_some(), "{why}: the port mapping");
        assert!(probe::tcp_seen_as(&w.host_path(), &format!("{}:81", c.ip())).is_none(), "{why}: the ACL blocks");
        assert!(probe::tcp_seen_as(&w.host_path(), &format!("{}:80", c.ip())).is_some(), "{why}: the ACL allows");
    };
    works("before");

    // Another tool flushes the whole ruleset.
    let start = Instant::now();
    assert!(w.exec_in(&w.host_path(), &["nft", "flush", "ruleset"]).status.success());
    let took = restored_after(&w, start);
    eprintln!("tables restored {took:?} after nft flush ruleset");
    works("after a flush");

    // The nftables service restarts: its configuration flushes and loads the user's table.
    let start = Instant::now();
    nft(&w, &format!("flush ruleset\n{USER_TABLE}"));
    let took = restored_after(&w, start);
    eprintln!("tables restored {took:?} after a restart of the nftables service");
    works("after a restart of the nftables service");
    assert_eq!(listing(&w, &["list", "table", "inet", "userfw"]), user_before, "the user's table is the user's");

    // One table of cnet's deleted alone.
    let start = Instant::now();
    assert!(w.exec_in(&w.host_path(), &["nft", "delete", "table", "inet", "cnetpol"]).status.success());
    restored_after(&w, start);
    works("after the ACL table was deleted");

    // cnet's own work never touches the user's table.
    let d = container(&w, &net, "d", json!([port_map(17, 5353, 53)]));
    w.client().delete(&format!("/endpoints/{}", d.ep.id)).expect("delete");
    assert_eq!(listing(&w, &["list", "table", "inet", "userfw"]), user_before);
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}

#[test]
fn a_foreign_drop_chain_is_named_by_diag_which_exits_1_and_by_health() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "nat", "NAT", &["10.127.0.0/24"]);
    let _c = container(&w, &net, "c", json!([]));
    let health: Value = w.client().get("/health").expect("health");
    assert_eq!(health["Healthy"], true, "{health}");
    assert_eq!(w.cnet(&["diag"]).status.code(), Some(0));

    // Docker's iptables-nft FORWARD chain, with its policy drop.
    nft(&w, "table ip filter {\n chain FORWARD { type filter hook forward priority 0; policy drop; }\n}");
    let out = w.cnet(&["diag"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ip filter FORWARD (hook forward)") && text.contains("policy drop"), "{text}");
    let health: Value = w.client().get("/health").expect("health");
    assert_eq!(health["Healthy"], false, "{health}");
    assert_eq!(health["Problems"][0]["Kind"], "ForeignDrop", "{health}");
    assert!(health["Problems"][0]["Message"].as_str().unwrap().contains("cnb*"), "says what to do: {health}");

    // The fix the message names: accept cnet's switches in that chain.
    nft(&w, "add rule ip filter FORWARD iifname \"cnb*\" accept\nadd rule ip filter FORWARD oifname \"cnb*\" accept");
    assert!(probe::ping(&_c.path(), LAN_IP), "cnet's traffic passes the other firewall");
    assert!(w.exec_in(&w.host_path(), &["nft", "delete", "table", "ip", "filter"]).status.success());
    let health: Value = w.client().get("/health").expect("health");
    assert_eq!(health["Healthy"], true, "{health}");
    assert_eq!(w.cnet(&["diag"]).status.code(), Some(0));
}
