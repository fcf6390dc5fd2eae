//! The systems the benchmark compares, behind one trait: cnet through its
//! API, cnet through its CNI plugin, netavark (Podman's network stack), and
//! the CNI reference chain bridge + host-local + portmap + firewall run as a
//! runtime runs it. Each gets its own subnet and bridge in the same test host.
//!
//! Every method is called from a thread that has entered the test host's
//! network namespace, so the helper processes it starts run there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// One attachment to set up: a container ID, its netns and interface, host ports.
pub struct Attachment {
    pub id: String,
    pub netns: String,
    pub ifname: String,
    pub host_ports: Vec<u16>,
}

pub trait System {
    fn name(&self) -> &'static str;
    /// Sets up an attachment; returns how long it took.
    fn setup(&mut self, a: &Attachment) -> Result<Duration>;
    /// Tears it down; returns how long it took.
    fn teardown(&mut self, a: &Attachment) -> Result<Duration>;
}

fn run(program: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    child.stdin.take().expect("piped").write_all(stdin)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

/// cnet through the API (one create+attach call, one delete).
pub struct CnetApi {
    pub client: cnet_client::Client,
    pub network: String,
}

impl System for CnetApi {
    fn name(&self) -> &'static str {
        "cnet API"
    }
    fn setup(&mut self, a: &Attachment) -> Result<Duration> {
        let policies: Vec<Value> = a
            .host_ports
            .iter()
            .map(|p| json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "ExternalPort": p, "InternalPort": 80}}))
            .collect();
        let ns: Value = match self.client.post("/namespaces", &json!({"NetnsPath": a.netns})) {
            Ok(ns) => ns,
            Err(_) => self.client.get(&format!("/namespaces/{}", cnet_client::escape(&a.netns)))?,
        };
        let body = json!({"Name": a.id, "HostComputeNetwork": self.network, "HostComputeNamespace": ns["ID"],
                          "InterfaceName": a.ifname, "Policies": policies});
        Ok(timed(|| Ok(self.client.post::<Value>("/endpoints", &body)?))?.0)
    }
    fn teardown(&mut self, a: &Attachment) -> Result<Duration> {
        let d = timed(|| Ok(self.client.delete(&format!("/endpoints/{}", a.id))?))?.0;
        // The namespace object is not part of the endpoint's teardown (the
        // CNI path times its own release); drop it untimed.
        self.client.delete(&format!("/namespaces/{}", cnet_client::escape(&a.netns)))?;
        Ok(d)
    }
}

/// cnet through its CNI plugin binary (process start included).
pub struct CnetCni {
    pub plugin: PathBuf,
    pub socket: PathBuf,
    pub network: String,
    /// The configuration's `network` block (a HostComputeNetwork).
    pub block: Value,
}

impl CnetCni {
    /// On the NAT network `network` with `subnet`.
    pub fn nat(plugin: PathBuf, socket: PathBuf, network: &str, subnet: &str) -> Self {
        let block = json!({"Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": subnet}]}]});
        CnetCni { plugin, socket, network: network.into(), block }
    }
    fn conf(&self, a: &Attachment) -> Value {
        let pm: Vec<Value> =
            a.host_ports.iter().map(|p| json!({"hostPort": p, "containerPort": 80, "protocol": "tcp"})).collect();
        json!({"cniVersion": "1.0.0", "name": self.network, "type": "cnet-cni", "socket": self.socket,
               "network": self.block, "runtimeConfig": {"portMappings": pm}})
    }
    fn call(&self, cmd: &str, a: &Attachment) -> Result<Vec<u8>> {
        let env = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", &a.id),
            ("CNI_NETNS", &a.netns),
            ("CNI_IFNAME", &a.ifname),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        run(&self.plugin, &[], &env, self.conf(a).to_string().as_bytes())
    }
}

impl System for CnetCni {
    fn name(&self) -> &'static str {
        "cnet CNI"
    }
    fn setup(&mut self, a: &Attachment) -> Result<Duration> {
        Ok(timed(|| self.call("ADD", a))?.0)
    }
    fn teardown(&mut self, a: &Attachment) -> Result<Duration> {
        Ok(timed(|| self.call("DEL", a))?.0)
    }
}

/// netavark `setup`/`teardown`, with the JSON Podman gives it. Podman
/// allocates addresses itself, so the harness hands out static ones.
pub struct Netavark {
    pub binary: PathBuf,
    pub config_dir: PathBuf,
    pub bridge: String,
    /// /16 prefix, e.g. "10.171".
    pub prefix: String,
    pub next: u32,
    pub opts: std::collections::HashMap<String, Value>,
}

impl Netavark {
    fn options(&mut self, a: &Attachment) -> Value {
        let n = self.next;
        self.next += 1;
        let ip = format!("{}.{}.{}", self.prefix, 1 + n / 250, 2 + n % 250);
        let pm: Vec<Value> = a
            .host_ports
            .iter()
            .map(|p| json!({"host_ip": "", "container_port": 80, "host_port": p, "range": 1, "protocol": "tcp"}))
            .collect();
        json!({
            "container_id": format!("{:0>64}", a.id.replace(|c: char| !c.is_ascii_alphanumeric(), "")),
            "container_name": a.id, "port_mappings": pm,
            "networks": {"bench": {"static_ips": [ip], "aliases": [], "interface_name": a.ifname}},
            "network_info": {"bench": {"name": "bench", "id": "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
                "driver": "bridge", "network_interface": self.bridge,
                "subnets": [{"subnet": format!("{}.0.0/16", self.prefix), "gateway": format!("{}.0.1", self.prefix)}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}}}
        })
    }
}

impl System for Netavark {
    fn name(&self) -> &'static str {
        "netavark"
    }
    fn setup(&mut self, a: &Attachment) -> Result<Duration> {
        let opts = self.options(a);
        let dir = self.config_dir.display().to_string();
        let (d, _) =
            timed(|| run(&self.binary, &["--config", &dir, "setup", &a.netns], &[], opts.to_string().as_bytes()))?;
        self.opts.insert(a.id.clone(), opts);
        Ok(d)
    }
    fn teardown(&mut self, a: &Attachment) -> Result<Duration> {
        let opts = self.opts.remove(&a.id).context("teardown of an attachment never set up")?;
        let dir = self.config_dir.display().to_string();
        Ok(timed(|| run(&self.binary, &["--config", &dir, "teardown", &a.netns], &[], opts.to_string().as_bytes()))?.0)
    }
}

/// The CNI reference chain, run as libcni runs a conflist: ADD through each
/// plugin in order with the previous result, DEL in reverse with the final one.
pub struct CniChain {
    pub plugin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub bridge: String,
    pub subnet: String,
    pub results: std::collections::HashMap<String, Value>,
}

impl CniChain {
    fn plugins(&self, a: &Attachment) -> Vec<Value> {
        let pm: Vec<Value> =
            a.host_ports.iter().map(|p| json!({"hostPort": p, "containerPort": 80, "protocol": "tcp"})).collect();
        vec![
            json!({"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                   "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": self.data_dir}}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": pm}}),
            json!({"type": "firewall"}),
        ]
    }
    fn invoke(&self, cmd: &str, a: &Attachment, plugin: &Value, prev: Option<&Value>) -> Result<Option<Value>> {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!("0.4.0");
        conf["name"] = json!("refchain");
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        let ty = plugin["type"].as_str().expect("type");
        let path = self.plugin_dir.display().to_string();
        let env = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", a.id.as_str()),
            ("CNI_NETNS", a.netns.as_str()),
            ("CNI_IFNAME", a.ifname.as_str()),
            ("CNI_PATH", path.as_str()),
        ];
        let out = run(&self.plugin_dir.join(ty), &[], &env, conf.to_string().as_bytes())?;
        Ok(if out.iter().all(u8::is_ascii_whitespace) { None } else { Some(serde_json::from_slice(&out)?) })
    }
}

impl System for CniChain {
    fn name(&self) -> &'static str {
        "CNI chain"
    }
    fn setup(&mut self, a: &Attachment) -> Result<Duration> {
        let plugins = self.plugins(a);
        let (d, result) = timed(|| {
            let mut prev: Option<Value> = None;
            for p in &plugins {
                if let Some(r) = self.invoke("ADD", a, p, prev.as_ref())? {
                    prev = Some(r);
                }
            }
            Ok(prev)
        })?;
        self.results.insert(a.id.clone(), result.unwrap_or(Value::Null));
        Ok(d)
    }
    fn teardown(&mut self, a: &Attachment) -> Result<Duration> {
        let plugins = self.plugins(a);
        let prev = self.results.remove(&a.id).filter(|v| !v.is_null());
        Ok(timed(|| {
            for p in plugins.iter().rev() {
                self.invoke("DEL", a, p, prev.as_ref())?;
            }
            Ok(())
        })?
        .0)
    }
}

/// The CNI reference `macvlan` plugin (bridge mode) with an IPAM plugin
/// (`static`, or `dhcp` with its daemon), run as a runtime runs it.
pub struct CniMacvlan {
    pub plugin_dir: PathBuf,
    pub master: String,
    pub label: &'static str,
    /// The IPAM block; for `static`, `{ADDRESS}` is replaced per attachment.
    pub ipam: Value,
    pub next: u32,
    pub confs: std::collections::HashMap<String, Value>,
}

impl CniMacvlan {
    fn invoke(&self, cmd: &str, a: &Attachment, conf: &Value) -> Result<Vec<u8>> {
        let path = self.plugin_dir.display().to_string();
        let env = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", a.id.as_str()),
            ("CNI_NETNS", a.netns.as_str()),
            ("CNI_IFNAME", a.ifname.as_str()),
            ("CNI_PATH", path.as_str()),
        ];
        run(&self.plugin_dir.join("macvlan"), &[], &env, conf.to_string().as_bytes())
    }
}

impl System for CniMacvlan {
    fn name(&self) -> &'static str {
        self.label
    }
    fn setup(&mut self, a: &Attachment) -> Result<Duration> {
        self.next += 1;
        let address = format!("198.18.0.{}/24", 10 + self.next % 80);
        let ipam = serde_json::to_string(&self.ipam)?.replace("{ADDRESS}", &address);
        let conf = json!({"cniVersion": "1.0.0", "name": "refmacvlan", "type": "macvlan", "master": self.master,
                          "mode": "bridge", "ipam": serde_json::from_str::<Value>(&ipam)?});
        let d = timed(|| self.invoke("ADD", a, &conf))?.0;
        self.confs.insert(a.id.clone(), conf);
        Ok(d)
    }
    fn teardown(&mut self, a: &Attachment) -> Result<Duration> {
        let conf = self.confs.remove(&a.id).context("no such attachment")?;
        Ok(timed(|| self.invoke("DEL", a, &conf))?.0)
    }
}

/// A VM endpoint through cnet's API: a Guest namespace (untimed) and one
/// create call (the VM NIC made and on its switch), one delete.
pub struct CnetVm {
    pub client: cnet_client::Client,
    pub network: String,
}

impl System for CnetVm {
    fn name(&self) -> &'static str {
        "cnet API (VM NIC)"
    }
    fn setup(&mut self, a: &Attachment) -> Result<Duration> {
        let ns: Value = self.client.post("/namespaces", &json!({"Name": format!("vm-{}", a.id), "Type": "Guest"}))?;
        let body = json!({"Name": a.id, "HostComputeNetwork": self.network, "HostComputeNamespace": ns["ID"]});
        Ok(timed(|| Ok(self.client.post::<Value>("/endpoints", &body)?))?.0)
    }
    fn teardown(&mut self, a: &Attachment) -> Result<Duration> {
        let d = timed(|| Ok(self.client.delete(&format!("/endpoints/{}", a.id))?))?.0;
        self.client.delete(&format!("/namespaces/vm-{}", a.id))?;
        Ok(d)
    }
}
