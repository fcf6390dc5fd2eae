//! Modify requests: `{ResourceType, RequestType, Settings}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum RequestType {
    Add,
    Remove,
    Update,
    Refresh,
    Reset,
}

/// A change to an existing object.
///
/// - namespace: `ResourceType: Endpoint`, `Add`/`Remove`, `Settings: {EndpointId}`
/// - endpoint: `ResourceType: Policy`, `Add`/`Remove`/`Update`, `Settings: {Policies: [...]}`
/// - network: `ResourceType: Subnet`, `Add`/`Remove`, `Settings: {IpAddressPrefix, Routes}`;
///   `ResourceType: Dns`, `Update`, `Settings: Dns`; `ResourceType: Policy`,
///   `Add`/`Remove`/`Update`, `Settings: {Policies: [...]}` (`SetPolicy` and
///   `NetworkACL`; Remove and Update name them by `Id`)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ModifyRequest {
    pub resource_type: String,
    pub request_type: RequestType,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
}

/// The request bodies of the three modify operations as the API's schema
/// states them: which `ResourceType` and `RequestType` each object takes,
/// and what `Settings` each carries. Requests are read as
/// [`ModifyRequest`]; these types only describe them.
pub mod schema {
    use serde::Serialize;
    use utoipa::ToSchema;

    use crate::endpoint::EndpointPolicy;
    use crate::network::{Dns, NetworkPolicy, Subnet};

    #[derive(Serialize, ToSchema)]
    pub enum AddRemove {
        Add,
        Remove,
    }

    #[derive(Serialize, ToSchema)]
    pub enum AddRemoveUpdate {
        Add,
        Remove,
        Update,
    }

    #[derive(Serialize, ToSchema)]
    pub enum UpdateOnly {
        Update,
    }

    #[derive(Serialize, ToSchema)]
    pub enum PolicyResource {
        Policy,
    }

    #[derive(Serialize, ToSchema)]
    pub enum EndpointResource {
        Endpoint,
    }

    #[derive(Serialize, ToSchema)]
    pub enum SubnetResource {
        Subnet,
    }

    #[derive(Serialize, ToSchema)]
    pub enum DnsResource {
        Dns,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct EndpointPolicies {
        pub policies: Vec<EndpointPolicy>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct NetworkPolicies {
        pub policies: Vec<NetworkPolicy>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct EndpointRef {
        /// The endpoint's ID or name.
        pub endpoint_id: String,
    }

    /// `PATCH /endpoints/{id}`: its policies added, removed (by `Type`, or
    /// by `Id` for ACLs that have one) or replaced.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct EndpointModifyRequest {
        pub resource_type: PolicyResource,
        pub request_type: AddRemoveUpdate,
        pub settings: EndpointPolicies,
    }

    /// `PATCH /namespaces/{id}`: an endpoint attached or detached.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct NamespaceModifyRequest {
        pub resource_type: EndpointResource,
        pub request_type: AddRemove,
        pub settings: EndpointRef,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct SubnetChange {
        pub resource_type: SubnetResource,
        pub request_type: AddRemove,
        pub settings: Subnet,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct DnsChange {
        pub resource_type: DnsResource,
        pub request_type: UpdateOnly,
        pub settings: Dns,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    pub struct NetworkPolicyChange {
        pub resource_type: PolicyResource,
        pub request_type: AddRemoveUpdate,
        pub settings: NetworkPolicies,
    }

    /// `PATCH /networks/{id}`: a subnet added or removed, its DNS settings
    /// replaced, or its policies (`SetPolicy`, `NetworkACL`) changed.
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub enum NetworkModifyRequest {
        Subnet(SubnetChange),
        Dns(DnsChange),
        Policy(NetworkPolicyChange),
    }
}
