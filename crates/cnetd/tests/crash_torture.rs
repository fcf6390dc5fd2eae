//! Crash torture: concurrent clients run random operations (namespaces,
//! container and VM endpoints (veths and TAPs) with port mappings, ACLs and
//! bandwidth caps, Transparent macvlans with their anti-spoofing guards,
//! ACLs and caps in their namespaces, static and leased from a DHCP
//! server on the LAN, policy changes,
//! deletes) while cnetd is killed with SIGKILL at random moments, also in
//! the middle of requests, and restarted. After every restart:
//! - every acknowledged operation is there, and a refused one changed nothing;
//! - every unacknowledged one (its answer lost to the kill) is there whole
//!   or not at all: an endpoint is attached to its namespace or absent, a
//!   policy change is the old or the new policy;
//! - `cnet diag` finds no drift (no orphan link, rule or qdisc, nothing
//!   half-made) and nothing in progress;
//! - no address is held by two endpoints;
//! - the namespace files under `/run/netns` are exactly the namespace objects;
//! - a Transparent endpoint's namespace has its guard's chain while the
//!   endpoint is there, and no guard table, ACL table or ifb once it is gone;
//! - the DHCP server holds a lease for exactly the MACs of the endpoints of
//!   the Dhcp network (none left for an endpoint that is gone or was never
//!   made).
//!
//! A second run does the same on a cluster of two hosts with etcd, with
//! containers on an Overlay network and either host's cnetd killed: no
//! address is held twice in the cluster, every endpoint's addresses lie in
//! blocks its host holds, no host keeps a block none of its endpoints uses
//! (one claimed for an endpoint a kill cut is given back), and both hosts'
//! `cnet diag` is clean.
//!
//! `CNET_TORTURE_KILLS` sets the number of kills (12 by default, the CI's
//! short mode), `CNET_TORTURE_SEED` replays a run; the figures of a long
//! run are in `docs/reliability.md`.

mod common;
use cnet_testkit::cluster::ClusterWorld;
use cnet_testkit::lan::DhcpServer;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const CLIENTS: usize = 3;
/// Endpoints per client at most (on a single host).
const MAX_UNITS: usize = 25;

/// A small xorshift generator: the run is replayable from its seed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a client knows of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Present,
    Absent,
    /// The answer was lost: either.
    Unknown,
}

/// One namespace with (at most) one endpoint of the same name.
#[derive(Clone, Debug)]
struct Unit {
    ns: Known,
    ep: Known,
    /// The ACL ports the endpoint may have (`None`: no ACL): one when the
    /// last change was answered, two when its answer was lost.
    acl: BTreeSet<Option<u16>>,
    /// Its endpoint is a macvlan on a Transparent network (no port mappings).
    transparent: bool,
    /// Changed since the last check.
    touched: bool,
}

/// The outcome of one request.
enum Outcome {
    Done,
    Refused(String),
    /// No answer: cut by the kill (`cut`) or sent while cnetd was down.
    Lost {
        cut: bool,
    },
}

fn outcome<T>(r: Result<T, cnet_client::ClientError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Done,
        Err(cnet_client::ClientError::Api(e)) => Outcome::Refused(e.to_string()),
        Err(cnet_client::ClientError::Connect { .. }) => Outcome::Lost { cut: false },
        Err(_) => Outcome::Lost { cut: true },
    }
}

struct Client {
    id: usize,
    tag: String,
    socket: std::path::PathBuf,
    net: String,
    /// The Transparent networks: static addresses, and leased by DHCP.
    lan: String,
    dhcp_lan: String,
    units: BTreeMap<usize, Unit>,
    next: usize,
    ops: usize,
    /// Requests cut by a kill (sent, never answered).
    cut: usize,
    /// The last request found cnetd down.
    down: bool,
    /// Makes only containers on `net` (an Overlay network: no VMs, no
    /// Transparent endpoints, no port mappings).
    containers_only: bool,
    /// Endpoints (and namespaces without one) it keeps at most.
    max_units: usize,
}

impl Client {
    /// Client `id` of cnetd at `socket`, making containers on network `net`
    /// (and, once given networks for them, VMs and Transparent endpoints).
    fn new(id: usize, tag: &str, socket: &std::path::Path, net: &str) -> Client {
        Client {
            id,
            tag: tag.to_string(),
            socket: socket.to_path_buf(),
            net: net.to_string(),
            lan: String::new(),
            dhcp_lan: String::new(),
            units: BTreeMap::new(),
            next: 0,
            ops: 0,
            cut: 0,
            down: false,
            containers_only: false,
            max_units: MAX_UNITS,
        }
    }

    fn name(&self, n: usize) -> String {
        format!("{}-c{}-{n}", self.tag, self.id)
    }

    fn api(&self) -> cnet_client::Client {
        cnet_client::Client::new(&self.socket)
    }

    fn note(&mut self, o: &Outcome) {
        self.ops += 1;
        match o {
            Outcome::Lost { cut: true } => self.cut += 1,
            Outcome::Lost { cut: false } => self.down = true,
            _ => {}
        }
    }

    /// One random operation.
    fn step(&mut self, rng: &mut Rng) {
        let present: Vec<usize> = self.units.iter().filter(|(_, u)| u.ep == Known::Present).map(|(n, _)| *n).collect();
        let with_policies = &present;
        let bare: Vec<usize> = self
            .units
            .iter()
            .filter(|(_, u)| u.ns == Known::Present && u.ep == Known::Absent)
            .map(|(n, _)| *n)
            .collect();
        // Each client keeps at most `max_units` endpoints: creates outnumber
        // deletes; and at most `max_units` namespaces without one.
        let full = present.len() >= self.max_units;
        if bare.len() > self.max_units {
            let n = bare[rng.below(bare.len() as u64) as usize];
            return self.delete_namespace(n);
        }
        match rng.below(10) {
            0..=3 if !full => self.create(rng),
            0..=3 => {
                let n = present[rng.below(present.len() as u64) as usize];
                self.delete_endpoint(n)
            }
            4..=5 if !with_policies.is_empty() => {
                let n = with_policies[rng.below(with_policies.len() as u64) as usize];
                self.change_acl(n, rng)
            }
            6..=7 if !present.is_empty() => {
                let n = present[rng.below(present.len() as u64) as usize];
                self.delete_endpoint(n)
            }
            8..=9 if !bare.is_empty() => {
                let n = bare[rng.below(bare.len() as u64) as usize];
                self.delete_namespace(n)
            }
            _ if !full => self.create(rng),
            _ => {}
        }
    }

    fn create(&mut self, rng: &mut Rng) {
        let n = self.next;
        self.next += 1;
        let name = self.name(n);
        // Of ten units, two are VMs (their endpoints TAPs on the bridge),
        // two containers on a Transparent network (a macvlan of the
        // uplink), one of them leasing its address by DHCP.
        let kind = if self.containers_only { 9 } else { rng.below(10) };
        let transparent = kind == 2 || kind == 3;
        let ns_body = if kind <= 1 { json!({"Name": name, "Type": "Guest"}) } else { json!({"Name": name}) };
        let o = outcome::<Value>(self.api().post("/namespaces", &ns_body));
        self.note(&o);
        let ns = match o {
            Outcome::Done => Known::Present,
            Outcome::Refused(e) => panic!("creating namespace {name} was refused: {e}"),
            Outcome::Lost { .. } => Known::Unknown,
        };
        self.units.insert(n, Unit { ns, ep: Known::Absent, acl: BTreeSet::from([None]), transparent, touched: true });
        if ns != Known::Present {
            return;
        }
        let port = 20000 + (self.id * 2000 + n % 2000) as u16;
        // Overlay networks take no port mappings.
        let mut policies = if self.containers_only { vec![] } else { vec![port_map(6, port, 80)] };
        if rng.below(3) == 0 {
            policies
                .push(json!({"Type": "Bandwidth", "Settings": {"EgressRate": 50_000_000, "EgressBurst": 1_000_000}}));
        }
        let body = if transparent {
            let lan = if kind == 3 { &self.dhcp_lan } else { &self.lan };
            policies.retain(|p| p["Type"] != "PortMapping");
            json!({"Name": name, "HostComputeNetwork": lan, "HostComputeNamespace": name, "Policies": policies})
        } else {
            json!({"Name": name, "HostComputeNetwork": self.net, "HostComputeNamespace": name, "Policies": policies})
        };
        let o = outcome::<Value>(self.api().post("/endpoints", &body));
        self.note(&o);
        let unit = self.units.get_mut(&n).expect("just made");
        unit.ep = match o {
            Outcome::Done => Known::Present,
            // A host port another unit holds: nothing was made.
            Outcome::Refused(e) if e.contains("PortAlreadyExists") => Known::Absent,
            Outcome::Refused(e) => panic!("creating endpoint {name} was refused: {e}"),
            Outcome::Lost { .. } => Known::Unknown,
        };
    }

    fn change_acl(&mut self, n: usize, rng: &mut Rng) {
        let port = 1000 + rng.below(1000) as u16;
        let port_mapping = 20000 + (self.id * 2000 + n % 2000) as u16;
        let acl = json!({"Type": "ACL", "Settings": {"Action": "Block", "Direction": "In", "Protocols": "6",
            "LocalPorts": port.to_string(), "Priority": 100}});
        let bare = self.containers_only || self.units[&n].transparent;
        let policies = if bare { vec![acl] } else { vec![port_map(6, port_mapping, 80), acl] };
        let body = json!({"ResourceType": "Policy", "RequestType": "Update", "Settings": {"Policies": policies}});
        let o = outcome::<Value>(self.api().patch(&format!("/endpoints/{}", self.name(n)), &body));
        self.note(&o);
        let unit = self.units.get_mut(&n).expect("a unit");
        match o {
            Outcome::Done => unit.acl = BTreeSet::from([Some(port)]),
            Outcome::Refused(e) => panic!("changing the ACL of {n} was refused: {e}"),
            Outcome::Lost { .. } => {
                unit.acl.insert(Some(port));
            }
        }
    }

    fn delete_endpoint(&mut self, n: usize) {
        let known = self.delete("endpoints", n);
        let unit = self.units.get_mut(&n).expect("a unit");
        (unit.ep, unit.touched) = (known, true);
    }

    fn delete_namespace(&mut self, n: usize) {
        let known = self.delete("namespaces", n);
        let unit = self.units.get_mut(&n).expect("a unit");
        (unit.ns, unit.touched) = (known, true);
    }

    /// Deletes unit `n`'s object of `kind`; what is known of it after.
    fn delete(&mut self, kind: &str, n: usize) -> Known {
        let o = outcome(self.api().delete(&format!("/{kind}/{}", self.name(n))));
        self.note(&o);
        match o {
            Outcome::Done => Known::Absent,
            Outcome::Refused(e) => panic!("deleting {kind} {n} was refused: {e}"),
            Outcome::Lost { .. } => Known::Unknown,
        }
    }
}

/// The ACL port of an endpoint as cnetd answers it.
fn acl_of(ep: &Value) -> Option<u16> {
    ep["Policies"]
        .as_array()?
        .iter()
        .find(|p| p["Type"] == "ACL")
        .and_then(|p| p["Settings"]["LocalPorts"].as_str()?.parse().ok())
}

/// A Transparent unit's namespace: its endpoint's guard chain in the
/// namespace's `netdev cnetguard` table while the endpoint is there; no
/// guard table, ACL tables (`inet cnetpol`, `netdev cnetpol`) or ifb after.
fn guard_agrees(w: &World, ns: &str, ep: Option<&&Value>) -> Result<(), String> {
    let path = cnet_dataplane::netns::path_of(ns);
    if ep.is_none() {
        for family in ["inet", "netdev"] {
            let acls = w.exec_in(&path, &["nft", "list", "table", family, "cnetpol"]);
            if acls.status.success() {
                return Err(format!("namespace {ns} has an ACL table ({family}) with no endpoint"));
            }
        }
        let ifbs = w.exec_in(&path, &["ip", "-o", "link", "show", "type", "ifb"]);
        if !ifbs.stdout.is_empty() {
            return Err(format!(
                "namespace {ns} has an ifb with no endpoint: {}",
                String::from_utf8_lossy(&ifbs.stdout)
            ));
        }
    }
    let listed = w.exec_in(&path, &["nft", "list", "table", "netdev", "cnetguard"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    match ep {
        Some(ep) => {
            let id = ep["ID"].as_str().unwrap_or_default().replace('-', "");
            let chain = format!("chain g_{} ", &id[..16.min(id.len())]);
            if table.contains(&chain) {
                Ok(())
            } else {
                Err(format!("endpoint {ns} has no guard chain in its namespace: {table}"))
            }
        }
        None if listed.status.success() => Err(format!("namespace {ns} has a guard table with no endpoint: {table}")),
        None => Ok(()),
    }
}

fn agrees(known: Known, present: bool) -> bool {
    known == Known::Unknown || (known == Known::Present) == present
}

/// Checks every invariant against what the clients know, then settles
/// what they did not know; `Err` names each violation.
fn check(w: &World, clients: &[Arc<Mutex<Client>>], dhcp: &(String, DhcpServer)) -> Result<(), Vec<String>> {
    let api = w.client();
    let (eps, nss, mut bad) = check_units(&api, clients, |ns, ep| guard_agrees(w, ns, ep));
    bad.extend(no_address_twice(&eps));
    // The server's leases are the Dhcp network's endpoints (a release is
    // sent before its delete is answered; the server takes a moment).
    let mac = |m: &str| m.to_lowercase().replace('-', ":");
    let (dhcp_net, server) = dhcp;
    let leased: BTreeSet<String> = eps
        .iter()
        .filter(|e| e["HostComputeNetwork"] == dhcp_net.as_str())
        .map(|e| mac(e["MacAddress"].as_str().unwrap_or("?")))
        .collect();
    let held = || -> BTreeSet<String> {
        server.leases().iter().filter_map(|l| l.split_whitespace().nth(1)).map(mac).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while held() != leased && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if held() != leased {
        bad.push(format!("the DHCP server holds leases for {:?}, the endpoints are {leased:?}", held()));
    }
    bad.extend(netns_files_agree(&w.tag, &nss));
    bad.extend(nothing_half_done(&api));
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}

/// The endpoints and namespaces cnetd at `api` answers, and what disagrees
/// with what `clients` know of their units (whose guards `guard` checks);
/// what the clients did not know is settled.
fn check_units(
    api: &cnet_client::Client,
    clients: &[Arc<Mutex<Client>>],
    guard: impl Fn(&str, Option<&&Value>) -> Result<(), String>,
) -> (Vec<Value>, Vec<Value>, Vec<String>) {
    let mut bad = Vec::new();
    let eps: Vec<Value> = api.get("/endpoints").expect("list endpoints");
    let nss: Vec<Value> = api.get("/namespaces").expect("list namespaces");
    let ep_by_name: BTreeMap<&str, &Value> = eps.iter().filter_map(|e| Some((e["Name"].as_str()?, e))).collect();
    let ns_by_name: BTreeMap<&str, &Value> = nss.iter().filter_map(|n| Some((n["Name"].as_str()?, n))).collect();
    for c in clients {
        let mut c = c.lock().unwrap();
        let names: Vec<(usize, String)> = c.units.keys().map(|n| (*n, c.name(*n))).collect();
        for (n, name) in names {
            let unit = c.units.get_mut(&n).unwrap();
            let (ns, ep) = (ns_by_name.get(name.as_str()), ep_by_name.get(name.as_str()));
            if !agrees(unit.ns, ns.is_some()) {
                bad.push(format!("namespace {name}: known {:?}, present {}", unit.ns, ns.is_some()));
            }
            if !agrees(unit.ep, ep.is_some()) {
                bad.push(format!("endpoint {name}: known {:?}, present {}", unit.ep, ep.is_some()));
            }
            if let Some(ep) = ep {
                // Whole: attached to its own namespace.
                let attached = ns.is_some_and(|ns| ep["HostComputeNamespace"] == ns["ID"]);
                if !attached {
                    bad.push(format!("endpoint {name} is not attached to its namespace: {ep}"));
                }
                let acl = acl_of(ep);
                if !unit.acl.contains(&acl) {
                    bad.push(format!("endpoint {name} has ACL port {acl:?}, expected one of {:?}", unit.acl));
                }
                unit.acl = BTreeSet::from([acl]);
            }
            // Every guard that is there; a gone one's table, once after its delete.
            if unit.transparent && ns.is_some() && (ep.is_some() || std::mem::take(&mut unit.touched)) {
                if let Err(e) = guard(&name, ep) {
                    bad.push(e);
                }
            }
            unit.ns = if ns.is_some() { Known::Present } else { Known::Absent };
            unit.ep = if ep.is_some() { Known::Present } else { Known::Absent };
        }
    }
    (eps, nss, bad)
}

/// No address held by two of `eps`.
fn no_address_twice(eps: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut seen = BTreeMap::new();
    for e in eps {
        for ip in e["IpConfigurations"].as_array().into_iter().flatten() {
            let ip = ip["IpAddress"].as_str().unwrap_or_default().to_string();
            if let Some(other) = seen.insert(ip.clone(), e["Name"].clone()) {
                bad.push(format!("address {ip} is held by {other} and {}", e["Name"]));
            }
        }
    }
    bad
}

/// The namespace files of the run (named `<tag>-c…`) are exactly the
/// namespace objects `nss` (a VM's namespace, Guest, has no file).
fn netns_files_agree(tag: &str, nss: &[Value]) -> Vec<String> {
    let prefix = format!("{tag}-c");
    let files: BTreeSet<String> = std::fs::read_dir(cnet_dataplane::netns::NETNS_DIR)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let files: BTreeSet<&str> = files.iter().map(String::as_str).filter(|f| f.starts_with(&prefix)).collect();
    let objects: BTreeSet<&str> = nss
        .iter()
        .filter(|ns| ns["Type"] != "Guest")
        .filter_map(|ns| ns["Name"].as_str())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if files == objects {
        vec![]
    } else {
        vec![format!("namespace files {files:?} are not the namespace objects {objects:?}")]
    }
}

/// `cnet diag` at `api`: the kernel is what the store says, nothing in progress.
fn nothing_half_done(api: &cnet_client::Client) -> Vec<String> {
    let diag: Value = api.get("/diag").expect("diag");
    let drift = diag["Drift"].as_array().into_iter().flatten().map(|d| format!("drift: {}", d["Message"]));
    let in_progress = diag["Warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["Kind"] == "InProgress")
        .map(|w| format!("in progress after the restart: {}", w["Message"]));
    drift.chain(in_progress).collect()
}

/// One torture run: its name, kills and seed (from `CNET_TORTURE_KILLS`
/// and `CNET_TORTURE_SEED`), and what stops its clients.
struct Run {
    what: &'static str,
    kills: usize,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
}

impl Run {
    fn new(what: &'static str) -> Run {
        let kills: usize = std::env::var("CNET_TORTURE_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(12);
        let seed: u64 = std::env::var("CNET_TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("{what}: {kills} kills, CNET_TORTURE_SEED={seed}");
        Run { what, kills, seed, started: Instant::now(), stop: Arc::default() }
    }

    /// Starts a thread per client, stepping it until the run stops; each
    /// request holds its client's gate (`gate_of(client index)`) open. The
    /// run's time counts from here.
    fn start_clients(
        &mut self,
        clients: &[Arc<Mutex<Client>>],
        gate_of: impl Fn(usize) -> Arc<RwLock<()>>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        self.started = Instant::now();
        let (seed, stop) = (self.seed, &self.stop);
        clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (c, gate, stop) = (c.clone(), gate_of(i), stop.clone());
                let mut rng = Rng(seed.wrapping_mul(i as u64 * 2 + 3) | 1);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let down = {
                            let _open = gate.read().unwrap();
                            let mut c = c.lock().unwrap();
                            c.step(&mut rng);
                            std::mem::take(&mut c.down)
                        };
                        if down {
                            // cnetd is down: let the restart in.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect()
    }

    /// Stops the clients, prints the run's figures and fails on any violation.
    fn finish(&self, workers: Vec<std::thread::JoinHandle<()>>, clients: &[Arc<Mutex<Client>>], violations: &[String]) {
        let (what, kills, seed) = (self.what, self.kills, self.seed);
        self.stop.store(true, Ordering::Relaxed);
        for t in workers {
            t.join().expect("a client panicked (an operation was refused: see above)");
        }
        let (ops, cut) = clients.iter().map(|c| c.lock().unwrap()).fold((0, 0), |(o, l), c| (o + c.ops, l + c.cut));
        eprintln!(
            "{what}: {kills} kills, {ops} requests ({cut} cut by a kill mid-request), {} violations, {:.0} s",
            violations.len(),
            self.started.elapsed().as_secs_f64()
        );
        assert!(violations.is_empty(), "{} violations (seed {seed}): {violations:?}", violations.len());
        assert!(ops > kills, "the clients did work between the kills");
        assert!(cut > 0, "some kill hit a request in flight");
    }
}

/// After host `h` of the cluster restarted (every client stopped): each
/// host's units as its clients know them; no address twice in the
/// cluster; every endpoint's addresses in blocks its host holds and every
/// block a host holds used by one of its endpoints (a block claimed for an
/// endpoint the kill cut is given back); the namespace files; `cnet diag`
/// clean on both hosts.
fn check_cluster(
    w: &ClusterWorld,
    h: usize,
    net: &str,
    clients: &[Vec<Arc<Mutex<Client>>>],
) -> Result<(), Vec<String>> {
    let mut bad = Vec::new();
    let (mut eps, mut nss) = (Vec::new(), Vec::new());
    for (i, of_host) in clients.iter().enumerate() {
        let (e, n, b) = check_units(&w.client(i), of_host, |_, _| Ok(()));
        eps.push(e);
        nss.extend(n);
        bad.extend(b);
    }
    bad.extend(no_address_twice(&eps.concat()));
    bad.extend(netns_files_agree(&w.tag, &nss));
    // Blocks as etcd has them (host h's view, reloaded at its start);
    // releases run in the background and views follow etcd's events.
    let blocks_agree = || -> Vec<String> {
        let view = w.status(h);
        let mut bad = Vec::new();
        for (i, eps) in eps.iter().enumerate() {
            let Some(me) = w.status(i).host.map(|x| x.id) else {
                bad.push(format!("host {i} has not joined"));
                continue;
            };
            let mine: Vec<ipnet::IpNet> = view
                .blocks
                .iter()
                .filter(|b| b.host == me && b.network.to_string() == net)
                .filter_map(|b| b.block.parse().ok())
                .collect();
            let ips: Vec<std::net::IpAddr> = eps
                .iter()
                .flat_map(|e| e["IpConfigurations"].as_array().cloned().unwrap_or_default())
                .filter_map(|c| c["IpAddress"].as_str()?.parse().ok())
                .collect();
            for ip in ips.iter().filter(|ip| !mine.iter().any(|b| b.contains(*ip))) {
                bad.push(format!("host {i}'s endpoint address {ip} is in none of its blocks {mine:?}"));
            }
            for b in mine.iter().filter(|b| !ips.iter().any(|ip| b.contains(ip))) {
                bad.push(format!("host {i} holds block {b} with no endpoint in it"));
            }
        }
        bad.extend(
            (0..w.hosts.len())
                .flat_map(|i| nothing_half_done(&w.client(i)).into_iter().map(move |d| format!("host {i}: {d}"))),
        );
        bad
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = blocks_agree();
    while !last.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        last = blocks_agree();
    }
    bad.extend(last);
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}

#[test]
fn cnetd_killed_at_random_moments_loses_nothing_acknowledged_and_leaves_nothing_half_done() {
    cnet_testkit::require_root!();
    let mut run = Run::new("crash torture");
    let (kills, seed) = (run.kills, run.seed);
    let mut w = World::new();
    let net = network(&w, "torture", "NAT", &["10.141.0.0/16"]);
    // Two Transparent networks on the uplink: static addresses below
    // .128, and leased ones from the LAN's server above .200.
    let on_uplink = |name: &str, ipam: Value| -> cnet_model::Network {
        let body = json!({"Name": name, "Type": "Transparent", "Ipams": [ipam],
            "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "uplink0"}}]});
        w.client().post("/networks", &body).unwrap_or_else(|e| panic!("create network {name}: {e}"))
    };
    let lan = on_uplink("torture-lan", json!({"Type": "Static", "Subnets": [{"IpAddressPrefix": "198.18.0.0/25"}]}));
    let dhcp_lan = on_uplink("torture-dhcp", json!({"Type": "Dhcp"}));
    let dhcp = (dhcp_lan.id.to_string(), DhcpServer::start(&w, "198.18.0.200", "198.18.0.250", 20));
    let gate = Arc::new(RwLock::new(()));
    let clients: Vec<Arc<Mutex<Client>>> = (0..CLIENTS)
        .map(|id| {
            Arc::new(Mutex::new(Client {
                lan: lan.id.to_string(),
                dhcp_lan: dhcp_lan.id.to_string(),
                ..Client::new(id, &w.tag, &w.socket, &net.id.to_string())
            }))
        })
        .collect();
    let workers = run.start_clients(&clients, |_| gate.clone());
    let mut rng = Rng(seed);
    let mut violations = Vec::new();
    for kill in 1..=kills {
        std::thread::sleep(Duration::from_millis(50 + rng.below(450)));
        w.kill_daemon();
        // The clients' requests now fail; once the last one has, they wait here.
        let _closed = gate.write().unwrap();
        w.start_daemon();
        if let Err(bad) = check(&w, &clients, &dhcp) {
            eprintln!("kill {kill}: {} violations:\n  {}", bad.len(), bad.join("\n  "));
            violations.extend(bad);
        }
    }
    run.finish(workers, &clients, &violations);
}

/// Overlay endpoints on a cluster of two hosts (etcd on the underlay): two
/// clients per host make and delete containers on one Overlay network
/// while either host's cnetd is killed at random moments and restarted.
/// Each client keeps one endpoint at most, so a host's endpoints often
/// drop to none: its blocks are given back and claimed again all the time,
/// and kills land between a claim and its endpoint.
#[test]
fn overlay_endpoints_on_two_hosts_survive_kills_of_either_cnetd() {
    cnet_testkit::require_root!();
    let mut run = Run::new("overlay crash torture");
    let (kills, seed) = (run.kills, run.seed);
    let mut w = ClusterWorld::new(2);
    for i in 0..2 {
        w.start_daemon(i);
    }
    let healthy = |w: &ClusterWorld, i: usize| w.status(i).health == "Healthy" && w.status(i).hosts.len() == 2;
    w.within(10, "both hosts healthy", || (0..2).all(|i| healthy(&w, i)));
    let vsid = json!([{"Type": "VSID", "Settings": {"IsolationId": 5400}}]);
    let def = json!({"Name": "torture-ov", "Type": "Overlay", "Ipams": [{"Subnets": [
        {"IpAddressPrefix": "10.242.0.0/16", "Policies": vsid},
        {"IpAddressPrefix": "fd42::/64", "Policies": vsid}]}]});
    let net: cnet_model::Network = w.client(0).post("/networks", &def).expect("create the Overlay network");
    let net_id = net.id.to_string();
    w.within(5, "the network on both hosts", || {
        (0..2).all(|i| w.client(i).get::<Value>(&format!("/networks/{net_id}")).is_ok())
    });
    let clients: Vec<Vec<Arc<Mutex<Client>>>> = (0..2)
        .map(|host| {
            (0..2)
                .map(|k| {
                    Arc::new(Mutex::new(Client {
                        containers_only: true,
                        max_units: 1,
                        ..Client::new(host * 2 + k, &w.tag, &w.hosts[host].socket, &net_id)
                    }))
                })
                .collect()
        })
        .collect();
    let gates: Vec<Arc<RwLock<()>>> = (0..2).map(|_| Arc::default()).collect();
    let all: Vec<Arc<Mutex<Client>>> = clients.concat();
    let workers = run.start_clients(&all, |i| gates[i / 2].clone());
    let mut rng = Rng(seed);
    let mut violations = Vec::new();
    for kill in 1..=kills {
        std::thread::sleep(Duration::from_millis(50 + rng.below(450)));
        let h = rng.below(2) as usize;
        w.kill_daemon(h);
        let _closed = gates[h].write().unwrap();
        w.start_daemon(h);
        w.within(20, "the restarted host healthy", || healthy(&w, h));
        // The other host's clients stop too: blocks stay put while checked.
        let _also_closed = gates[1 - h].write().unwrap();
        if let Err(bad) = check_cluster(&w, h, &net_id, &clients) {
            eprintln!("kill {kill} (host {h}): {} violations:\n  {}", bad.len(), bad.join("\n  "));
            violations.extend(bad);
        }
    }
    run.finish(workers, &all, &violations);
}
