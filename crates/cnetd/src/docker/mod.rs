//! Docker's plugin protocol (v1, the legacy plugins that remote network
//! and IPAM drivers are): cnetd answers it on a second Unix socket
//! (`--docker-plugin-socket`) as both a `NetworkDriver` ([`driver`]) and
//! an `IpamDriver` ([`ipam`]), so that `docker network create -d cnet
//! --ipam-driver cnet` makes cnet networks. See `docs/docker.md` and
//! `docs/runtimes-research.md` §5.
//!
//! Invariants:
//! - Every call is `POST /<Interface>.<Method>` with a JSON body that may be
//!   empty or `null`, with maps that may be `null`; the body is parsed here
//!   from its bytes (dockerd sends `application/vnd.docker.plugins.v1.2+json`,
//!   which axum's `Json` would refuse).
//! - Every answer is `200` with JSON; a failure is `{"Err": …}` for
//!   NetworkDriver calls and `{"Error": …}` for IpamDriver calls. A method
//!   cnet does not implement answers `404` with `{"Err": "… not implemented"}`.
//! - Handlers call the [`Service`] on the blocking pool (its calls block)
//!   and never call back into dockerd, which waits for the answer while
//!   holding its locks.
//! - The container end of a joined endpoint is left in cnetd's own network
//!   namespace: dockerd must run in the same one.
//! - IDs are stable functions of Docker's IDs, so nothing Docker holds
//!   needs a table in memory to be found again after a restart.

pub mod driver;
pub mod ipam;
pub mod ports;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::service::Service;

/// The media type of the plugin protocol's bodies.
pub const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The plugin: the service, and what lives only between two of Docker's calls.
pub struct Plugin {
    svc: Arc<Service>,
    book: Mutex<ipam::Book>,
    /// Port bindings given with `CreateEndpoint`, for a
    /// `ProgramExternalConnectivity` that comes without them.
    ports: Mutex<HashMap<Uuid, Vec<ports::PortBinding>>>,
}

impl Plugin {
    pub fn new(svc: Arc<Service>) -> Arc<Plugin> {
        Arc::new(Plugin { svc, book: Default::default(), ports: Default::default() })
    }
    fn book(&self) -> MutexGuard<'_, ipam::Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn ports(&self) -> MutexGuard<'_, HashMap<Uuid, Vec<ports::PortBinding>>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one call: `method` is the path without its `/`.
    pub fn call(&self, method: &str, body: &[u8]) -> (StatusCode, Value) {
        let (field, out) = match method.split_once('.').map(|(i, _)| i) {
            Some("IpamDriver") => ("Error", self.ipam_call(method, body)),
            _ => ("Err", self.network_call(method, body)),
        };
        match out {
            Some(Ok(v)) => (StatusCode::OK, v),
            Some(Err(msg)) => {
                tracing::warn!(method, "docker plugin call failed: {msg}");
                (StatusCode::OK, json!({ field: msg }))
            }
            None => (StatusCode::NOT_FOUND, json!({"Err": format!("{method} is not implemented by cnet")})),
        }
    }

    fn ipam_call(&self, method: &str, body: &[u8]) -> Option<Result<Value, String>> {
        #[derive(Default, Deserialize)]
        #[serde(default)]
        struct PoolOnly {
            #[serde(rename = "PoolID")]
            pool_id: String,
        }
        Some(match method {
            "IpamDriver.GetCapabilities" => Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": ipam::LOCAL_SPACE, "GlobalDefaultAddressSpace": ipam::GLOBAL_SPACE
            })),
            "IpamDriver.RequestPool" => parse(body).and_then(|r| self.request_pool(r)),
            "IpamDriver.ReleasePool" => parse::<PoolOnly>(body).map(|r| self.release_pool(&r.pool_id)),
            "IpamDriver.RequestAddress" => parse(body).and_then(|r| self.request_address(r)),
            "IpamDriver.ReleaseAddress" => parse(body).map(|r| self.release_address(r)),
            _ => return None,
        })
    }

    fn network_call(&self, method: &str, body: &[u8]) -> Option<Result<Value, String>> {
        Some(match method {
            "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            "NetworkDriver.GetCapabilities" => Ok(json!({"Scope": "local", "ConnectivityScope": "local"})),
            "NetworkDriver.CreateNetwork" => {
                checked(parse(body), |r: &driver::NetworkRequest| &r.network_id).and_then(|r| self.create_network(r))
            }
            "NetworkDriver.DeleteNetwork" => checked(parse(body), |r: &driver::NetworkRequest| &r.network_id)
                .and_then(|r| self.delete_network(&r.network_id)),
            "NetworkDriver.CreateEndpoint" => endpoint(body).and_then(|r| self.create_endpoint(r)),
            "NetworkDriver.DeleteEndpoint" => endpoint(body).and_then(|r| self.delete_endpoint(r)),
            "NetworkDriver.EndpointOperInfo" => Ok(json!({"Value": {}})),
            "NetworkDriver.Join" => endpoint(body).and_then(|r| self.join(r)),
            // Docker moves the interface back and renames it itself; DeleteEndpoint removes it.
            "NetworkDriver.Leave" => Ok(json!({})),
            "NetworkDriver.ProgramExternalConnectivity" => endpoint(body).and_then(|r| self.program_external(r)),
            "NetworkDriver.RevokeExternalConnectivity" => endpoint(body).and_then(|r| self.revoke_external(r)),
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            // Swarm only (global scope): cnet is a local-scope driver.
            _ => return None,
        })
    }
}

/// A body as `T`; an empty body or `null` is `T`'s default.
fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| format!("the request body is not what the plugin protocol sends: {e}"))
}

/// Refuses a request whose Docker ID (`id`) is not one.
fn checked<T>(r: Result<T, String>, id: impl Fn(&T) -> &String) -> Result<T, String> {
    let r = r?;
    let s = id(&r);
    if s.len() < 12 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("{s:?} is not a Docker ID (64 hex digits)"));
    }
    Ok(r)
}

fn endpoint(body: &[u8]) -> Result<driver::EndpointRequest, String> {
    let r = checked(parse(body), |r: &driver::EndpointRequest| &r.network_id)?;
    checked(Ok(r), |r| &r.endpoint_id)
}

/// `null` as the type's default (Docker sends `null` for empty maps and lists).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The first 12 characters of a Docker ID (as `docker ps` shows them).
pub(crate) fn short(docker_id: &str) -> &str {
    docker_id.get(..12).unwrap_or(docker_id)
}

/// The cnet ID of a Docker object: a stable function of its kind and ID.
pub fn stable_id(kind: &str, docker_id: &str) -> Uuid {
    let key = format!("docker\0{kind}\0{docker_id}");
    let a = cnet_model::names::stable_hash(key.as_bytes());
    let b = cnet_model::names::stable_hash(format!("cnet\0{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The router: every path goes to [`Plugin::call`].
pub fn router(plugin: Arc<Plugin>) -> Router {
    Router::new().fallback(move |uri: Uri, body: Bytes| {
        let plugin = plugin.clone();
        async move {
            let method = uri.path().trim_start_matches('/').to_string();
            tracing::debug!(method, "docker plugin call");
            let answer = tokio::task::spawn_blocking(move || plugin.call(&method, &body)).await;
            let (status, value) = answer.unwrap_or_else(|e| {
                (StatusCode::OK, json!({"Err": format!("the plugin's handler failed: {e}"), "Error": e.to_string()}))
            });
            reply(status, value)
        }
    })
}

fn reply(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, MEDIA_TYPE)], v.to_string()).into_response()
}

/// Serves the plugin protocol on `path` until the process ends.
pub async fn serve(svc: Arc<Service>, listener: tokio::net::UnixListener, path: &Path) {
    tracing::info!(socket = %path.display(), "Docker network and IPAM plugin ready");
    if let Err(e) = axum::serve(listener, router(Plugin::new(svc))).await {
        tracing::error!("the Docker plugin socket failed: {e}");
    }
}

#[cfg(test)]
mod tests;
