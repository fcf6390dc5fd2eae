//! `cnet-guest`: a stand-in for a VM in cnet's tests. It opens a TAP by
//! name (as QEMU or Firecracker would), runs smoltcp's TCP/IP stack on it
//! with the MAC it is given, configures itself by DHCP (or a static
//! address), and serves TCP: each connection gets a line with the peer's
//! address, then its lines echoed (as `cnet-testkit`'s probe servers do).
//!
//! Output, one JSON object per line on stdout: `{"event":"configured",
//! "address":"10.79.0.5/24","router":"10.79.0.1","dns":["10.79.0.1"]}` when
//! a lease arrives (or the static address is set), `{"event":"deconfigured"}`
//! when it is lost, `{"event":"device-error","error":"…"}` and exit code 3
//! when the TAP stops working (its endpoint was deleted).
//!
//! Usage: `cnet-guest TAP MAC [--port N] [--static ADDR/LEN [--gateway IP]]`
//!
//! Or `cnet-guest TAP MAC --relay NETNS`: no smoltcp, the guest is a Linux
//! kernel (the namespace NETNS), see [`relay`].

mod relay;

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{wait as phy_wait, Medium, TunTapInterface};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpListenEndpoint, Ipv4Address, Ipv4Cidr};

struct Args {
    tap: String,
    mac: [u8; 6],
    port: u16,
    static_addr: Option<Ipv4Cidr>,
    gateway: Option<Ipv4Address>,
    /// Once configured, connect here and report the greeting line.
    connect: Option<(Ipv4Address, u16)>,
    /// Relay the TAP's frames to a TAP in this namespace instead.
    relay: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let usage =
        "usage: cnet-guest TAP MAC [--port N] [--static ADDR/LEN [--gateway IP]] [--connect IP:PORT] | --relay NETNS";
    let tap = it.next().ok_or(usage)?;
    let mac_text = it.next().ok_or(usage)?;
    let parts: Vec<u8> = mac_text.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    let mac: [u8; 6] = parts.try_into().map_err(|_| format!("MAC {mac_text:?} is not aa:bb:cc:dd:ee:ff"))?;
    let mut a = Args { tap, mac, port: 80, static_addr: None, gateway: None, connect: None, relay: None };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => a.port = value.parse().map_err(|_| format!("--port {value:?}"))?,
            "--static" => a.static_addr = Some(value.parse().map_err(|_| format!("--static {value:?}"))?),
            "--relay" => a.relay = Some(value),
            "--gateway" => a.gateway = Some(value.parse().map_err(|_| format!("--gateway {value:?}"))?),
            "--connect" => {
                let (ip, port) = value.rsplit_once(':').ok_or_else(|| format!("--connect {value:?}: IP:PORT"))?;
                let ip = ip.parse().map_err(|_| format!("--connect {value:?}"))?;
                a.connect = Some((ip, port.parse().map_err(|_| format!("--connect {value:?}"))?));
            }
            _ => return Err(format!("unknown flag {flag}: {usage}")),
        }
    }
    Ok(a)
}

fn say(line: String) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn configure(iface: &mut Interface, address: Ipv4Cidr, router: Option<Ipv4Address>, dns: &[Ipv4Address]) {
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        let _ = addrs.push(IpCidr::Ipv4(address));
    });
    iface.routes_mut().remove_default_ipv4_route();
    if let Some(r) = router {
        let _ = iface.routes_mut().add_default_ipv4_route(r);
    }
    let dns: Vec<String> = dns.iter().map(|d| format!("\"{d}\"")).collect();
    let router = router.map(|r| format!("\"{r}\"")).unwrap_or_else(|| "null".into());
    say(format!(
        "{{\"event\":\"configured\",\"address\":\"{address}\",\"router\":{router},\"dns\":[{}]}}",
        dns.join(",")
    ));
}

/// A macvtap's character device (`/dev/tapN`), switched to plain frames
/// (no vnet header, no packet information), as a smoltcp device.
fn open_device(path: &str) -> io::Result<TunTapInterface> {
    use std::os::fd::IntoRawFd;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        _pad: [u8; 22],
    }
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let mut req = IfReq { name: [0; 16], flags: 0x0002 | 0x1000, _pad: [0; 22] };
    // SAFETY: TUNSETIFF on an open macvtap descriptor reads a `struct ifreq`
    // (40 bytes, laid out as `req`), which outlives the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Non-blocking, as smoltcp's own TAP is: it reads until "would block".
    // SAFETY: fcntl(2) on a descriptor we own.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::fcntl(f.as_raw_fd(), libc::F_GETFL) | libc::O_NONBLOCK) };
    TunTapInterface::from_fd(f.into_raw_fd(), Medium::Ethernet, 1500)
}

/// One TCP connection's state: greeted yet, and a partial line.
#[derive(Default)]
struct Conn {
    greeted: bool,
}

fn run(a: Args) -> Result<(), String> {
    let mut device = if a.tap.starts_with("/dev/") {
        open_device(&a.tap).map_err(|e| format!("opening {}: {e}", a.tap))?
    } else {
        let tap = TunTapInterface::new(&a.tap, Medium::Ethernet).map_err(|e| format!("opening TAP {}: {e}", a.tap))?;
        // Our open turned the TAP's carrier on: have the kernel apply that
        // now (or the bridge port drops our first frames, a DHCP DISCOVER
        // the client repeats only seconds later). A VMM's guest boots for
        // longer than the kernel's delay (up to a second); we do not.
        let _ = cnet_dataplane::link::sync_carrier(&a.tap);
        tap
    };
    let fd = device.as_raw_fd();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(a.mac)));
    let mut iface = Interface::new(config, &mut device, Instant::now());
    let mut sockets = SocketSet::new(vec![]);
    let dhcp = a.static_addr.is_none().then(|| sockets.add(dhcpv4::Socket::new()));
    if let Some(addr) = a.static_addr {
        configure(&mut iface, addr, a.gateway, &[]);
    }
    // A few listening sockets, so that several clients may connect at once.
    let client = a.connect.map(|_| {
        let rx = tcp::SocketBuffer::new(vec![0; 4096]);
        let tx = tcp::SocketBuffer::new(vec![0; 4096]);
        sockets.add(tcp::Socket::new(rx, tx))
    });
    let mut client_state = 0u8; // 0: not yet, 1: connecting, 2: reported
    let mut greeting = String::new();
    let mut configured = a.static_addr.is_some();
    let mut servers = Vec::new();
    for _ in 0..4 {
        let rx = tcp::SocketBuffer::new(vec![0; 16384]);
        let tx = tcp::SocketBuffer::new(vec![0; 16384]);
        servers.push((sockets.add(tcp::Socket::new(rx, tx)), Conn::default()));
    }
    loop {
        let now = Instant::now();
        iface.poll(now, &mut device, &mut sockets);
        if let Some(h) = dhcp {
            match sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                Some(dhcpv4::Event::Configured(c)) => {
                    configure(&mut iface, c.address, c.router, &c.dns_servers);
                    configured = true;
                }
                Some(dhcpv4::Event::Deconfigured) => {
                    iface.update_ip_addrs(|addrs| addrs.clear());
                    iface.routes_mut().remove_default_ipv4_route();
                    say("{\"event\":\"deconfigured\"}".into());
                }
                None => {}
            }
        }
        if let (Some(h), Some((ip, port)), true) = (client, a.connect, configured) {
            let s = sockets.get_mut::<tcp::Socket>(h);
            if client_state == 0 {
                let local = 49152 + (now.total_millis() % 16000) as u16;
                match s.connect(iface.context(), (ip, port), local) {
                    Ok(()) => client_state = 1,
                    Err(e) => say(format!("{{\"event\":\"connect-error\",\"error\":\"{e}\"}}")),
                }
            } else if client_state == 1 && s.can_recv() {
                let mut buf = [0u8; 256];
                if let Ok(n) = s.recv_slice(&mut buf) {
                    greeting.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                // The greeting is a whole line; it may come in pieces.
                if let Some(line) = greeting.lines().next().filter(|_| greeting.contains('\n')) {
                    say(format!("{{\"event\":\"connected\",\"greeting\":\"{}\"}}", line.trim()));
                    s.close();
                    client_state = 2;
                }
            }
        }
        for (h, conn) in servers.iter_mut() {
            let s = sockets.get_mut::<tcp::Socket>(*h);
            if !s.is_open() {
                *conn = Conn::default();
                let _ = s.listen(IpListenEndpoint { addr: None, port: a.port });
            }
            if s.is_active() && !conn.greeted && s.can_send() {
                let peer = s.remote_endpoint().map(|e| e.addr.to_string()).unwrap_or_default();
                let _ = s.send_slice(format!("{peer}\n").as_bytes());
                conn.greeted = true;
            }
            if s.can_recv() && s.can_send() {
                let mut buf = [0u8; 4096];
                if let Ok(n) = s.recv_slice(&mut buf) {
                    let _ = s.send_slice(&buf[..n]);
                }
            } else if s.state() == tcp::State::CloseWait {
                // The peer is done: so are we.
                s.close();
            }
        }
        // Send what the sockets queued now, not after the next frame arrives.
        iface.poll(Instant::now(), &mut device, &mut sockets);
        let delay = iface.poll_delay(Instant::now(), &sockets);
        // At most 200 ms, so that a device that went away is noticed.
        let most = smoltcp::time::Duration::from_millis(200);
        let delay = Some(delay.map_or(most, |d| d.min(most)));
        phy_wait(fd, delay).map_err(|e| format!("waiting on TAP {}: {e}", a.tap))?;
        // A deleted device: a TAP's descriptor reports an error; a
        // macvtap's does not (the kernel just drops what it is given), but
        // its device node goes.
        let node_gone = a.tap.starts_with("/dev/") && !std::path::Path::new(&a.tap).exists();
        if node_gone || device_gone(&mut device) {
            return Err(format!("{} is gone", a.tap));
        }
    }
}

/// Whether the TAP's descriptor reports an error (the device was deleted):
/// checked before every poll, since smoltcp gives up on a failed read.
fn device_gone(device: &mut TunTapInterface) -> bool {
    let mut p = libc::pollfd { fd: device.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll(2) on one valid pollfd, without waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && (p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL)) != 0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cnet-guest: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &args.relay {
        Some(netns) => relay::run(&args.tap, netns),
        None => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(format!("{{\"event\":\"device-error\",\"error\":{:?}}}", e));
            ExitCode::from(3)
        }
    }
}
