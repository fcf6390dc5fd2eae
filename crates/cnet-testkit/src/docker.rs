//! A private Docker engine for tests (Debian's `docker.io`, 20.10): a
//! dockerd started inside a world's host namespace with its own data root,
//! exec root, pidfile and socket, no bridge and no iptables rules, and a
//! plugin name of its own whose `.spec` file points at a cnetd's
//! `--docker-plugin-socket`. Images come from the static busybox, not a
//! registry. Dropping it stops dockerd, removes the `.spec` file and the
//! directory. See `shared/recipes/docker.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client (the `docker` first in `PATH` may be another one).
pub const DOCKER: &str = "/usr/bin/docker";
pub const BUSYBOX: &str = "/bin/busybox";
/// Where dockerd finds plugins by name (whatever its data root).
pub const PLUGINS_DIR: &str = "/etc/docker/plugins";

/// Why a private dockerd cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    [DOCKERD, DOCKER, BUSYBOX]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} is missing (scripts/install-deps installs docker.io and busybox-static)"))
}

/// Prints `skipped: TEST: WHY` straight to stderr (the harness hides `eprintln!`).
pub fn report_skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

pub struct Docker {
    /// Short (containerd's socket lives under it, and socket paths have 108 bytes).
    pub dir: PathBuf,
    /// The plugin's name: `docker network create -d NAME --ipam-driver NAME`.
    pub plugin: String,
    /// Where cnetd answers the plugin protocol (`--docker-plugin-socket`).
    pub plugin_socket: PathBuf,
    netns_path: String,
    spec: PathBuf,
    child: Option<Child>,
}

impl Docker {
    /// Prepares a private dockerd for the namespace at `netns_path` (not
    /// started yet): its directory and the plugin's `.spec` file.
    pub fn new(tag: &str, netns_path: &str) -> Docker {
        let dir = PathBuf::from(format!("/tmp/cdk-{tag}"));
        std::fs::create_dir_all(&dir).expect("docker dir");
        std::fs::create_dir_all(PLUGINS_DIR).expect("plugins dir");
        let plugin = format!("cnet-{tag}");
        let plugin_socket = dir.join("cnet.sock");
        let spec = Path::new(PLUGINS_DIR).join(format!("{plugin}.spec"));
        std::fs::write(&spec, format!("unix://{}\n", plugin_socket.display())).expect("spec file");
        Docker { dir, plugin, plugin_socket, netns_path: netns_path.into(), spec, child: None }
    }

    fn sock(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// Starts dockerd and waits until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "dockerd already running");
        let d = &self.dir;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("dockerd.log")).expect("log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path))
            .arg(DOCKERD)
            .arg("--data-root")
            .arg(d.join("dr"))
            .arg("--exec-root")
            .arg(d.join("dx"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .args(["-H", &self.sock()])
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none", "--shutdown-timeout", "2"])
            .args(["--default-ulimit", "nofile=20000:20000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.docker(&["info"]).status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd did not answer within 60 s: {}", self.log());
    }

    /// Stops dockerd (SIGTERM to the pid in its pidfile, SIGKILL after 20 s)
    /// and waits a second more for its containerd.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = std::fs::read_to_string(self.dir.join("dockerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .unwrap_or(child.id() as i32);
        // SAFETY: kill(2) on the pid of the dockerd this guard started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_secs(1));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs Debian's docker client against this dockerd.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER).args(["-H", &self.sock()]).args(args).output().expect("run docker")
    }

    /// Runs the client and answers its stdout, trimmed; panics with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Imports an image `name` made of the static busybox (every applet linked).
    pub fn import_busybox(&self, name: &str) {
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("rootfs");
        std::fs::create_dir_all(root.join("tmp")).expect("rootfs tmp");
        std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
        let list = Command::new(BUSYBOX).arg("--list").output().expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
        let tar = self.dir.join("rootfs.tar");
        let out = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").output().expect("tar");
        assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
        self.ok(&["import", "-c", "CMD [\"/bin/sh\"]", tar.to_str().unwrap(), name]);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.spec);
        if std::thread::panicking() {
            eprintln!("--- dockerd log ---\n{}", self.log());
        }
        // What dockerd left mounted under its roots (namespaces, layers), deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut under: Vec<&str> =
            mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&dir)).collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
