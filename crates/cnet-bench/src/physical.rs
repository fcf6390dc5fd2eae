//! The physical-network types: endpoint setup and teardown latency for
//! Transparent (static, DHCP, VLAN) and L2Bridge endpoints beside NAT, and
//! the CNI reference `macvlan` plugin with `static` and with `dhcp` (its
//! daemon) on the same uplink and the same DHCP server (dnsmasq on the
//! LAN, `--no-ping`); then TCP throughput and request/response from the
//! LAN to a Transparent and an L2Bridge endpoint beside the bare-veth
//! baseline.
//!
//! Transparent and L2Bridge cannot share an uplink, so L2Bridge gets a
//! second one (`bup1`, 198.19.0.0/24 with the LAN at .1).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use cnet_dataplane::cmd::Cmd;
use serde_json::{json, Value};

use crate::datapath::{Datapath, PathResult};
use crate::systems::{Attachment, CnetApi, CnetCni, CnetVm, CniMacvlan, System};
use crate::{ms, stats, Stats};

pub struct Row {
    pub name: String,
    pub setup: Stats,
    pub teardown: Stats,
}

/// Everything the run needs from the world, owned (it runs on a thread in the host namespace).
pub struct Physical {
    pub client: cnet_client::Client,
    pub socket: PathBuf,
    pub plugin: PathBuf,
    pub tag: String,
    pub lan: String,
    pub work: PathBuf,
    pub reps: usize,
    pub datapath_seconds: Option<u64>,
}

fn uplink(name: &str) -> Value {
    json!([{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": name}}])
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Physical {
    fn networks(&self) -> Result<()> {
        let nets = [
            json!({"Name": "p-transparent", "Type": "Transparent", "Policies": uplink("uplink0"),
                   "Ipams": [{"Subnets": [{"IpAddressPrefix": "198.18.0.0/25"}]}]}),
            json!({"Name": "p-dhcp", "Type": "Transparent", "Policies": uplink("uplink0"), "Ipams": [{"Type": "Dhcp"}]}),
            json!({"Name": "p-vlan", "Type": "Transparent", "Policies": uplink("uplink0"),
                   "Ipams": [{"Subnets": [{"IpAddressPrefix": "192.0.2.0/24",
                               "Policies": [{"Type": "VLAN", "Settings": {"IsolationId": 10}}]}]}]}),
            json!({"Name": "p-l2bridge", "Type": "L2Bridge", "Policies": uplink("bup1"),
                   "Ipams": [{"Subnets": [{"IpAddressPrefix": "198.19.0.0/24"}]}]}),
        ];
        for n in nets {
            self.client.post::<Value>("/networks", &n).with_context(|| format!("create {}", n["Name"]))?;
        }
        Ok(())
    }

    /// The second uplink, for L2Bridge: the host's `bup1` to the LAN's `blan1`.
    fn second_uplink(&self) -> Result<()> {
        let host = format!(
            "link add bup1 type veth peer name blan1\nlink set blan1 netns {}\n",
            self.lan.trim_start_matches("/run/netns/")
        );
        Cmd::new("ip").args(["-batch", "-"]).stdin(host).run().context("second uplink")?;
        Cmd::new("ip")
            .args(["-batch", "-"])
            .stdin("address add 198.19.0.2/24 dev bup1\nlink set bup1 up\n".to_string())
            .run()?;
        Cmd::new("ip")
            .args(["-batch", "-"])
            .stdin("address add 198.19.0.1/24 dev blan1\nlink set blan1 up\n".to_string())
            .netns(Some(&self.lan))
            .run()?;
        Ok(())
    }

    fn measure(&self, sys: &mut dyn System, name: &str) -> Result<Row> {
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for rep in 0..self.reps {
            let netns = crate::netns_add(&format!("{}-ph{rep}", self.tag))?;
            let a =
                Attachment { id: format!("ph{rep}"), netns: netns.clone(), ifname: "eth0".into(), host_ports: vec![] };
            up.push(sys.setup(&a).with_context(|| format!("{name}: setup {rep}"))?);
            down.push(sys.teardown(&a).with_context(|| format!("{name}: teardown {rep}"))?);
            crate::netns_del(&format!("{}-ph{rep}", self.tag));
        }
        Ok(Row { name: name.to_string(), setup: stats(up), teardown: stats(down) })
    }

    /// From starting an unmodified guest (`cnet-guest`, smoltcp) on a fresh
    /// VM endpoint to its DHCP configuration by cnetd; teardown: the delete.
    fn guest_dhcp(&self) -> Result<Row> {
        use std::io::BufRead;
        self.client.post::<Value>(
            "/networks",
            &json!({"Name": "p-vmdhcp", "Type": "NAT", "Flags": 2, "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.163.0.0/24"}]}]}),
        )?;
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for rep in 0..self.reps {
            let ns: Value = self.client.post("/namespaces", &json!({"Name": format!("pvm{rep}"), "Type": "Guest"}))?;
            let ep: Value = self.client.post(
                "/endpoints",
                &json!({"Name": format!("pvm{rep}"), "HostComputeNetwork": "p-vmdhcp", "HostComputeNamespace": ns["ID"]}),
            )?;
            let tap = ep["HostInterfaceName"].as_str().unwrap_or_default().to_string();
            let mac = ep["MacAddress"].as_str().unwrap_or_default().to_string();
            let started = std::time::Instant::now();
            let mut guest = Command::new(cnet_testkit::bin("cnet-guest"))
                .args([tap.as_str(), mac.as_str()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("run cnet-guest")?;
            let out = std::io::BufReader::new(guest.stdout.take().context("guest stdout")?);
            let configured = out.lines().map_while(|l| l.ok()).any(|l| l.contains("\"configured\""));
            up.push(started.elapsed());
            let _ = guest.kill();
            let _ = guest.wait();
            anyhow::ensure!(configured, "guest {rep} was not configured");
            let t = std::time::Instant::now();
            self.client.delete(&format!("/endpoints/pvm{rep}"))?;
            down.push(t.elapsed());
            self.client.delete(&format!("/namespaces/pvm{rep}"))?;
        }
        Ok(Row {
            name: "cnet DHCP server: VM guest configured (smoltcp, from process start)".into(),
            setup: stats(up),
            teardown: stats(down),
        })
    }

    pub fn run(&self) -> Result<(Vec<Row>, Vec<PathResult>)> {
        self.second_uplink()?;
        self.networks()?;
        let dhcp_sock = self.work.join("cni-dhcp.sock");
        let _daemon = Daemon(
            Command::new("/usr/lib/cni/dhcp")
                .args(["daemon", "-socketpath"])
                .arg(&dhcp_sock)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start the CNI dhcp daemon (containernetworking-plugins)")?,
        );
        for _ in 0..100 {
            if dhcp_sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let api = |network: &str| CnetApi { client: self.client.clone(), network: network.into() };
        let macvlan = |label, ipam| CniMacvlan {
            plugin_dir: "/usr/lib/cni".into(),
            master: "uplink0".into(),
            label,
            ipam,
            next: 0,
            confs: Default::default(),
        };
        let mut rows = vec![
            self.measure(&mut api("bench"), "cnet API: NAT")?,
            self.measure(&mut api("p-transparent"), "cnet API: Transparent, static")?,
            self.measure(&mut api("p-dhcp"), "cnet API: Transparent, DHCP")?,
        ];
        let mut cni_dhcp = CnetCni {
            plugin: self.plugin.clone(),
            socket: self.socket.clone(),
            network: "p-dhcp".into(),
            block: json!({"Type": "Transparent", "Policies": uplink("uplink0"), "Ipams": [{"Type": "Dhcp"}]}),
        };
        rows.push(self.measure(&mut cni_dhcp, "cnet CNI: Transparent, DHCP")?);
        rows.push(self.measure(&mut api("p-vlan"), "cnet API: Transparent, VLAN 10")?);
        rows.push(self.measure(&mut api("p-l2bridge"), "cnet API: L2Bridge")?);
        let vm = |network: &str| CnetVm { client: self.client.clone(), network: network.into() };
        rows.push(self.measure(&mut vm("bench"), "cnet API: VM NIC (TAP on a NAT bridge)")?);
        rows.push(self.measure(&mut vm("p-transparent"), "cnet API: VM NIC (macvtap, Transparent)")?);
        rows.push(self.guest_dhcp()?);
        let static_ipam = json!({"type": "static", "addresses": [{"address": "{ADDRESS}"}]});
        rows.push(self.measure(&mut macvlan("CNI macvlan + static", static_ipam), "CNI macvlan + static")?);
        let dhcp_ipam = json!({"type": "dhcp", "daemonSocketPath": dhcp_sock});
        rows.push(self.measure(&mut macvlan("CNI macvlan + dhcp", dhcp_ipam), "CNI macvlan + dhcp (daemon)")?);

        let mut paths = Vec::new();
        if let Some(seconds) = self.datapath_seconds {
            let dp = Datapath { seconds, round_trips: 2000, tag: format!("{}p", self.tag), lan: self.lan.clone() };
            paths.push(dp.baseline()?);
            for (net, label) in [("p-transparent", "Transparent"), ("p-l2bridge", "L2Bridge")] {
                let netns = crate::netns_add(&format!("{}-pd{net}", self.tag))?;
                let ns: Value = self.client.post("/namespaces", &json!({"NetnsPath": netns}))?;
                let ep: Value = self.client.post(
                    "/endpoints",
                    &json!({"Name": format!("pd-{net}"), "HostComputeNetwork": net, "HostComputeNamespace": ns["ID"]}),
                )?;
                let ip = ep["IpConfigurations"][0]["IpAddress"].as_str().unwrap_or_default().to_string();
                paths.push(dp.measure(&format!("cnet: LAN → {label} endpoint"), &netns, &self.lan, &ip, 80)?);
                self.client.delete(&format!("/endpoints/pd-{net}"))?;
            }
        }
        Ok((rows, paths))
    }
}

pub fn print(rows: &[Row], reps: usize) {
    println!("\n| network type / system | setup median | p99 | min | max | teardown median | p99 | min | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (s, t) = (&r.setup, &r.teardown);
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.name,
            ms(s.median),
            ms(s.p99),
            ms(s.min),
            ms(s.max),
            ms(t.median),
            ms(t.p99),
            ms(t.min),
            ms(t.max)
        );
    }
    println!(
        "\n(times in ms; {reps} reps per row, each on a fresh namespace; DHCP rows against dnsmasq on the LAN; setup includes the lease, teardown its release)"
    );
}
