//! Name resolution side by side: cnetd's DNS server, aardvark-dns (Debian's
//! 1.4.0, Podman's resolver) and dnsmasq (2.89, no cache, as the others
//! keep none), on the same names, from a client namespace each:
//! - queries per second and latency (dnsperf 2.10, `-v` for per-query
//!   latencies) for a local name and for a forwarded one (all three forward
//!   to the same upstream dnsmasq on the LAN);
//! - the time from making a name to its first answer: cnet's endpoint
//!   create against a config line plus SIGHUP (how netavark updates
//!   aardvark-dns) and a hosts-file line plus SIGHUP for dnsmasq.
//!
//! Each with 10 and 1,000 names on the network.

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cnet_dataplane::cmd::Cmd;
use cnet_dataplane::netns::run_in;
use serde_json::{json, Value};

use crate::{ms, stats, Stats};

pub struct Row {
    pub system: &'static str,
    pub names: usize,
    pub local_qps: f64,
    pub local: Stats,
    pub forwarded_qps: f64,
    pub forwarded: Stats,
    pub appear: Stats,
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DNS query for `name` (type A, recursion desired) with ID `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Asks `server` for `name` from `netns` every millisecond until it has an
/// answer with an address (ANCOUNT > 0); the time since `start`.
fn until_answered(netns: &str, server: &str, name: &str, start: Instant) -> Result<Duration> {
    let sock = run_in(netns, || UdpSocket::bind("0.0.0.0:0"))??;
    sock.set_read_timeout(Some(Duration::from_millis(1)))?;
    let mut buf = [0u8; 512];
    for id in 0..5000u16 {
        sock.send_to(&query(name, id), (server, 53))?;
        let deadline = Instant::now() + Duration::from_millis(1);
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                if n >= 12 && buf[..2] == id.to_be_bytes() && u16::from_be_bytes([buf[6], buf[7]]) > 0 {
                    return Ok(start.elapsed());
                }
            }
        }
    }
    bail!("{name} never answered at {server}")
}

/// dnsperf from `netns` against `server` for `seconds`, asking `name` (A);
/// queries per second and per-query latencies.
fn dnsperf(netns: &str, server: &str, name: &str, seconds: u64, work: &Path) -> Result<(f64, Stats)> {
    let input = work.join(format!("dnsperf-{name}.txt"));
    std::fs::write(&input, format!("{name} A\n"))?;
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["dnsperf", "-s", server, "-l", &seconds.to_string(), "-c", "4", "-q", "64", "-t", "2", "-v", "-d"])
        .arg(&input)
        .output()
        .context("dnsperf (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("dnsperf against {server}: {text}"))?;
    let times: Vec<Duration> = text
        .lines()
        .filter(|l| l.starts_with("> NOERROR"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect();
    anyhow::ensure!(!times.is_empty(), "dnsperf against {server} got no NOERROR answer for {name}");
    Ok((qps, stats(times)))
}

fn batch(netns: &str, script: String) -> Result<()> {
    Cmd::new("ip").args(["-batch", "-"]).stdin(script).netns(Some(netns)).run().context("DNS bench links")?;
    Ok(())
}

/// A bridge with its client namespace, removed when dropped (the next
/// run's bridge has the same address).
struct Switch {
    host: String,
    br: String,
    ns: String,
    path: String,
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = Cmd::new("ip").args(["link", "del", &self.br]).netns(Some(&self.host)).run();
        crate::netns_del(&self.ns);
    }
}

/// A bridge `br` with `gw/16` in the host namespace and a client namespace
/// behind a veth at `client/16`.
fn switch(host: &str, tag: &str, br: &str, gw: &str, client: &str) -> Result<Switch> {
    let ns = format!("{tag}-{br}");
    let path = crate::netns_add(&ns)?;
    let (a, b) = (format!("{br}h"), format!("{br}c"));
    batch(
        host,
        format!(
            "link add {br} type bridge\naddress add {gw}/16 dev {br}\nlink set {br} up\n\
             link add {a} type veth peer name {b} netns {ns}\nlink set {a} master {br}\nlink set {a} up\n"
        ),
    )?;
    batch(
        &path,
        format!("link set lo up\naddress add {client}/16 dev {b}\nlink set {b} up\nroute add default via {gw}\n"),
    )?;
    Ok(Switch { host: host.to_string(), br: br.to_string(), ns, path })
}

pub struct Dns {
    pub client: cnet_client::Client,
    pub tag: String,
    pub host: String,
    pub lan: String,
    pub work: PathBuf,
    pub reps: usize,
    pub seconds: u64,
}

const UPSTREAM: &str = "198.18.0.1";
const FORWARDED: &str = "fwd.bench.test";

impl Dns {
    fn upstream(&self) -> Result<Daemon> {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.lan))
            .args(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .arg(format!("--listen-address={UPSTREAM}"))
            .arg(format!("--address=/{FORWARDED}/198.18.0.77"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("dnsmasq")?;
        Ok(Daemon(child))
    }

    pub fn run(&self) -> Result<Vec<Row>> {
        let _up = self.upstream()?;
        std::thread::sleep(Duration::from_millis(300));
        let mut rows = Vec::new();
        for names in [10usize, 1000] {
            rows.push(self.cnet(names)?);
            rows.push(self.aardvark(names)?);
            rows.push(self.dnsmasq(names)?);
        }
        Ok(rows)
    }

    fn cnet(&self, names: usize) -> Result<Row> {
        let c = &self.client;
        let net: Value = c.post(
            "/networks",
            &json!({"Name": format!("dns{names}"), "Type": "NAT", "Dns": {"ServerList": [UPSTREAM]},
                "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.150.0.0/16"}]}]}),
        )?;
        let id = net["ID"].as_str().unwrap_or_default().to_string();
        let ns: Value = c.post("/namespaces", &json!({"Name": format!("{}-dnsc{names}", self.tag)}))?;
        let client_ns = ns["NetnsPath"].as_str().unwrap_or_default().to_string();
        let mut made: Vec<String> = Vec::new();
        let ep: Value = c.post(
            "/endpoints",
            &json!({"Name": "client", "HostComputeNetwork": id, "HostComputeNamespace": ns["ID"]}),
        )?;
        made.push(ep["ID"].as_str().unwrap_or_default().into());
        for i in 0..names {
            let ep: Value = c.post("/endpoints", &json!({"Name": format!("n{i}"), "HostComputeNetwork": id}))?;
            made.push(ep["ID"].as_str().unwrap_or_default().into());
        }
        let gw = "10.150.0.1";
        let (local_qps, local) = dnsperf(&client_ns, gw, "n0", self.seconds, &self.work)?;
        let (forwarded_qps, forwarded) = dnsperf(&client_ns, gw, FORWARDED, self.seconds, &self.work)?;
        let mut times = Vec::new();
        for r in 0..self.reps {
            let name = format!("new{r}");
            let start = Instant::now();
            let ep: Value = c.post("/endpoints", &json!({"Name": name, "HostComputeNetwork": id}))?;
            times.push(until_answered(&client_ns, gw, &name, start)?);
            c.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap_or_default()))?;
        }
        for e in made {
            c.delete(&format!("/endpoints/{e}"))?;
        }
        c.delete(&format!("/namespaces/{}", ns["ID"].as_str().unwrap_or_default()))?;
        c.delete(&format!("/networks/{id}"))?;
        Ok(Row { system: "cnet", names, local_qps, local, forwarded_qps, forwarded, appear: stats(times) })
    }

    fn aardvark(&self, names: usize) -> Result<Row> {
        let dir = self.work.join(format!("aardvark-{names}"));
        std::fs::create_dir_all(&dir)?;
        let sw = switch(&self.host, &self.tag, &format!("aab{names}"), "10.151.0.1", "10.151.0.2")?;
        let client_ns = sw.path.clone();
        let conf = dir.join("bench");
        let mut text = format!("10.151.0.1 {UPSTREAM}\n");
        text.push_str(&format!("{:064x} 10.151.0.2  client\n", 1));
        for i in 0..names {
            text.push_str(&format!("{:064x} 10.151.{}.{}  n{i}\n", i + 2, (i + 3) / 250, (i + 3) % 250 + 1));
        }
        std::fs::write(&conf, &text)?;
        let started = Command::new("timeout")
            .args(["10", "nsenter", &format!("--net={}", self.host), "/usr/lib/podman/aardvark-dns", "--config"])
            .arg(&dir)
            .args(["-p", "53", "run"])
            .status()
            .context("aardvark-dns (apt-get install aardvark-dns)")?;
        anyhow::ensure!(started.success(), "aardvark-dns did not start");
        let pid: i32 = std::fs::read_to_string(dir.join("aardvark.pid"))?.trim().parse()?;
        let _stop = scopeguard(pid);
        if let Err(e) = until_answered(&client_ns, "10.151.0.1", "n0", Instant::now()) {
            let ss = Command::new("nsenter").arg(format!("--net={}", self.host)).args(["ss", "-ulnp"]).output()?;
            bail!("{e}; aardvark-dns (pid {pid}) with {}: {}", conf.display(), String::from_utf8_lossy(&ss.stdout));
        }
        self.measure("aardvark-dns 1.4.0", names, &client_ns, "10.151.0.1", |r, name| {
            let mut f = std::fs::OpenOptions::new().append(true).open(&conf)?;
            writeln!(f, "{:064x} 10.151.250.{}  {name}", 0xffff + r, r % 250 + 1)?;
            drop(f);
            // SAFETY: kill(2) on the pid aardvark-dns wrote.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            Ok(())
        })
    }

    /// Queries per second for a local and a forwarded name, then `reps`
    /// new names made by `add` (rep, name), each timed until it answers.
    fn measure(
        &self,
        system: &'static str,
        names: usize,
        client_ns: &str,
        server: &str,
        mut add: impl FnMut(usize, &str) -> Result<()>,
    ) -> Result<Row> {
        let (local_qps, local) = dnsperf(client_ns, server, "n0", self.seconds, &self.work)?;
        let (forwarded_qps, forwarded) = dnsperf(client_ns, server, FORWARDED, self.seconds, &self.work)?;
        let mut times = Vec::new();
        for r in 0..self.reps {
            let name = format!("new{r}");
            let start = Instant::now();
            add(r, &name)?;
            times.push(until_answered(client_ns, server, &name, start)?);
        }
        Ok(Row { system, names, local_qps, local, forwarded_qps, forwarded, appear: stats(times) })
    }

    fn dnsmasq(&self, names: usize) -> Result<Row> {
        let sw = switch(&self.host, &self.tag, &format!("dmb{names}"), "10.152.0.1", "10.152.0.2")?;
        let client_ns = sw.path.clone();
        let hosts = self.work.join(format!("dnsmasq-{names}.hosts"));
        let mut text = String::new();
        for i in 0..names {
            text.push_str(&format!("10.152.{}.{} n{i}\n", (i + 3) / 250, (i + 3) % 250 + 1));
        }
        std::fs::write(&hosts, &text)?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.host))
            .args(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=10.152.0.1", "--cache-size=0", &format!("--server={UPSTREAM}")])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("dnsmasq")?;
        let d = Daemon(child);
        until_answered(&client_ns, "10.152.0.1", "n0", Instant::now())?;
        let pid = d.0.id() as i32;
        self.measure("dnsmasq 2.89 (no cache)", names, &client_ns, "10.152.0.1", |r, name| {
            let mut f = std::fs::OpenOptions::new().append(true).open(&hosts)?;
            writeln!(f, "10.152.250.{} {name}", r % 250 + 1)?;
            drop(f);
            // SAFETY: kill(2) on our child.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            Ok(())
        })
    }
}

/// Kills `pid` (aardvark-dns) when dropped.
fn scopeguard(pid: i32) -> impl Drop {
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the pid aardvark-dns wrote.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
        }
    }
    Kill(pid)
}

pub fn print(rows: &[Row], reps: usize, seconds: u64) {
    println!("\n### Name resolution (dnsperf -c 4 -q 64 -l {seconds}; {reps} reps of name creation)\n");
    println!("| server | names | local q/s | local median | p99 | forwarded q/s | forwarded median | p99 | new name answers after: median | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.3} ms | {:.3} ms | {:.0} | {:.3} ms | {:.3} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            r.system,
            r.names,
            r.local_qps,
            ms(r.local.median),
            ms(r.local.p99),
            r.forwarded_qps,
            ms(r.forwarded.median),
            ms(r.forwarded.p99),
            ms(r.appear.median),
            ms(r.appear.p99),
            ms(r.appear.max)
        );
    }
}
