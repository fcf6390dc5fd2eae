//! The HTTP/JSON API on the Unix socket, and its OpenAPI description.
//!
//! Every handler parses the body itself ([`wire`]: every failure is an
//! HCN-shaped error with a code), runs the service call on the blocking pool
//! (the service talks to the store and the kernel synchronously), and turns
//! the records it answers with into the HCN wire structs.

pub mod wire;

use cnet_model::cluster::{ClusterBlock, ClusterHost, ClusterStatus};
use cnet_model::route::HostComputeRoute;
use cnet_model::stats::{DropCounts, EndpointStats};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use cnet_model::validate::{check_policy_types, endpoint_policy_types};
use cnet_model::{ApiError, Endpoint, ErrorCode, Namespace, Network};

use crate::diag::{DiagReport, Health};
use crate::error::ServiceError;
use crate::service::{EndpointFilter, NetworkFilter, Service};
use cnet_model::findings::{Finding, FindingKind, Subject, SubjectKind};
use wire::{body_value, parse, query, Failure};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

type Svc = State<Arc<Service>>;

type Answer<T> = Result<(StatusCode, Json<T>), Failure>;

async fn blocking<T: Send + 'static>(
    svc: Arc<Service>,
    f: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| Failure(ApiError::internal(format!("the request handler failed: {e}"))))?
        .map_err(Failure::from)
}

fn ok<T>(v: T) -> Answer<T> {
    Ok((StatusCode::OK, Json(v)))
}
fn created<T>(v: T) -> Answer<T> {
    Ok((StatusCode::CREATED, Json(v)))
}

/// `{"Success": true}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Success {
    pub success: bool,
}

/// `GET /globals/version`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    /// The cnet build.
    pub build: String,
}

/// `GET /capabilities`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub network_types: Vec<String>,
    pub endpoint_policies: Vec<String>,
    pub network_policies: Vec<String>,
    pub dual_stack: bool,
    pub port_ranges: bool,
    pub sctp: bool,
    pub local_routed_vip: bool,
    pub nat_loopback: bool,
    /// macvlan links: Transparent networks.
    pub macvlan: bool,
    /// 802.1Q links: `VLAN` policies on Transparent networks.
    pub vlan: bool,
    /// Isolated bridge ports: L2Tunnel networks.
    pub bridge_port_isolation: bool,
    /// The kernel's 802.1Q links and bridge VLAN filtering (cnet needs
    /// neither: it tags VLANs by eBPF), for operators.
    pub vlan_8021q: bool,
    pub bridge_vlan_filtering: bool,
    /// IPAM types: Static, and Dhcp (Transparent networks).
    pub ipam_types: Vec<String>,
}

#[utoipa::path(get, path = "/globals/version", responses((status = 200, body = Version)))]
async fn version() -> Json<Version> {
    Json(Version { major: 2, minor: 0, build: format!("cnet {}", env!("CARGO_PKG_VERSION")) })
}

/// This host's membership of its cluster (`Enabled: false` without `--etcd`).
#[utoipa::path(get, path = "/cluster", responses((status = 200, body = ClusterStatus)))]
async fn cluster(State(svc): Svc) -> Json<ClusterStatus> {
    Json(svc.cluster.get().map(|m| m.status()).unwrap_or_default())
}

#[utoipa::path(get, path = "/capabilities", responses((status = 200, body = Capabilities)))]
async fn capabilities(State(svc): Svc) -> Json<Capabilities> {
    Json(Capabilities {
        network_types: svc.drivers.supported().iter().map(|t| t.to_string()).collect(),
        endpoint_policies: endpoint_policy_types().iter().map(|s| s.to_string()).collect(),
        network_policies: cnet_model::NetworkPolicy::SUPPORTED.iter().map(|s| s.to_string()).collect(),
        dual_stack: true,
        port_ranges: true,
        sctp: svc.caps.sctp,
        local_routed_vip: true,
        nat_loopback: true,
        macvlan: svc.caps.macvlan,
        vlan: svc.caps.vlan,
        bridge_port_isolation: svc.caps.bridge_port_isolation,
        vlan_8021q: svc.caps.vlan_8021q,
        bridge_vlan_filtering: svc.caps.bridge_vlan_filtering,
        ipam_types: vec!["Static".into(), "Dhcp".into()],
    })
}

/// Whether traffic cnet accepts can flow on this host: another table's
/// base chain with `policy drop`, a degraded cluster membership.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health(State(svc): Svc) -> Answer<Health> {
    ok(blocking(svc, crate::diag::health).await?)
}

#[utoipa::path(get, path = "/diag", responses((status = 200, body = DiagReport)))]
async fn diag(State(svc): Svc) -> Answer<DiagReport> {
    let r = blocking(svc, crate::diag::diag).await?;
    ok(r)
}

#[utoipa::path(post, path = "/networks", request_body = Network,
    responses((status = 201, body = Network), (status = "4XX", body = ApiError), (status = "5XX", body = ApiError)))]
async fn create_network(State(svc): Svc, body: Result<Bytes, BytesRejection>) -> Answer<Network> {
    let v = body_value(body)?;
    check_policy_types(&v, &cnet_model::NetworkPolicy::SUPPORTED, "network")?;
    let net: Network = parse(v)?;
    created(blocking(svc, move |s| s.create_network(net)).await?.to_wire())
}

#[utoipa::path(get, path = "/networks", params(("name" = Option<String>, Query), ("type" = Option<cnet_model::network::NetworkTypeName>, Query)),
    responses((status = 200, body = Vec<Network>), (status = 400, body = ApiError)))]
async fn list_networks(State(svc): Svc, q: Result<Query<NetworkFilter>, QueryRejection>) -> Answer<Vec<Network>> {
    let f = query(q)?;
    ok(blocking(svc, move |s| s.list_networks(&f)).await?.iter().map(|n| n.to_wire()).collect())
}

#[utoipa::path(get, path = "/networks/{id}", params(("id" = String, Path, description = "ID or name")),
    responses((status = 200, body = Network), (status = 404, body = ApiError)))]
async fn get_network(State(svc): Svc, Path(id): Path<String>) -> Answer<Network> {
    ok(blocking(svc, move |s| s.network_answer(&id)).await?)
}

/// The names a network's DNS server answers (its endpoints' names and aliases).
#[utoipa::path(get, path = "/networks/{id}/names", params(("id" = String, Path, description = "ID or name")),
    responses((status = 200, body = Vec<cnet_model::DnsName>), (status = "4XX", body = ApiError)))]
async fn network_names(State(svc): Svc, Path(id): Path<String>) -> Answer<Vec<cnet_model::DnsName>> {
    ok(blocking(svc, move |s| s.dns_names(&id)).await?)
}

#[utoipa::path(patch, path = "/networks/{id}", params(("id" = String, Path)), request_body = cnet_model::modify::schema::NetworkModifyRequest,
    responses((status = 200, body = Network), (status = "4XX", body = ApiError)))]
async fn modify_network(
    State(svc): Svc,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer<Network> {
    let change = wire::network_change(parse(body_value(body)?)?)?;
    ok(blocking(svc, move |s| s.modify_network(&id, change)).await?.to_wire())
}

#[utoipa::path(delete, path = "/networks/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Success), (status = 409, body = ApiError)))]
async fn delete_network(State(svc): Svc, Path(id): Path<String>) -> Answer<Success> {
    blocking(svc, move |s| s.delete_network(&id)).await?;
    ok(Success { success: true })
}

#[utoipa::path(post, path = "/endpoints", request_body = Endpoint,
    responses((status = 201, body = Endpoint), (status = "4XX", body = ApiError), (status = "5XX", body = ApiError)))]
async fn create_endpoint(State(svc): Svc, body: Result<Bytes, BytesRejection>) -> Answer<Endpoint> {
    let v = body_value(body)?;
    check_policy_types(&v, endpoint_policy_types(), "endpoint")?;
    let ep: Endpoint = parse(v)?;
    created(blocking(svc, move |s| s.create_endpoint(ep)).await?.to_wire())
}

#[utoipa::path(get, path = "/endpoints",
    params(("name" = Option<String>, Query), ("network" = Option<String>, Query), ("namespace" = Option<String>, Query)),
    responses((status = 200, body = Vec<Endpoint>), (status = 404, body = ApiError)))]
async fn list_endpoints(State(svc): Svc, q: Result<Query<EndpointFilter>, QueryRejection>) -> Answer<Vec<Endpoint>> {
    let f = query(q)?;
    ok(blocking(svc, move |s| s.list_endpoints(&f)).await?.iter().map(|e| e.to_wire()).collect())
}

#[utoipa::path(get, path = "/endpoints/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Endpoint), (status = 404, body = ApiError)))]
async fn get_endpoint(State(svc): Svc, Path(id): Path<String>) -> Answer<Endpoint> {
    ok(blocking(svc, move |s| s.get_endpoint(&id)).await?.to_wire())
}

#[utoipa::path(patch, path = "/endpoints/{id}", params(("id" = String, Path)), request_body = cnet_model::modify::schema::EndpointModifyRequest,
    responses((status = 200, body = Endpoint), (status = "4XX", body = ApiError)))]
async fn modify_endpoint(
    State(svc): Svc,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer<Endpoint> {
    let change = wire::policy_change(parse(body_value(body)?)?)?;
    ok(blocking(svc, move |s| s.modify_endpoint(&id, change)).await?.to_wire())
}

/// `{"Drift": [...]}` for one endpoint.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointCheck {
    /// Differences between cnetd's record and the kernel; empty when healthy.
    pub drift: Vec<Finding>,
}

#[utoipa::path(get, path = "/endpoints/{id}/check", params(("id" = String, Path)),
    responses((status = 200, body = EndpointCheck), (status = 404, body = ApiError)))]
async fn check_endpoint(State(svc): Svc, Path(id): Path<String>) -> Answer<EndpointCheck> {
    let drift = blocking(svc, move |s| crate::diag::check_endpoint(s, &id)).await?;
    ok(EndpointCheck { drift })
}

#[utoipa::path(get, path = "/endpoints/{id}/stats", params(("id" = String, Path)),
    responses((status = 200, body = EndpointStats), (status = "4XX", body = ApiError)))]
async fn endpoint_stats(State(svc): Svc, Path(id): Path<String>) -> Answer<EndpointStats> {
    ok(blocking(svc, move |s| s.endpoint_stats(&id)).await?)
}

#[utoipa::path(delete, path = "/endpoints/{id}", params(("id" = String, Path)), responses((status = 200, body = Success)))]
async fn delete_endpoint(State(svc): Svc, Path(id): Path<String>) -> Answer<Success> {
    blocking(svc, move |s| s.delete_endpoint(&id)).await?;
    ok(Success { success: true })
}

#[derive(Deserialize)]
struct NameFilter {
    name: Option<String>,
}

#[utoipa::path(post, path = "/namespaces", request_body = Namespace,
    responses((status = 201, body = Namespace), (status = "4XX", body = ApiError)))]
async fn create_namespace(State(svc): Svc, body: Result<Bytes, BytesRejection>) -> Answer<Namespace> {
    let ns: Namespace = parse(body_value(body)?)?;
    created(blocking(svc, move |s| s.create_namespace(ns)).await?.to_wire())
}

#[utoipa::path(get, path = "/namespaces", params(("name" = Option<String>, Query)), responses((status = 200, body = Vec<Namespace>)))]
async fn list_namespaces(State(svc): Svc, q: Result<Query<NameFilter>, QueryRejection>) -> Answer<Vec<Namespace>> {
    let f = query(q)?;
    ok(blocking(svc, move |s| s.list_namespaces(f.name.as_deref())).await?.iter().map(|n| n.to_wire()).collect())
}

#[utoipa::path(get, path = "/namespaces/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Namespace), (status = 404, body = ApiError)))]
async fn get_namespace(State(svc): Svc, Path(id): Path<String>) -> Answer<Namespace> {
    ok(blocking(svc, move |s| s.get_namespace(&id)).await?.to_wire())
}

#[utoipa::path(patch, path = "/namespaces/{id}", params(("id" = String, Path)), request_body = cnet_model::modify::schema::NamespaceModifyRequest,
    responses((status = 200, body = Namespace), (status = "4XX", body = ApiError)))]
async fn modify_namespace(
    State(svc): Svc,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer<Namespace> {
    let change = wire::namespace_change(parse(body_value(body)?)?)?;
    ok(blocking(svc, move |s| s.modify_namespace(&id, change)).await?.to_wire())
}

#[utoipa::path(delete, path = "/namespaces/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Success), (status = 409, body = ApiError)))]
async fn delete_namespace(State(svc): Svc, Path(id): Path<String>) -> Answer<Success> {
    blocking(svc, move |s| s.delete_namespace(&id)).await?;
    ok(Success { success: true })
}

#[utoipa::path(post, path = "/routes", request_body = HostComputeRoute,
    responses((status = 201, body = HostComputeRoute), (status = "4XX", body = ApiError)))]
async fn create_route(State(svc): Svc, body: Result<Bytes, BytesRejection>) -> Answer<HostComputeRoute> {
    let r: HostComputeRoute = parse(body_value(body)?)?;
    created(blocking(svc, move |s| s.create_route(r)).await?.to_wire())
}

#[utoipa::path(get, path = "/routes", responses((status = 200, body = Vec<HostComputeRoute>)))]
async fn list_routes(State(svc): Svc) -> Answer<Vec<HostComputeRoute>> {
    ok(blocking(svc, move |s| Ok(s.list_routes())).await?.iter().map(|r| r.to_wire()).collect())
}

#[utoipa::path(get, path = "/routes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = HostComputeRoute), (status = 404, body = ApiError)))]
async fn get_route(State(svc): Svc, Path(id): Path<String>) -> Answer<HostComputeRoute> {
    ok(blocking(svc, move |s| s.get_route(&id)).await?.to_wire())
}

#[utoipa::path(delete, path = "/routes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Success), (status = 404, body = ApiError)))]
async fn delete_route(State(svc): Svc, Path(id): Path<String>) -> Answer<Success> {
    blocking(svc, move |s| s.delete_route(&id)).await?;
    ok(Success { success: true })
}

#[derive(OpenApi)]
#[openapi(
    info(title = "cnet", description = "cnetd's API: HCN v2 objects over HTTP/JSON on a Unix socket"),
    paths(
        version,
        capabilities,
        cluster,
        health,
        diag,
        create_network,
        list_networks,
        get_network,
        network_names,
        modify_network,
        delete_network,
        create_endpoint,
        list_endpoints,
        get_endpoint,
        modify_endpoint,
        endpoint_stats,
        delete_endpoint,
        create_namespace,
        list_namespaces,
        get_namespace,
        modify_namespace,
        delete_namespace,
        create_route,
        list_routes,
        get_route,
        delete_route,
    ),
    components(schemas(
        ApiError,
        ErrorCode,
        Success,
        Version,
        Capabilities,
        ClusterStatus,
        ClusterHost,
        ClusterBlock,
        DiagReport,
        Health,
        EndpointCheck,
        EndpointStats,
        DropCounts,
        Finding,
        FindingKind,
        Subject,
        SubjectKind
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document, as served and as committed in `docs/openapi.json`.
pub fn openapi_json() -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
    bound_integers(&mut doc);
    serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises") + "\n"
}

/// States every integer's real range: utoipa names the Rust width as the
/// format (`uint16`, ...) without the bounds it implies, so a schema-valid
/// request could carry a number the server cannot hold.
fn bound_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            // utoipa spells them `u-int16`; the usual spelling is `uint16`.
            let format = m.get("format").and_then(|f| f.as_str()).map(|f| f.replace("u-int", "uint"));
            let range: Option<(i128, i128)> = match format.as_deref() {
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("uint64") => Some((0, u64::MAX.into())),
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
            if let (Some(f), Some(_)) = (format, range) {
                m.insert("format".into(), f.into());
            }
            if let Some((lo, hi)) = range {
                let lo = m.get("minimum").and_then(|x| x.as_f64()).map_or(lo, |x| lo.max(x as i128));
                let hi = m.get("maximum").and_then(|x| x.as_f64()).map_or(hi, |x| hi.min(x as i128));
                m.insert("minimum".into(), number(lo));
                m.insert("maximum".into(), number(hi));
            }
            m.values_mut().for_each(bound_integers);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn number(n: i128) -> serde_json::Value {
    match (u64::try_from(n), i64::try_from(n)) {
        (Ok(u), _) => u.into(),
        (_, Ok(i)) => i.into(),
        _ => unreachable!("an integer bound fits 64 bits"),
    }
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

async fn fallback() -> Failure {
    Failure(ApiError::new(ErrorCode::InvalidParameter, "no such API path: see GET /openapi.json"))
}

pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/globals/version", get(version))
        .route("/capabilities", get(capabilities))
        .route("/cluster", get(cluster))
        .route("/health", get(health))
        .route("/diag", get(diag))
        .route("/openapi.json", get(openapi))
        .route("/networks", get(list_networks).post(create_network))
        .route("/networks/{id}", get(get_network).patch(modify_network).delete(delete_network))
        .route("/networks/{id}/names", get(network_names))
        .route("/endpoints", get(list_endpoints).post(create_endpoint))
        .route("/endpoints/{id}", get(get_endpoint).patch(modify_endpoint).delete(delete_endpoint))
        .route("/endpoints/{id}/check", get(check_endpoint))
        .route("/endpoints/{id}/stats", get(endpoint_stats))
        .route("/namespaces", get(list_namespaces).post(create_namespace))
        .route("/namespaces/{id}", get(get_namespace).patch(modify_namespace).delete(delete_namespace))
        .route("/routes", get(list_routes).post(create_route))
        .route("/routes/{id}", get(get_route).delete(delete_route))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(svc)
}
