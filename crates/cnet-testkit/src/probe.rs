//! Packet probes: servers that answer with the peer address they saw, and
//! clients with short timeouts. Sockets are created inside a namespace (on a
//! thread of their own) and then used from anywhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cnet_dataplane::netns::run_in;

const TIMEOUT: Duration = Duration::from_secs(3);

/// A server running until dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Accepts TCP connections in `netns` on `addr` until the server is dropped;
/// each connection (blocking, greeted by nothing yet) goes to `handle` on a
/// thread of its own.
fn tcp_accept_loop(netns: &str, addr: &str, handle: fn(TcpStream, SocketAddr)) -> Server {
    let addr: SocketAddr = addr.parse().expect("server address");
    let listener = run_in(netns, move || TcpListener::bind(addr)).expect("enter netns").expect("bind");
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    std::thread::spawn(move || handle(s, peer));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Server { stop }
}

/// A TCP server in `netns` on `addr`: each connection first gets the peer's
/// address as a line, then every line it sends is echoed back.
pub fn tcp_server(netns: &str, addr: &str) -> Server {
    tcp_accept_loop(netns, addr, |mut s, peer| {
        if writeln!(s, "{}", peer.ip()).is_err() {
            return;
        }
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if s.write_all(line.as_bytes()).is_err() {
                return;
            }
            line.clear();
        }
    })
}

/// A UDP server in `netns` on `addr` that answers each datagram with the
/// sender's address.
pub fn udp_server(netns: &str, addr: &str) -> Server {
    let addr: SocketAddr = addr.parse().expect("server address");
    let sock = run_in(netns, move || UdpSocket::bind(addr)).expect("enter netns").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !flag.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(peer.ip().to_string().as_bytes(), peer);
            }
        }
    });
    Server { stop }
}

/// An open TCP connection made from a namespace.
pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The address the server saw us come from.
    pub seen_as: String,
}

impl Conn {
    /// Sends a line and waits for its echo.
    pub fn echo(&mut self, msg: &str) -> std::io::Result<String> {
        writeln!(self.stream, "{msg}")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        Ok(line.trim_end().to_string())
    }
}

/// Connects from `netns` to `addr` and reads the greeting.
pub fn tcp_connect(netns: &str, addr: &str) -> std::io::Result<Conn> {
    let addr: SocketAddr = addr.parse().expect("target address");
    let stream = run_in(netns, move || TcpStream::connect_timeout(&addr, TIMEOUT)).expect("enter netns")?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut seen_as = String::new();
    reader.read_line(&mut seen_as)?;
    if seen_as.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no greeting"));
    }
    Ok(Conn { stream, reader, seen_as: seen_as.trim().to_string() })
}

/// The address a TCP server at `addr` saw us come from, or `None` when it
/// could not be reached.
pub fn tcp_seen_as(netns: &str, addr: &str) -> Option<String> {
    tcp_connect(netns, addr).ok().map(|c| c.seen_as)
}

/// The address a UDP server at `addr` saw us come from, or `None`.
pub fn udp_seen_as(netns: &str, addr: &str) -> Option<String> {
    let target: SocketAddr = addr.parse().expect("target address");
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let sock = run_in(netns, move || UdpSocket::bind(bind)).expect("enter netns").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(700))).ok()?;
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        sock.send_to(b"hello", target).ok()?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

/// Whether an ICMP echo from `netns` to `addr` is answered (two tries).
pub fn ping(netns: &str, addr: &str) -> bool {
    std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", addr])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A plain TCP connection from `netns` to `addr` (no greeting expected).
pub fn tcp_stream(netns: &str, addr: &str) -> Option<TcpStream> {
    let addr: SocketAddr = addr.parse().expect("target address");
    let stream = run_in(netns, move || TcpStream::connect_timeout(&addr, TIMEOUT)).expect("enter netns").ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    Some(stream)
}

/// `GET /` over HTTP/1.0 from `netns`; the whole answer, or `None`.
pub fn http_get(netns: &str, addr: &str) -> Option<String> {
    let mut s = tcp_stream(netns, addr)?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// [`http_get`], giving a server that is still starting 5 s to listen.
pub fn http_get_when_up(netns: &str, addr: &str) -> Option<String> {
    let start = std::time::Instant::now();
    loop {
        match http_get(netns, addr) {
            None if start.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(100)),
            answer => return answer,
        }
    }
}

/// A TCP server in `netns` on `addr` that writes the peer's address as a
/// line and closes: for clients that read until the server hangs up (`nc`).
pub fn tcp_greeter(netns: &str, addr: &str) -> Server {
    tcp_accept_loop(netns, addr, |mut s, peer| {
        let _ = writeln!(s, "{}", peer.ip());
    })
}

/// A transparent proxy's end in `netns` on `addr`: each connection redirected
/// to it gets the destination its client chose (`SO_ORIGINAL_DST`, IPv4) as
/// the line `proxied <address>:<port>`, or `not redirected` without one.
pub fn original_destination_server(netns: &str, addr: &str) -> Server {
    tcp_accept_loop(netns, addr, |mut s, _| {
        let line = match original_destination(&s) {
            Some(dst) => format!("proxied {dst}"),
            None => "not redirected".to_string(),
        };
        let _ = writeln!(s, "{line}");
    })
}

fn original_destination(s: &TcpStream) -> Option<std::net::SocketAddrV4> {
    use std::os::fd::AsRawFd;
    const SO_ORIGINAL_DST: libc::c_int = 80;
    // SAFETY: sockaddr_in is plain data, for which all zeroes is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: sa and len are valid for the kernel to write a sockaddr_in.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            (&mut sa as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| std::net::SocketAddrV4::new(u32::from_be(sa.sin_addr.s_addr).into(), u16::from_be(sa.sin_port)))
}

/// TCP throughput in Mbit/s between `client_ns` and an iperf3 server in
/// `server_ns` on `server_ip`, as the **receiver** counted it: one stream,
/// `iperf3 -O 1 -t 3` (the first second, slow start, left out). With
/// `reverse` the server sends (`-R`): the client's namespace receives.
/// `None` when iperf3 cannot run or connect.
pub fn iperf_mbit(server_ns: &str, client_ns: &str, server_ip: &str, reverse: bool) -> Option<f64> {
    use std::process::{Command, Stdio};
    let nsenter = |ns: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={ns}"));
        c
    };
    let mut server = nsenter(server_ns)
        .args(["iperf3", "-s", "-1", "-B", server_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut args = vec!["iperf3", "-c", server_ip, "-O", "1", "-t", "3", "-J"];
    if reverse {
        args.push("-R");
    }
    // The server needs a moment to listen.
    for _ in 0..50 {
        let out = nsenter(client_ns).args(&args).output().ok()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            let _ = server.wait();
            return Some(bps / 1e6);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    None
}

/// Sends one UDP datagram from `src` to `dst` as a raw Ethernet frame
/// from a packet socket on `ifname` in `netns` (to the broadcast MAC), as
/// a container holding `CAP_NET_RAW` can: past every IP hook of its
/// namespace.
pub fn raw_udp(netns: &str, ifname: &str, src: std::net::Ipv4Addr, dst: std::net::SocketAddrV4) -> std::io::Result<()> {
    use std::io::Error;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let ifname = std::ffi::CString::new(ifname).map_err(Error::other)?;
    run_in(netns, move || -> std::io::Result<()> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `ifname` is a NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        if index == 0 {
            return Err(Error::last_os_error());
        }
        // SAFETY: an all-zero ifreq is valid; the name fits (it came from a link name) and ends in NUL.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(ifname.as_bytes()) {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFHWADDR fills `req`, which lives across the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
            return Err(Error::last_os_error());
        }
        // SAFETY: the ioctl above filled the hardware address member of the union.
        let mac: Vec<u8> = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data[..6].iter().map(|b| *b as u8).collect() };
        let payload = b"raw";
        let udp_len = 8 + payload.len() as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.ip().octets());
        let sum = ip.chunks(2).fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
        let sum = !(((sum >> 16) + (sum & 0xffff)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&4321u16.to_be_bytes());
        frame.extend_from_slice(&dst.port().to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]); // no UDP checksum
        frame.extend_from_slice(payload);
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set are its own.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: `frame` and `to` live across the call, with their lengths given.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    })
    .map_err(Error::other)?
}

/// A UDP socket in `netns` on `addr` that says whether a datagram arrives
/// within a second.
pub fn udp_sink(netns: &str, addr: &str) -> UdpSocket {
    let addr: SocketAddr = addr.parse().expect("sink address");
    let sock = run_in(netns, move || UdpSocket::bind(addr)).expect("enter netns").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    sock
}
