//! What a container can reach of cnetd: its DNS server on the gateway, and
//! nothing else. The API and the Docker plugin listen on path sockets in
//! the host's mount namespace, which runtimes do not give containers, and
//! never on abstract ones (those any process of the host's network
//! namespace could open); no other TCP port of the host answers.

mod common;
use common::*;
use serde_json::json;

/// The lines of `ss` (in the host's namespace) for sockets of process `pid`.
fn sockets_of(w: &World, pid: u32, kind: &str) -> Vec<String> {
    let out = w.exec_in(&w.host_path(), &["ss", "-H", "-l", "-n", "-p", kind]);
    assert!(out.status.success(), "ss: {}", String::from_utf8_lossy(&out.stderr));
    let tag = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&tag)).map(str::to_string).collect()
}

/// The TCP ports of `ip` that accept a connection from namespace `netns`
/// (every port tried; non-blocking connects, 2,000 at a time).
fn open_tcp_ports(w: &World, netns: &str, ip: &str) -> Vec<u16> {
    let scan = r#"
import resource, select, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
ip, found = sys.argv[1], []
for start in range(1, 65536, 2000):
    pending = {}
    for port in range(start, min(start + 2000, 65536)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((ip, port))
        pending[s] = port
    poll, by_fd = select.poll(), {s.fileno(): s for s in pending}
    for fd in by_fd:
        poll.register(fd, select.POLLOUT)
    waited = 0
    while by_fd and waited < 10:
        for fd, _ in poll.poll(100):
            s = by_fd.pop(fd)
            poll.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                found.append(pending[s])
        waited += 1
    for s in pending:
        s.close()
print(" ".join(map(str, sorted(found))))
"#;
    let out = w.exec_in(netns, &["python3", "-c", scan, ip]);
    assert!(out.status.success(), "the scan: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(|p| p.parse().unwrap()).collect()
}

#[test]
fn a_container_reaches_only_the_dns_server_of_cnetd_and_no_api_socket() {
    cnet_testkit::require_root!();
    let w = World::new();
    let net = network(&w, "reach", "NAT", &["10.71.0.0/24"]);
    let a = container(&w, &net, "a", json!([]));
    let pid = w.daemon_pid().expect("cnetd runs");
    let gateway = "10.71.0.1";

    let unix = sockets_of(&w, pid, "-x");
    assert!(!unix.is_empty(), "cnetd listens on its API socket");
    for line in &unix {
        let local = line.split_whitespace().nth(4).unwrap_or_default();
        assert!(local.starts_with('/'), "cnetd listens on a socket that is not a path: {line}");
        assert!(!local.starts_with('@'), "an abstract socket: {line}");
    }
    let inet: Vec<String> = ["-t", "-u"].iter().flat_map(|k| sockets_of(&w, pid, k)).collect();
    for line in &inet {
        let local = line.split_whitespace().nth(3).unwrap_or_default();
        assert!(local.ends_with(":53"), "cnetd listens on an inet port other than DNS: {line}");
    }
    assert!(inet.iter().any(|l| l.contains(&format!("{gateway}:53"))), "cnetd serves DNS on the gateway: {inet:?}");

    assert_eq!(open_tcp_ports(&w, &a.path(), gateway), vec![53], "what the container reaches on the host");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
