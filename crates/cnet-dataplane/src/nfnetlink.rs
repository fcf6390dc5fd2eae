//! nfnetlink framing (`NETLINK_NETFILTER`): messages with a `nfgenmsg`
//! header and attributes, and a socket that sends one request and reads its
//! answer. Shared by [`crate::conntrack`] (ctnetlink) and the nftables
//! element lookup in [`crate::nft`].
//!
//! Invariants: a socket lives in the namespace of the thread that opened it;
//! every request asks for an acknowledgement, so an answer always ends with
//! it (or with an error, or the end of a dump).

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NetlinkAddr};

pub const NLMSG_HDRLEN: usize = 16;
pub const NFGENMSG_LEN: usize = 4;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;
const NFNL_MSG_BATCH_BEGIN: u8 = 0x10;
const NFNL_MSG_BATCH_END: u8 = 0x11;

/// Appends one attribute, padded to 4 bytes.
pub fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).expect("a netlink attribute fits in 64 KiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Appends one nested attribute whose contents `f` appends.
pub fn nest(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    f(buf);
    let len = u16::try_from(buf.len() - start).expect("a netlink attribute fits in 64 KiB");
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

/// A message of subsystem `subsys`: netlink header, `nfgenmsg`, attributes.
pub fn message(subsys: u16, msg_type: u8, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len()).expect("a netfilter request is small");
    let mut buf = Vec::with_capacity(len as usize);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&(subsys << 8 | u16::from(msg_type)).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]); // res_id 0
    buf.extend_from_slice(attrs);
    buf
}

/// `body` (nf_tables messages) framed as one transaction: a batch begin
/// with sequence number `seq`, the messages, a batch end with `end_seq`.
pub fn nftables_batch(seq: u32, body: &[u8], end_seq: u32) -> Vec<u8> {
    let mut begin = message(0, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, &[]);
    // The batch's subsystem, in network order, where `nfgenmsg` has its res_id.
    begin[18..20].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    let mut end = message(0, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, 0, &[]);
    end[18..20].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    [&begin[..], body, &end[..]].concat()
}

/// The (kind, value) attributes in `buf`, as the kernel packs them (the kind
/// with its flags).
pub fn attributes(mut buf: &[u8]) -> std::result::Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < 4 || len > buf.len() {
            return Err(format!("an attribute of type {kind} claims {len} bytes, {} are left", buf.len()));
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(out)
}

/// A netfilter netlink socket in the calling thread's namespace.
pub struct Nfnl {
    socket: Socket,
    seq: u32,
}

/// The socket [`Nfnl::with_shared`] lends, in cnetd's own namespace.
static SHARED: std::sync::Mutex<Option<Nfnl>> = std::sync::Mutex::new(None);

/// The inode of the namespace at `path` (`/proc/thread-self/ns/net`: the calling thread's).
fn netns_inode(path: &str) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

impl Nfnl {
    /// Runs `f` with a socket of the calling thread's namespace. In cnetd's
    /// own namespace the socket is kept open (one user at a time: lookups
    /// are short); in another one (a container's) it is made for the call
    /// and closed in the background ([`Nfnl::close_later`]), so that no
    /// socket keeps that namespace alive. Why not a socket per call:
    /// closing a netfilter socket runs nf_tables' release notifier, which
    /// waits for every deleted object of the last commits to be freed (an
    /// RCU grace period: 10–35 ms here) whenever there are some.
    pub fn with_shared<T>(f: impl FnOnce(&mut Nfnl) -> io::Result<T>) -> io::Result<T> {
        if netns_inode("/proc/thread-self/ns/net")? != netns_inode("/proc/self/ns/net")? {
            let mut nl = Nfnl::open()?;
            let out = f(&mut nl);
            nl.close_later();
            return out;
        }
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let nl = match shared.as_mut() {
            Some(nl) => nl,
            None => shared.insert(Nfnl::open()?),
        };
        let out = f(nl);
        if out.is_err() {
            // A socket in an unknown state (a half-read answer) is not lent again.
            if let Some(nl) = shared.take() {
                nl.close_later();
            }
        }
        out
    }

    /// Closes the socket on a background thread: the close can wait an RCU
    /// grace period (see [`Nfnl::with_shared`]), which no request should.
    pub fn close_later(self) {
        static CLOSER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Nfnl>>> = std::sync::OnceLock::new();
        let closer = CLOSER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Nfnl>();
            let spawned = std::thread::Builder::new().name("nfnl-closer".into()).spawn(move || {
                for nl in rx {
                    drop(nl);
                }
            });
            spawned.ok().map(|_| tx)
        });
        // Without the thread (none could be started), the socket is closed here.
        match closer {
            Some(tx) => drop(tx.send(self)),
            None => drop(self),
        }
    }

    pub fn open() -> io::Result<Nfnl> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        // Acknowledgements without a copy of the request.
        socket.set_cap_ack(true)?;
        Ok(Nfnl { socket, seq: 0 })
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `batch` (an [`nftables_batch`]) and returns the (sequence
    /// number, 0 or -errno) of every acknowledgement and error it got. The
    /// kernel handles a batch within the send, so every answer is queued
    /// when it returns; they are read without waiting, and an answer that
    /// is not there is never waited for.
    pub fn send_batch(&mut self, batch: &[u8]) -> io::Result<Vec<(u32, i32)>> {
        self.socket.send(batch, 0)?;
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(65536);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) => return Err(e),
            }
            for (kind, seq, payload) in messages(&buf)? {
                if kind == NLMSG_ERROR {
                    out.push((seq, error_code(payload)));
                }
            }
        }
    }

    /// Sends `request` and hands the payload of every answer message of type
    /// `answer` to `each`, until the acknowledgement, the end of a dump or an
    /// error (as the errno).
    pub fn exchange(
        &mut self,
        request: &[u8],
        answer: u16,
        mut each: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let seq = u32::from_ne_bytes(request[8..12].try_into().expect("a netlink header"));
        self.socket.send(request, 0)?;
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            for (kind, reply_seq, payload) in messages(&data)? {
                if reply_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = error_code(payload);
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    k if k == answer => each(payload)?,
                    _ => {}
                }
            }
        }
    }
}

/// The (type, sequence number, payload) of each netlink message in `data`.
fn messages(data: &[u8]) -> io::Result<Vec<(u16, u32, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= data.len() {
        let h = &data[at..];
        let len = u32::from_ne_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(h[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(h[8..12].try_into().expect("4 bytes"));
        if len < NLMSG_HDRLEN || len > h.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a netlink message longer than what was received"));
        }
        out.push((kind, seq, &h[NLMSG_HDRLEN..len]));
        at += len.next_multiple_of(4);
    }
    Ok(out)
}

/// The code an error or done message starts with: 0 for success, else -errno.
fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map_or(0, |c| i32::from_ne_bytes(c.try_into().expect("4 bytes")))
}

/// Fuzzing entry point: attributes parsed from `buf` and encoded again by
/// [`put`] parse back to the same list (nested ones too). Panics on a
/// mismatch.
#[doc(hidden)]
pub fn check_round_trip(buf: &[u8]) {
    fn walk(buf: &[u8], depth: usize) {
        let Ok(attrs) = attributes(buf) else { return };
        let mut again = Vec::new();
        for (kind, value) in &attrs {
            put(&mut again, *kind, value);
        }
        assert_eq!(attributes(&again).expect("our own encoding parses"), attrs, "attributes changed on the way back");
        if depth < 4 {
            for (kind, value) in &attrs {
                if kind & NLA_F_NESTED != 0 {
                    walk(value, depth + 1);
                }
            }
        }
    }
    walk(buf, 0);
}
