//! A blocking client for cnetd's API, used by the CLI, the CNI plugin and the
//! tests. HTTP/1.1 over a Unix socket, one connection per request
//! (`Connection: close`). Hand-written because the request shape is fixed and
//! small, and a full HTTP client stack (hyper + a connector) would cost the
//! CNI plugin's start-up time and the build's.

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
}

/// A raw answer: status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client { socket: socket.as_ref().to_path_buf(), timeout: Duration::from_secs(120) }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request with a raw body and returns the raw answer.
    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|source| ClientError::Connect { socket: self.socket.display().to_string(), source })?;
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
