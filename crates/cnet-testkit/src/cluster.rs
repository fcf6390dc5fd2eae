//! A multi-host world on one machine: an underlay namespace with a bridge,
//! host namespaces on it (each with `uplink0` at `10.254.0.<n>/24`), a real
//! etcd (Debian's `etcd-server`) on the underlay at `10.254.0.100:2379`, and
//! a cnetd per host with its own socket and state directory. All traffic
//! stays inside these namespaces. With `CNET_DEBUG_KEEP` set, a world copies
//! its logs (each cnetd's, etcd's) to `/tmp/world-<tag>/` when it ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_client::Client;

use crate::{bin, random_tag, sh};

/// etcd's address on the underlay.
pub const ETCD_IP: &str = "10.254.0.100";

/// One host of the world.
pub struct ClusterHost {
    pub netns: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Its underlay (provider) address.
    pub provider: String,
    daemon: Option<Child>,
    log: PathBuf,
}

pub struct ClusterWorld {
    pub tag: String,
    pub dir: tempfile::TempDir,
    pub hosts: Vec<ClusterHost>,
    etcd: Option<Child>,
    /// The lease TTL each cnetd is started with.
    pub ttl: u64,
    /// How long a departed host's blocks wait before they are reclaimed.
    pub block_grace: u64,
    /// With TLS: the directory of the CA, etcd's and the hosts' certificates.
    tls: Option<PathBuf>,
    /// etcd user and password every cnetd (and `etcdctl`) uses, once set.
    pub user: Option<(String, String)>,
    /// More arguments for etcd (on its next start).
    pub etcd_args: Vec<String>,
}

/// Makes a CA, a server certificate for etcd at [`ETCD_IP`] and a client
/// certificate (EC P-256, valid one day) in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out =
            Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &key,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=cnet-test-ca"],
    ]
    .concat());
    std::fs::write(dir.join("server.ext"), format!("subjectAltName=IP:{ETCD_IP}\nextendedKeyUsage=serverAuth\n"))
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "etcd"), ("client", "cnet")] {
        run(&[
            &["req"][..],
            &key,
            &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={cn}")],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

fn path_of(ns: &str) -> String {
    cnet_dataplane::netns::path_of(ns)
}

fn batch(ns: &str, script: String) {
    cnet_dataplane::cmd::Cmd::new("ip")
        .args(["-batch", "-"])
        .stdin(script)
        .netns(Some(&path_of(ns)))
        .run()
        .expect("cluster world setup");
}

impl ClusterWorld {
    /// `n` hosts on an underlay with etcd running; no cnetd yet.
    pub fn new(n: usize) -> ClusterWorld {
        Self::build(n, false)
    }

    /// The same with etcd on TLS that demands client certificates; every
    /// cnetd gets `--etcd-ca`, `--etcd-cert` and `--etcd-key`.
    pub fn with_tls(n: usize) -> ClusterWorld {
        Self::build(n, true)
    }

    fn build(n: usize, tls: bool) -> ClusterWorld {
        assert!(crate::is_root(), "cnet's privileged tests must run as root: begin them with `require_root!()`");
        let tag = random_tag();
        let dir = tempfile::tempdir().expect("tempdir");
        let underlay = format!("{tag}-ul");
        sh(&["ip", "netns", "add", &underlay]);
        batch(
            &underlay,
            format!("link set lo up\nlink add ulbr type bridge\naddress add {ETCD_IP}/24 dev ulbr\nlink set ulbr up\n"),
        );
        let mut hosts = Vec::new();
        for i in 1..=n {
            let ns = format!("{tag}-h{i}");
            sh(&["ip", "netns", "add", &ns]);
            let (a, b) = (format!("{tag}{i}a"), format!("{tag}{i}b"));
            sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            sh(&["ip", "link", "set", &a, "netns", &ns]);
            sh(&["ip", "link", "set", &b, "netns", &underlay]);
            batch(&underlay, format!("link set {b} master ulbr\nlink set {b} up\n"));
            let provider = format!("10.254.0.{i}");
            batch(&ns, format!("link set lo up\nlink set {a} name uplink0\naddress add {provider}/24 dev uplink0\nlink set uplink0 up\n"));
            // GRO on both ends, as a real NIC has it: without it every
            // VXLAN packet is received one by one and the tunnel measures
            // this veth, not cnet (ethtool missing: left as it is).
            for (netns, dev) in [(&ns, "uplink0"), (&underlay, b.as_str())] {
                let _ = Command::new("nsenter")
                    .arg(format!("--net={}", path_of(netns)))
                    .args(["ethtool", "-K", dev, "gro", "on"])
                    .output();
            }
            hosts.push(ClusterHost {
                netns: ns,
                socket: dir.path().join(format!("h{i}.sock")),
                state_dir: dir.path().join(format!("h{i}-state")),
                provider,
                daemon: None,
                log: dir.path().join(format!("h{i}.log")),
            });
        }
        // cnetd's default: shorter leases made the tests flaky (a host's
        // keep-alive can stall for seconds here; docs/overlay.md).
        let tls = tls.then(|| {
            let certs = dir.path().join("certs");
            std::fs::create_dir_all(&certs).unwrap();
            make_certificates(&certs);
            certs
        });
        let mut w =
            ClusterWorld { tag, dir, hosts, etcd: None, ttl: 10, block_grace: 5, tls, user: None, etcd_args: vec![] };
        w.start_etcd();
        w
    }

    pub fn underlay_path(&self) -> String {
        path_of(&format!("{}-ul", self.tag))
    }

    pub fn etcd_endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{ETCD_IP}:2379")
    }

    /// etcdctl's (and etcd's) TLS arguments, and etcdctl's user; none without them.
    fn tls_args(&self, server: bool) -> Vec<String> {
        let user = match (&self.user, server) {
            (Some((u, p)), false) => vec!["--user".to_string(), format!("{u}:{p}")],
            _ => vec![],
        };
        let Some(d) = &self.tls else { return user };
        let f = |name: &str| d.join(name).display().to_string();
        if server {
            vec![
                "--cert-file".into(),
                f("server.pem"),
                "--key-file".into(),
                f("server.key"),
                "--trusted-ca-file".into(),
                f("ca.pem"),
                "--client-cert-auth".into(),
            ]
        } else {
            let mut v: Vec<String> =
                vec!["--cacert".into(), f("ca.pem"), "--cert".into(), f("client.pem"), "--key".into(), f("client.key")];
            v.extend(user);
            v
        }
    }

    /// Starts etcd on the underlay (its data kept across restarts) and waits
    /// until it answers.
    pub fn start_etcd(&mut self) {
        assert!(self.etcd.is_none(), "etcd already running");
        let url = self.etcd_endpoint();
        let peer = format!("http://{ETCD_IP}:2380");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.underlay_path()))
            .args(["etcd", "--name", "n1", "--data-dir"])
            .arg(self.etcd_data())
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n1={peer}"), "--logger", "zap", "--log-level", "warn"])
            .args(self.tls_args(true))
            .args(&self.etcd_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (apt-get install etcd-server; scripts/install-deps does)");
        self.etcd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = Command::new("nsenter")
                .arg(format!("--net={}", self.underlay_path()))
                .args(["etcdctl", "--endpoints", &url, "--command-timeout", "1s"])
                .args(self.tls_args(false))
                .args(["endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy within 15 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// etcd's data: in memory (`/dev/shm`), so that its fsyncs never wait
    /// for a disk another test (or a build) keeps busy — a stalled etcd lets
    /// leases expire and the tests would measure the disk.
    fn etcd_data(&self) -> PathBuf {
        PathBuf::from(format!("/dev/shm/cnet-etcd-{}", self.tag))
    }

    /// Runs `etcdctl` against the world's etcd; panics when it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.underlay_path()))
            .args(["etcdctl", "--endpoints", &self.etcd_endpoint()])
            .args(self.tls_args(false))
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL to etcd: an outage.
    pub fn kill_etcd(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts host `i`'s cnetd (joined to etcd, lease TTL [`Self::ttl`]) and
    /// waits until its socket answers.
    pub fn start_daemon(&mut self, i: usize) {
        let etcd = self.etcd_endpoint();
        let ttl = self.ttl.to_string();
        let grace = self.block_grace.to_string();
        let tls: Vec<String> = match &self.tls {
            Some(d) => ["--etcd-ca", "ca.pem", "--etcd-cert", "client.pem", "--etcd-key", "client.key"]
                .chunks(2)
                .flat_map(|kv| [kv[0].to_string(), d.join(kv[1]).display().to_string()])
                .collect(),
            None => vec![],
        };
        let user = self.user.clone();
        let h = &mut self.hosts[i];
        assert!(h.daemon.is_none(), "host {i}'s cnetd already runs");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&h.log).unwrap();
        let mut cmd = Command::new("nsenter");
        // The password in the environment, as an operator should pass it.
        if let Some((u, p)) = user {
            cmd.env("CNET_ETCD_USER", u).env("CNET_ETCD_PASSWORD", p);
        }
        let child = cmd
            .arg(format!("--net={}", path_of(&h.netns)))
            .arg(bin("cnetd"))
            .arg("--socket")
            .arg(&h.socket)
            .arg("--state-dir")
            .arg(&h.state_dir)
            .args(["--log-level", "info,cnetd=debug,cnet_cluster=debug", "--etcd", &etcd, "--cluster-lease-ttl", &ttl])
            .args(["--cluster-block-grace", &grace])
            .args(&tls)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cnetd");
        h.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::new(&h.socket).get::<serde_json::Value>("/globals/version").is_err() {
            if let Some(status) = h.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "host {i}'s cnetd exited with {status}: {}",
                    std::fs::read_to_string(&h.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "host {i}'s cnetd did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to host `i`'s cnetd.
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Host `i` is gone with its namespace (its cnetd killed first).
    pub fn destroy_host(&mut self, i: usize) {
        self.kill_daemon(i);
        let _ = Command::new("ip").args(["netns", "del", &self.hosts[i].netns]).output();
    }

    /// The path of host `i`'s namespace.
    pub fn host_path(&self, i: usize) -> String {
        path_of(&self.hosts[i].netns)
    }

    /// Runs `CMD...` in host `i`'s namespace; its standard output.
    pub fn run_in(&self, i: usize, cmd: &[&str]) -> String {
        let out = Command::new("nsenter").arg(format!("--net={}", self.host_path(i))).args(cmd).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Host `i`'s `GET /cluster` (the default when it does not answer).
    pub fn status(&self, i: usize) -> cnet_model::cluster::ClusterStatus {
        self.client(i).get("/cluster").unwrap_or_default()
    }

    /// Waits up to `secs` for `f`; answers how long it took. Fails with
    /// host 1's log.
    pub fn within(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{what} not within {secs} s; host 1's log:\n{}",
                self.log(0)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }

    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.hosts[i].socket)
    }

    /// Runs the `cnet` CLI against host `i`'s cnetd.
    pub fn cnet(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new(bin("cnet")).env("CNET_SOCKET", &self.hosts[i].socket).args(args).output().expect("run cnet")
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }
}

impl Drop for ClusterWorld {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill_daemon(i);
        }
        self.kill_etcd();
        let _ = std::fs::remove_dir_all(self.etcd_data());
        if std::env::var_os("CNET_DEBUG_KEEP").is_some() {
            let keep = format!("/tmp/world-{}", self.tag);
            let _ = std::fs::create_dir_all(&keep);
            for f in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                let _ = std::fs::copy(f.path(), format!("{keep}/{}", f.file_name().to_string_lossy()));
            }
        }
        // A destroyed host's namespace is gone already: no word about it.
        // The containers' namespaces the hosts made are named by the tag too.
        let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        let containers: Vec<String> = String::from_utf8_lossy(&listed)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-", self.tag)))
            .map(String::from)
            .collect();
        for ns in self.hosts.iter().map(|h| h.netns.clone()).chain([format!("{}-ul", self.tag)]).chain(containers) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}
