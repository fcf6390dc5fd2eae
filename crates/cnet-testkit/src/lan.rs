//! The LAN side of a [`crate::World`] as a physical network: a DHCP server
//! (Debian's dnsmasq) on `lan0`, packet captures (tcpdump), and its
//! neighbour table. Everything runs inside the world's LAN namespace.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::World;

/// dnsmasq serving DHCP on the LAN until dropped.
pub struct DhcpServer {
    child: Child,
    pub log: PathBuf,
    pub leases: PathBuf,
    dev: String,
}

impl DhcpServer {
    /// Serves `first`..`last` of 198.18.0.0/24 with the LAN as router and
    /// DNS server, leases of 2 minutes (dnsmasq's least) renewed after
    /// `t1` seconds.
    pub fn start(w: &World, first: &str, last: &str, t1: u32) -> DhcpServer {
        DhcpServer::start_on(w, &w.lan_path(), "lan0", crate::LAN_IP, first, last, t1)
    }

    /// The same on interface `dev` of the namespace at `netns_path`, with
    /// `router` as router and DNS server.
    pub fn start_on(
        w: &World,
        netns_path: &str,
        dev: &str,
        router: &str,
        first: &str,
        last: &str,
        t1: u32,
    ) -> DhcpServer {
        let dir = w.dir.path();
        let tag = crate::random_tag();
        let (log, leases) = (dir.join(format!("dnsmasq-{tag}.log")), dir.join(format!("dnsmasq-{tag}.leases")));
        let child = Command::new("nsenter")
            .arg(format!("--net={netns_path}"))
            .args(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--bind-interfaces"])
            .arg(format!("--interface={dev}"))
            .args(["--no-ping", "--log-dhcp", "--user=root", "--pid-file"])
            .arg(format!("--dhcp-range={first},{last},255.255.255.0,2m"))
            .arg(format!("--dhcp-option=option:router,{router}"))
            .arg(format!("--dhcp-option=option:dns-server,{router}"))
            .arg("--dhcp-option=option:domain-name,lan.test")
            .arg(format!("--dhcp-option=option:T1,{t1}"))
            .arg(format!("--dhcp-option=option:T2,{}", t1 * 3 / 2))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)");
        let s = DhcpServer { child, log, leases, dev: dev.to_string() };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.log_text().contains("DHCP, IP range") {
            assert!(Instant::now() < deadline, "dnsmasq did not start: {}", s.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many of dnsmasq's log lines start message `kind` (DHCPDISCOVER,
    /// DHCPREQUEST, DHCPACK, DHCPRELEASE, …) for `mac`.
    pub fn count(&self, kind: &str, mac: &str) -> usize {
        let tag = format!("{kind}({})", self.dev);
        self.log_text().lines().filter(|l| l.contains(&tag) && l.contains(mac)).count()
    }

    /// The leases file's lines (expiry, MAC, address, name, client ID).
    pub fn leases(&self) -> Vec<String> {
        std::fs::read_to_string(&self.leases).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tcpdump on one interface of a namespace, from start until [`Capture::stop`].
pub struct Capture {
    child: Child,
    out: PathBuf,
}

impl Capture {
    /// Captures frames matching the pcap `filter` on `dev` in `netns_path`,
    /// with link-level headers (`-e`), numbers only.
    pub fn start(w: &World, netns_path: &str, dev: &str, filter: &str) -> Capture {
        let out = w.dir.path().join(format!("capture-{dev}-{}.txt", crate::random_tag()));
        let file = std::fs::File::create(&out).expect("capture file");
        let child = Command::new("nsenter")
            .arg(format!("--net={netns_path}"))
            .args(["tcpdump", "-l", "-n", "-e", "-i", dev])
            .args(filter.split_whitespace())
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump (apt-get install tcpdump)");
        let mut c = Capture { child, out };
        // tcpdump says "listening on" on stderr once the capture runs.
        let mut err = c.child.stderr.take().expect("stderr");
        let mut buf = [0u8; 256];
        let _ = std::io::Read::read(&mut err, &mut buf);
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        c
    }

    /// Stops the capture and answers its lines.
    pub fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

/// The MAC of `dev` in the namespace at `netns_path`.
pub fn mac_of(w: &World, netns_path: &str, dev: &str) -> String {
    let out = w.exec_in(netns_path, &["ip", "-o", "link", "show", dev]);
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    line.split_whitespace().skip_while(|t| *t != "link/ether").nth(1).unwrap_or_default().to_string()
}

/// The LAN's neighbour entry for `ip`: its MAC, if it has one.
pub fn lan_neighbour(w: &World, ip: &str) -> Option<String> {
    let out = w.exec_in(&w.lan_path(), &["ip", "neigh", "show", ip, "dev", "lan0"]);
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    line.split_whitespace().skip_while(|t| *t != "lladdr").nth(1).map(str::to_string)
}

/// An access port of VLAN `vid` on the LAN's trunk `lan0`, with address
/// `addr` (`ip/len`): a macvlan tagged like cnet's VLAN endpoints.
pub fn lan_vlan_port(w: &World, name: &str, vid: u16, mac: [u8; 6], addr: &str) {
    let mut nl = cnet_dataplane::netlink::Rtnl::open_in(&w.lan_path()).expect("netlink in the LAN");
    nl.add_macvlan(name, "lan0", cnet_dataplane::Mac(mac), 1500, None).expect("LAN macvlan");
    nl.set_vlan(name, vid).expect("LAN VLAN programs");
    for args in [vec!["ip", "address", "add", addr, "dev", name], vec!["ip", "link", "set", name, "up"]] {
        let out = w.exec_in(&w.lan_path(), &args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
