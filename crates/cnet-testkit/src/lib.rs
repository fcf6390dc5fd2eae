//! Test worlds made of network namespaces.
//!
//! A [`World`] is a "host" namespace (where a private cnetd runs, with its
//! own socket and state dir) joined by a veth uplink to a "LAN" namespace
//! (the outside world). Addresses come from 198.18.0.0/15 and fd00:18::/64,
//! ranges that exist only inside these namespaces. Every name carries a
//! random tag, so worlds of parallel tests never meet; dropping a world
//! kills its daemon and deletes its namespaces.
//!
//! [`probe`] sends real TCP, UDP and ICMP and reports what arrived.

pub mod cluster;
pub mod docker;
pub mod lan;
pub mod podman;
pub mod probe;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cnet_client::Client;

/// The host's address on the LAN, and the LAN router's.
pub const HOST_IP: &str = "198.18.0.2";
pub const LAN_IP: &str = "198.18.0.1";
pub const HOST_IP6: &str = "fd00:18::2";
pub const LAN_IP6: &str = "fd00:18::1";

/// Path of a binary built in the same profile as the running program
/// (`target/<profile>/NAME`; tests run from `target/<profile>/deps`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("profile dir") } else { dir };
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// Whether this process runs as root (effective UID 0), as the privileged
/// tests need.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Prints the line of [`require_root!`] for a skipped test.
#[doc(hidden)]
pub fn report_skip(test: &str) {
    use std::io::Write;
    // Straight to stderr, not through `eprintln!`: the test harness captures
    // that and shows it only for tests that fail.
    let _ = writeln!(std::io::stderr(), "skipped: {test} needs root (run ./run-tests.sh as root)");
}

/// The first line of every test that needs root: as any other user it
/// prints one line, `skipped: <module path>::<test> needs root (…)`, to
/// stderr and returns from the test, so a plain `cargo test` passes; as
/// root it does nothing.
///
/// ```no_run
/// #[test]
/// fn a_world_has_a_host_and_a_lan() {
///     cnet_testkit::require_root!();
///     let w = cnet_testkit::World::new();
///     // …
/// }
/// ```
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            fn here() {}
            let test = ::std::any::type_name_of_val(&here);
            let test = test.strip_suffix("::here").unwrap_or(test);
            $crate::report_skip(test);
            return;
        }
    };
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub(crate) fn random_tag() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom into a local buffer of the given length.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    format!("t{:08x}", u32::from_ne_bytes(b))
}

pub struct World {
    pub tag: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// More flags for cnetd, on every start.
    pub daemon_args: Vec<std::ffi::OsString>,
    daemon: Option<Child>,
}

impl World {
    /// A host and its LAN, without a daemon yet.
    pub fn bare() -> World {
        assert!(is_root(), "cnet's privileged tests must run as root: begin them with `require_root!()`");
        let tag = random_tag();
        let dir = tempfile::tempdir().expect("tempdir");
        let w = World {
            socket: dir.path().join("cnetd.sock"),
            state_dir: dir.path().join("state"),
            tag,
            dir,
            daemon_args: vec![],
            daemon: None,
        };
        let (h, l) = (w.host(), w.lan());
        sh(&["ip", "netns", "add", &h]);
        sh(&["ip", "netns", "add", &l]);
        let (a, b) = (format!("{}u", w.tag), format!("{}l", w.tag));
        sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        sh(&["ip", "link", "set", &a, "netns", &h]);
        sh(&["ip", "link", "set", &b, "netns", &l]);
        let batch_host = format!(
            "link set {a} name uplink0\naddress add {HOST_IP}/24 dev uplink0\naddress add {HOST_IP6}/64 dev uplink0 nodad\n\
             link set lo up\nlink set uplink0 up\nroute add default via {LAN_IP}\nroute add default via {LAN_IP6}\n"
        );
        let batch_lan = format!(
            "link set {b} name lan0\naddress add {LAN_IP}/24 dev lan0\naddress add {LAN_IP6}/64 dev lan0 nodad\nlink set lo up\nlink set lan0 up\n"
        );
        for (ns, batch) in [(&h, batch_host), (&l, batch_lan)] {
            cnet_dataplane::cmd::Cmd::new("ip")
                .args(["-batch", "-"])
                .stdin(batch)
                .netns(Some(&cnet_dataplane::netns::path_of(ns)))
                .run()
                .expect("world setup");
        }
        w
    }

    /// A host and its LAN with cnetd running on the host.
    #[allow(clippy::new_without_default)]
    pub fn new() -> World {
        let mut w = World::bare();
        w.start_daemon();
        w
    }

    pub fn host(&self) -> String {
        format!("{}-host", self.tag)
    }
    pub fn lan(&self) -> String {
        format!("{}-lan", self.tag)
    }
    pub fn host_path(&self) -> String {
        cnet_dataplane::netns::path_of(&self.host())
    }
    pub fn lan_path(&self) -> String {
        cnet_dataplane::netns::path_of(&self.lan())
    }
    /// A namespace name unique to this world.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.tag)
    }

    /// Starts cnetd in the host namespace (network namespace only, not via
    /// `ip netns exec`, so the namespaces it creates are visible to all) and
    /// waits until its socket answers.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("cnetd.log")).expect("log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.host_path()))
            .arg(bin("cnetd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--log-level")
            .arg("debug")
            .args(&self.daemon_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cnetd");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.client().get::<serde_json::Value>("/globals/version").is_ok() {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("cnetd exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cnetd did not answer within 30 s: {}", self.log());
    }

    /// SIGKILL: a crash.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: a clean stop.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// The running daemon's process ID.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cnetd.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Runs the `cnet` CLI against this world's daemon.
    pub fn cnet(&self, args: &[&str]) -> Output {
        Command::new(bin("cnet")).env("CNET_SOCKET", &self.socket).args(args).output().expect("run cnet")
    }

    /// Runs a command inside a namespace given by path.
    pub fn exec_in(&self, netns_path: &str, args: &[&str]) -> Output {
        Command::new("nsenter").arg(format!("--net={netns_path}")).args(args).output().expect("nsenter")
    }

    /// Whether link `name` in the namespace at `netns_path` is cut off now
    /// (gone, or without carrier because its peer is down) and gone within
    /// 5 s: cnetd deletes detached veths in the background.
    pub fn link_cut_off_then_gone(&self, netns_path: &str, name: &str) -> bool {
        let show = || self.exec_in(netns_path, &["ip", "-o", "link", "show", name]);
        let now = show();
        if now.status.success() && !String::from_utf8_lossy(&now.stdout).contains("NO-CARRIER") {
            return false;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while show().status.success() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    /// The host namespace's qdiscs (`tc qdisc show`) and ifb links, as text:
    /// what QoS leaves in the kernel.
    pub fn host_tc(&self) -> String {
        self.tc_in(&self.host_path())
    }

    /// The qdiscs and the ifb links of the namespace at `netns_path`.
    pub fn tc_in(&self, netns_path: &str) -> String {
        let q = self.exec_in(netns_path, &["tc", "qdisc", "show"]);
        let l = self.exec_in(netns_path, &["ip", "-o", "link", "show", "type", "ifb"]);
        format!("{}{}", String::from_utf8_lossy(&q.stdout), String::from_utf8_lossy(&l.stdout))
    }

    /// `cnet diag` drift lines (empty = none).
    pub fn drift(&self) -> Vec<String> {
        let r: serde_json::Value = self.client().get("/diag").expect("diag");
        r["Drift"].as_array().unwrap().iter().map(|d| d["Message"].as_str().unwrap().to_string()).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_daemon();
        if let Ok(entries) = std::fs::read_dir(cnet_dataplane::netns::NETNS_DIR) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.tag) {
                    let _ = cnet_dataplane::netns::delete(&name);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("--- cnetd log of world {} ---\n{}", self.tag, self.log());
        }
    }
}
