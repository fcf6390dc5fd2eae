//! A blocking client for cnetd's API, used by the CLI, the CNI plugin and the
//! tests. HTTP/1.1 over a Unix socket, one connection per request
//! (`Connection: close`). Hand-written because the request shape is fixed and
//! small, and a full HTTP client stack (hyper + a connector) would cost the
//! CNI plugin's start-up time and the build's.

pub mod runtime;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cnet_model::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The default socket of cnetd.
pub const DEFAULT_SOCKET: &str = "/run/cnet/cnetd.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach cnetd at {socket}: {source} (is cnetd running? start it with `cnetd --socket {socket}`)")]
    Connect { socket: String, source: std::io::Error },
    #[error("talking to cnetd failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("cnetd answered something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    Api(ApiError),
}

impl ClientError {
    /// The API error code, when cnetd answered with one.
    pub fn code(&self) -> Option<cnet_model::ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.error_code),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    /// How long to keep trying while the socket is missing or refuses
    /// (cnetd restarting); zero: fail at once.
    patience: Duration,
}

/// A raw answer: status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client { socket: socket.as_ref().to_path_buf(), timeout: Duration::from_secs(120), patience: Duration::ZERO }
    }

    /// Waits up to `patience` for cnetd to answer a connection (it may be
    /// restarting); only connecting is retried, never a request.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        let deadline = std::time::Instant::now() + self.patience;
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => return Ok(s),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => return Err(ClientError::Connect { socket: self.socket.display().to_string(), source }),
            }
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request with a raw body and returns the raw answer.
    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(self.timeout))?;
        let body = body.unwrap_or(&[]);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: cnetd\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw)
    }

    /// Sends a request with a JSON body and decodes a JSON answer; error
    /// answers become [`ClientError::Api`].
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("request bodies serialise"));
        let resp = self.raw(method, path, bytes.as_deref())?;
        if resp.status >= 400 {
            let err: ApiError = serde_json::from_slice(&resp.body).map_err(|_| {
                ClientError::Protocol(format!(
                    "status {} with body {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                ))
            })?;
            return Err(ClientError::Api(err));
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&resp.body))))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None::<&()>)
    }
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.call("POST", path, Some(body))
    }
    pub fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.call("PATCH", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", path, None::<&()>).map(|_| ())
    }
}

/// Escapes a value for a query string or a path segment.
pub fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse_response(raw: &[u8]) -> Result<Response, ClientError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol("no HTTP header in the answer".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bad status line in {head:?}")))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::Protocol("truncated chunk".into()))?;
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(ClientError::Protocol("truncated chunk".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_client_waits_for_the_socket_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let started = std::time::Instant::now();
        let err = Client::new(&path).with_patience(Duration::from_millis(300)).get::<u32>("/x").unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        // The socket appears while the client waits: the request goes through.
        let p = path.clone();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf).unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n7").unwrap();
        });
        let v: u32 = Client::new(&path).with_patience(Duration::from_secs(10)).get("/x").unwrap();
        assert_eq!(v, 7);
        server.join().unwrap();
    }

    #[test]
    fn chunked_answers_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn plain_answers_keep_their_body() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"{}"[..]));
    }
}
