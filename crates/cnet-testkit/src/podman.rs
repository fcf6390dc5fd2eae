//! Podman with private configuration and state, run inside a [`World`]'s
//! host namespace: with its CNI backend (cnet's CNI plugin) or its netavark
//! backend (`cnet-netavark` installed as netavark). Never the machine's own
//! configuration, storage or networks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::{bin, World};

/// A command's stdout; panics with its output when it failed.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A busybox root filesystem tarball in `dir` (no registry here), with
/// `/www/index.html` saying `hello-from-cnet`.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists());
    let busybox = busybox.expect("busybox is missing: apt-get install busybox-static");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let list = ok(Command::new(busybox).arg("--list").output().unwrap(), "busybox --list");
    for applet in list.lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("www/index.html"), "hello-from-cnet\n").unwrap();
    let tar = dir.join("rootfs.tar");
    ok(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").output().unwrap(), "tar");
    tar
}

/// A CNI configuration list for cnet's plugin, creating `network` (a
/// HostComputeNetwork) on first use.
pub fn conflist(w: &World, name: &str, network: &serde_json::Value) -> String {
    json!({"cniVersion": "0.4.0", "name": name, "plugins": [{
        "type": "cnet-cni", "socket": w.socket,
        "network": network,
        "capabilities": {"portMappings": true, "ips": true, "mac": true, "bandwidth": true, "dns": true, "aliases": true}
    }]})
    .to_string()
}

/// A NAT HostComputeNetwork on `subnet`.
pub fn nat(subnet: &str) -> serde_json::Value {
    json!({"Type": "NAT", "Ipams": [{"Type": "Static", "Subnets": [{"IpAddressPrefix": subnet}]}]})
}

/// Podman configured in a private directory; removes its containers when dropped.
pub struct Podman {
    pub dir: tempfile::TempDir,
    host: String,
    socket: PathBuf,
}

impl Podman {
    /// The CNI backend with a configuration list per `(name, HostComputeNetwork)`.
    pub fn cni(w: &World, networks: &[(&str, serde_json::Value)]) -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for sub in ["cni/net.d", "cni/bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::copy(bin("cnet-cni"), dir.path().join("cni/bin/cnet-cni")).unwrap();
        for (name, block) in networks {
            std::fs::write(dir.path().join(format!("cni/net.d/{name}.conflist")), conflist(w, name, block)).unwrap();
        }
        let network = format!(
            "network_backend = \"cni\"\nnetwork_config_dir = \"{d}/cni/net.d\"\ncni_plugin_dirs = [\"{d}/cni/bin\"]\n"
        );
        Podman::configured(w, dir, "", &network)
    }

    /// The netavark backend, with `cnet-netavark` as its netavark; networks
    /// are made with `podman network create`.
    pub fn netavark(w: &World) -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for sub in ["helpers", "networks"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::copy(bin("cnet-netavark"), dir.path().join("helpers/netavark")).unwrap();
        // aardvark-dns stays findable (Podman warns without it); cnet-netavark never starts it.
        // conmon runs the cleanup (teardown) of a container that exits with
        // only the environment it is given: the socket must be in it.
        let engine = format!(
            "helper_binaries_dir = [\"{d}/helpers\", \"/usr/lib/podman\", \"/usr/libexec/podman\"]\n\
             conmon_env_vars = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \"CNET_SOCKET={}\"]\n",
            w.socket.display()
        );
        let network = format!("network_backend = \"netavark\"\nnetwork_config_dir = \"{d}/networks\"\n");
        Podman::configured(w, dir, &engine, &network)
    }

    /// The netavark backend with the distribution's netavark (the
    /// benchmark's reference), its firewall rules in the world's host namespace.
    pub fn native(w: &World) -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("networks")).unwrap();
        let network = format!("network_backend = \"netavark\"\nnetwork_config_dir = \"{d}/networks\"\n");
        Podman::configured(w, dir, "", &network)
    }

    fn configured(w: &World, dir: tempfile::TempDir, engine: &str, network: &str) -> Podman {
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\n\
                 tmp_dir = \"{d}/tmp\"\nruntime = \"runc\"\nvolume_path = \"{d}/volumes\"\nstatic_dir = \"{d}/storage/libpod\"\n\
                 {engine}[network]\n{network}"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("storage.conf"),
            format!("[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n"),
        )
        .unwrap();
        let p = Podman { dir, host: w.host_path(), socket: w.socket.clone() };
        let tar = busybox_tar(p.dir.path());
        p.ok(&["import", tar.to_str().unwrap(), "localhost/bb"]);
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.host))
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.path().join("storage.conf"))
            .env("CNET_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .expect("podman is missing: apt-get install podman runc")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd(args), &format!("podman {args:?}"))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
    }
}
