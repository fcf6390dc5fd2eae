//! Data path: iperf3 TCP throughput and TCP request/response latency (64-byte
//! messages, one connection, Nagle off) on each path, next to a bare veth
//! pair between two namespaces measured in the same run.
//!
//! Paths: cnet container → container on one bridge, container → LAN through
//! NAT, LAN → container through a port mapping; and the port mapping of each
//! incumbent that is part of the run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cnet_dataplane::cmd::Cmd;
use cnet_dataplane::netns::run_in;
use serde_json::{json, Value};

use crate::systems::{Attachment, System};
use crate::{ms, stats, Stats};

/// The port every server listens on inside its namespace (the systems map host ports to 80).
const PORT: u16 = 80;
const MESSAGE: usize = 64;

pub struct PathResult {
    pub name: String,
    pub gbit_per_s: f64,
    pub rr: Stats,
}

/// Settings of one data-path run.
pub struct Datapath {
    pub seconds: u64,
    pub round_trips: usize,
    pub tag: String,
    pub lan: String,
}

fn nsenter(netns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={netns}"));
    c
}

impl Datapath {
    /// Throughput from `client_ns` to `target:port`, served by iperf3 in `server_ns` on [`PORT`].
    pub(crate) fn iperf(&self, server_ns: &str, client_ns: &str, target: &str, port: u16) -> Result<f64> {
        let mut server = nsenter(server_ns)
            .args(["iperf3", "-s", "-1", "-p", &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run iperf3: apt-get install iperf3")?;
        let mut last = String::new();
        // The server needs a moment to listen; a refused client changes nothing.
        for _ in 0..50 {
            let out = nsenter(client_ns)
                .args(["iperf3", "-c", target, "-p", &port.to_string(), "-t", &self.seconds.to_string(), "-J"])
                .output()?;
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
                let _ = server.wait();
                return Ok(bps / 1e9);
            }
            last = format!("{}{}", report["error"], String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.kill();
        bail!("iperf3 to {target}:{port} failed: {last}")
    }

    /// Round trips of [`MESSAGE`] bytes from `client_ns` to `target`, echoed in `server_ns` on [`PORT`].
    fn request_response(&self, server_ns: &str, client_ns: &str, target: String) -> Result<Stats> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let server_ns = server_ns.to_string();
        let server = std::thread::spawn(move || {
            run_in(&server_ns, move || -> Result<()> {
                let listener = TcpListener::bind(("0.0.0.0", PORT))?;
                let _ = ready_tx.send(());
                let (mut s, _) = listener.accept()?;
                s.set_nodelay(true)?;
                let mut buf = [0u8; MESSAGE];
                while s.read_exact(&mut buf).is_ok() {
                    s.write_all(&buf)?;
                }
                Ok(())
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).context("the echo server did not start")?;
        let rounds = self.round_trips;
        let times = run_in(client_ns, move || -> Result<Vec<Duration>> {
            let mut s = TcpStream::connect(&target).with_context(|| format!("connect {target}"))?;
            s.set_nodelay(true)?;
            let mut buf = [7u8; MESSAGE];
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                s.write_all(&buf)?;
                s.read_exact(&mut buf)?;
                times.push(t.elapsed());
            }
            Ok(times)
        })??;
        server.join().expect("echo server thread")??;
        Ok(stats(times))
    }

    pub(crate) fn measure(
        &self,
        name: &str,
        server_ns: &str,
        client_ns: &str,
        target: &str,
        port: u16,
    ) -> Result<PathResult> {
        let rr = self.request_response(server_ns, client_ns, format!("{target}:{port}"))?;
        let gbit_per_s = self.iperf(server_ns, client_ns, target, port)?;
        Ok(PathResult { name: name.to_string(), gbit_per_s, rr })
    }

    /// A bare veth pair between two fresh namespaces: the baseline.
    pub(crate) fn baseline(&self) -> Result<PathResult> {
        let (a, b) = (format!("{}-dpa", self.tag), format!("{}-dpb", self.tag));
        let (pa, pb) = (crate::netns_add(&a)?, crate::netns_add(&b)?);
        let batch = |netns: &str, script: String| {
            Cmd::new("ip").args(["-batch", "-"]).stdin(script).netns(Some(netns)).run().context("baseline veth pair")
        };
        batch(&pa, format!("link add dpa type veth peer name dpb netns {b}\naddress add 192.168.250.1/30 dev dpa\nlink set dpa up\nlink set lo up\n"))?;
        batch(&pb, "address add 192.168.250.2/30 dev dpb\nlink set dpb up\n".into())?;
        let r = self.measure("bare veth pair (baseline)", &pb, &pa, "192.168.250.2", PORT);
        crate::netns_del(&a);
        crate::netns_del(&b);
        r
    }

    /// A VM endpoint on the `datapath` network whose guest is a Linux
    /// kernel: a namespace behind `cnet-guest --relay`, which copies frames
    /// with vnet headers and TSO as a VMM's user-space backend does. Paths:
    /// the container in `container` → the guest, and LAN → guest through a
    /// port mapping.
    fn vm_guest(&self, client: &cnet_client::Client, container: &str) -> Result<Vec<PathResult>> {
        use std::io::BufRead;
        let vm: Value = client.post("/namespaces", &json!({"Name": format!("{}-dpvm", self.tag), "Type": "Guest"}))?;
        let mapping =
            json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": 18090, "InternalPort": PORT}});
        let ep: Value = client.post(
            "/endpoints",
            &json!({"Name": "dpvm", "HostComputeNetwork": "datapath", "HostComputeNamespace": vm["ID"], "Policies": [mapping]}),
        )?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (tap, mac, gw) =
            (text(&ep["HostInterfaceName"]), text(&ep["MacAddress"]), text(&ep["Routes"][0]["NextHop"]));
        let (ip, len) = (text(&ep["IpConfigurations"][0]["IpAddress"]), &ep["IpConfigurations"][0]["PrefixLength"]);
        let kernel = crate::netns_add(&format!("{}-dpg", self.tag))?;
        let mut relay = Command::new(cnet_testkit::bin("cnet-guest"))
            .args([tap.as_str(), mac.as_str(), "--relay", kernel.as_str()])
            .stdout(Stdio::piped())
            .spawn()
            .context("run cnet-guest --relay")?;
        let first = std::io::BufReader::new(relay.stdout.take().context("relay stdout")?).lines().next();
        let result = (|| {
            let first = first.context("the relay said nothing")??;
            anyhow::ensure!(first.contains("\"relaying\""), "the relay failed: {first}");
            Cmd::new("ip")
                .args(["-batch", "-"])
                .stdin(format!(
                    "link set lo up\nlink set eth0 address {mac} up\naddress add {ip}/{len} dev eth0\nroute add default via {gw}\n"
                ))
                .netns(Some(&kernel))
                .run()
                .context("configuring the guest's eth0")?;
            Ok(vec![
                self.measure(
                    "cnet: container → VM guest (TAP + vnet headers, relayed)",
                    &kernel,
                    container,
                    &ip,
                    PORT,
                )?,
                self.measure("cnet: LAN → VM guest (port mapping)", &kernel, &self.lan, cnet_testkit::HOST_IP, 18090)?,
            ])
        })();
        let _ = relay.kill();
        let _ = relay.wait();
        client.delete("/endpoints/dpvm")?;
        client.delete(&format!("/namespaces/{}", vm["ID"].as_str().unwrap_or_default()))?;
        crate::netns_del(&format!("{}-dpg", self.tag));
        result
    }

    /// Every path; the incumbents among `systems` are set up with one port mapping each.
    pub fn run(&self, client: &cnet_client::Client, systems: &mut [Box<dyn System + Send>]) -> Result<Vec<PathResult>> {
        let mut out = vec![self.baseline()?];
        // Two cnet containers on a network of their own (the bench network may
        // be near a bridge's limits); the second publishes a port.
        client.post::<Value>(
            "/networks",
            &json!({"Name": "datapath", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.145.0.0/16"}]}]}),
        )?;
        let mut paths = Vec::new();
        let mut ips = Vec::new();
        for (k, ports) in [
            (1, vec![]),
            (
                2,
                vec![
                    json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": 18080, "InternalPort": PORT}}),
                ],
            ),
        ] {
            let path = crate::netns_add(&format!("{}-dpc{k}", self.tag))?;
            let ns: Value = client.post("/namespaces", &json!({"NetnsPath": path}))?;
            let ep: Value = client.post(
                "/endpoints",
                &json!({"Name": format!("dp{k}"), "HostComputeNetwork": "datapath", "HostComputeNamespace": ns["ID"], "Policies": ports}),
            )?;
            ips.push(ep["IpConfigurations"][0]["IpAddress"].as_str().unwrap_or_default().to_string());
            paths.push(path);
        }
        out.push(self.measure("cnet: container → container (one bridge)", &paths[1], &paths[0], &ips[1], PORT)?);
        out.push(self.measure("cnet: container → LAN (NAT)", &self.lan, &paths[0], cnet_testkit::LAN_IP, PORT)?);
        out.push(self.measure(
            "cnet: LAN → container (port mapping)",
            &paths[1],
            &self.lan,
            cnet_testkit::HOST_IP,
            18080,
        )?);
        out.extend(self.vm_guest(client, &paths[0])?);
        for k in 1..=2 {
            client.delete(&format!("/endpoints/dp{k}"))?;
        }
        for (k, sys) in systems.iter_mut().filter(|s| !s.name().starts_with("cnet")).enumerate() {
            let port = 18081 + k as u16;
            let a = Attachment {
                id: format!("dpinc{k}"),
                netns: crate::netns_add(&format!("{}-dpi{k}", self.tag))?,
                ifname: "eth0".into(),
                host_ports: vec![port],
            };
            sys.setup(&a)?;
            let name = format!("{}: LAN → container (port mapping)", sys.name());
            let r = self.measure(&name, &a.netns, &self.lan, cnet_testkit::HOST_IP, port);
            sys.teardown(&a)?;
            out.push(r?);
        }
        Ok(out)
    }
}

/// Prints the table.
pub fn print(results: &[PathResult], seconds: u64, round_trips: usize) {
    let base = &results[0];
    println!("\n| path | TCP throughput (Gbit/s) | vs baseline | request/response median (µs) | p99 | min | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {:.2} | {:.0}% | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.name,
            r.gbit_per_s,
            100.0 * r.gbit_per_s / base.gbit_per_s,
            ms(r.rr.median) * 1000.0,
            ms(r.rr.p99) * 1000.0,
            ms(r.rr.min) * 1000.0,
            ms(r.rr.max) * 1000.0
        );
    }
    println!("\n(iperf3 -t {seconds}, one TCP stream; request/response: {round_trips} round trips of 64 bytes on one connection)");
}
