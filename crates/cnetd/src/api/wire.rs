//! The wire edge: request bodies parsed into typed values, HCN modify
//! requests turned into typed changes, and service errors into the HCN
//! error body. Every failure here is an HCN error with a code.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use cnet_model::validate::{check_policy_types, endpoint_policy_types};
use cnet_model::{ApiError, EndpointPolicy, ErrorCode, ModifyRequest, NetworkPolicy, RequestType, Subnet};

use super::MAX_BODY;
use crate::error::ServiceError;
use crate::service::{NamespaceChange, NetworkChange, NetworkPolicyChange, PolicyChange};

/// An error answer: the HCN error body with the code's HTTP status.
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        Failure(ApiError::new(e.code, e.message))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.error_code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

/// A serde message turned into an error; a message that starts with an error
/// code (from a typed field's own check) keeps that code.
pub fn json_error(msg: &str) -> ApiError {
    let code = msg
        .split_once(": ")
        .and_then(|(c, _)| serde_json::from_value::<ErrorCode>(serde_json::Value::String(c.to_string())).ok());
    match code {
        Some(code) => ApiError::new(code, msg.split_once(": ").map(|x| x.1).unwrap_or(msg)),
        None => ApiError::invalid_json(format!("the request body is not valid: {msg}")),
    }
}

/// Parses a request's `Settings` (or any JSON value) into a typed value,
/// answering `InvalidJson` with serde's words.
pub fn parse_settings<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| json_error(&e.to_string()))
}

pub fn body_value(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::RequestTooLarge, format!("the request body is larger than {MAX_BODY} bytes"))
        } else {
            ApiError::invalid_json(format!("cannot read the request body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::invalid_json("the request body is empty: send a JSON object"));
    }
    let mut v = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_json(format!("the request body is not JSON: {e}")))?;
    whole_numbers(&mut v);
    Ok(v)
}

/// Numbers written with a fraction of zero (`6.0`, as some JSON encoders
/// write every number) become integers: JSON Schema counts them as
/// integers, and so does the API.
fn whole_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f >= i64::MIN as f64 && f < u64::MAX as f64 {
                *v = if f < 0.0 { (f as i64).into() } else { (f as u64).into() };
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(whole_numbers),
        serde_json::Value::Object(m) => m.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

pub fn parse<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(ApiError::invalid_json("the request body must be a JSON object"));
    }
    parse_settings(v)
}

pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::invalid_param(format!("bad query string: {e}")))
}

/// `{"Policies": [...]}`: the settings of a `Policy` modify request.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Policies<T> {
    policies: Vec<T>,
}

/// `Subnet` Add/Remove, `Dns` Update and `Policy` Add/Remove/Update
/// (`SetPolicy`, `NetworkACL`) on a network.
pub fn network_change(req: ModifyRequest) -> Result<NetworkChange, ApiError> {
    if req.resource_type == "Policy" {
        check_policy_types(&req.settings, &NetworkPolicy::SUPPORTED, "network")?;
        let body: Policies<NetworkPolicy> = parse_settings(req.settings)?;
        return Ok(NetworkChange::Policies(match req.request_type {
            RequestType::Add => NetworkPolicyChange::Add(body.policies),
            RequestType::Remove => NetworkPolicyChange::Remove(body.policies),
            RequestType::Update => NetworkPolicyChange::Update(body.policies),
            other => {
                return Err(ApiError::unsupported(format!(
                    "RequestType {other:?} is not supported for network policies: use Add, Remove or Update"
                )))
            }
        }));
    }
    match (req.resource_type.as_str(), req.request_type) {
        ("Subnet", RequestType::Add) => Ok(NetworkChange::AddSubnet(parse_settings(req.settings)?)),
        ("Subnet", RequestType::Remove) => {
            let s: Subnet = parse_settings(req.settings)?;
            Ok(NetworkChange::RemoveSubnet(s.ip_address_prefix))
        }
        ("Dns", RequestType::Update) => Ok(NetworkChange::UpdateDns(parse_settings(req.settings)?)),
        (rt, q) => Err(ApiError::unsupported(format!(
            "modify {rt}/{q:?} on a network is not supported: use Subnet Add/Remove, Dns Update or Policy Add/Remove/Update"
        ))),
    }
}

/// `Policy` Add/Remove/Update on an endpoint.
pub fn policy_change(req: ModifyRequest) -> Result<PolicyChange, ApiError> {
    if req.resource_type != "Policy" {
        return Err(ApiError::unsupported(format!(
            "modify {} on an endpoint is not supported: use ResourceType Policy",
            req.resource_type
        )));
    }
    check_policy_types(&req.settings, endpoint_policy_types(), "endpoint")?;
    let body: Policies<EndpointPolicy> = parse_settings(req.settings)?;
    match req.request_type {
        RequestType::Add => Ok(PolicyChange::Add(body.policies)),
        RequestType::Remove => Ok(PolicyChange::Remove(body.policies)),
        RequestType::Update => Ok(PolicyChange::Update(body.policies)),
        other => Err(ApiError::unsupported(format!("RequestType {other:?} is not supported for endpoint policies"))),
    }
}

/// `Endpoint` Add/Remove on a namespace.
pub fn namespace_change(req: ModifyRequest) -> Result<NamespaceChange, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct EndpointRef {
        endpoint_id: String,
    }
    if req.resource_type != "Endpoint" {
        return Err(ApiError::unsupported(format!(
            "modify {} on a namespace is not supported: use ResourceType Endpoint",
            req.resource_type
        )));
    }
    let r: EndpointRef = parse_settings(req.settings)?;
    match req.request_type {
        RequestType::Add => Ok(NamespaceChange::AddEndpoint(r.endpoint_id)),
        RequestType::Remove => Ok(NamespaceChange::RemoveEndpoint(r.endpoint_id)),
        other => Err(ApiError::unsupported(format!(
            "RequestType {other:?} is not supported on a namespace: use Add or Remove"
        ))),
    }
}
