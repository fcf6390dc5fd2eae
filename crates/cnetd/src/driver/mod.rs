//! Network drivers: how each network type is built from kernel objects.
//!
//! A driver implements [`NetworkDriver`] for the network types it serves and
//! is listed once in [`Registry::builtin`]; that is the only place a type
//! becomes supported. Everything a driver does to the kernel goes through
//! the [`Dataplane`] it is handed, so its lifecycles run against the fake in
//! unit tests.
//!
//! Invariants every driver keeps:
//! - `setup` is idempotent and never re-creates an object that exists (that
//!   would cut working endpoints off); `teardown` and `detach` succeed when
//!   things are already gone.
//! - `attach` either completes or leaves nothing behind.
//! - Firewall elements are declared (`firewall`), never programmed by the
//!   driver: [`crate::firewall`] owns the table.

pub mod bridge;

use std::collections::HashMap;

use cnet_model::{Network, NetworkType};

use crate::dataplane::{Dataplane, DpResult, FwElem, LinkInfo};
use crate::error::{Result, ServiceError};
use crate::state::{EndpointRecord, NamespaceRecord, NetworkRecord};
use cnet_model::findings::Finding;

/// cnetd's host links by name, listed once per diagnosis or start.
pub type Links = HashMap<String, LinkInfo>;

/// What start-up repair did to one endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Repair {
    /// Its kernel objects are as they should be.
    Intact,
    /// Something was missing and was made again (what, in words).
    Repaired(String),
    /// It cannot work now (why, in words).
    Degraded(String),
}

pub trait NetworkDriver: Send + Sync {
    /// The network types this driver builds.
    fn types(&self) -> &'static [NetworkType];

    /// Checks of a network request that only this type has.
    fn validate(&self, _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Creates (or completes) the network's kernel objects.
    fn setup(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()>;

    /// Brings a live network from `old` to `new` (a subnet added or removed).
    fn update(&self, dp: &dyn Dataplane, old: &NetworkRecord, new: &NetworkRecord) -> DpResult<()>;

    /// Removes the network's kernel objects (its endpoints are gone).
    fn teardown(&self, dp: &dyn Dataplane, net: &NetworkRecord) -> DpResult<()>;

    /// What the network contributes to cnet's nftables table.
    fn firewall(&self, net: &NetworkRecord) -> Vec<FwElem>;

    /// Gives the endpoint its adapter inside the namespace at `netns_path`.
    fn attach(&self, dp: &dyn Dataplane, net: &NetworkRecord, ep: &EndpointRecord, netns_path: &str) -> DpResult<()>;

    /// Cuts the endpoint off at once and removes its adapter.
    fn detach(&self, dp: &dyn Dataplane, ep: &EndpointRecord) -> DpResult<()>;

    /// The host links the network owns (its switch).
    fn network_links(&self, net: &NetworkRecord) -> Vec<String>;

    /// The host links an attached endpoint owns.
    fn endpoint_links(&self, ep: &EndpointRecord) -> Vec<String>;

    /// Differences between the network and the kernel.
    fn check_network(&self, dp: &dyn Dataplane, net: &NetworkRecord, links: &Links) -> DpResult<Vec<Finding>>;

    /// Differences between an attached endpoint and the kernel.
    fn check_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Vec<Finding>>;

    /// Start-up: makes an attached endpoint's objects whole again without
    /// touching what works.
    fn repair_endpoint(
        &self,
        dp: &dyn Dataplane,
        net: &NetworkRecord,
        ep: &EndpointRecord,
        ns: &NamespaceRecord,
        links: &Links,
    ) -> DpResult<Repair>;
}

/// The drivers of this build, by network type.
pub struct Registry {
    drivers: Vec<Box<dyn NetworkDriver>>,
}

impl Registry {
    /// Every driver this build has: one line per driver.
    pub fn builtin() -> Self {
        Registry::of(vec![
            Box::new(bridge::Bridge), // NAT, Internal, Private
        ])
    }

    pub fn of(drivers: Vec<Box<dyn NetworkDriver>>) -> Self {
        Registry { drivers }
    }

    /// The driver of a network type; a type this build lacks is refused here.
    pub fn get(&self, t: NetworkType) -> Result<&dyn NetworkDriver> {
        self.drivers.iter().find(|d| d.types().contains(&t)).map(|d| d.as_ref()).ok_or_else(|| {
            let have: Vec<&str> = self.supported().iter().map(|t| t.as_str()).collect();
            ServiceError::unsupported(format!(
                "network type {t} is not supported by this build yet: use {}",
                have.join(", ")
            ))
        })
    }

    /// The network types this build can program, in the order of [`NetworkType::ALL`].
    pub fn supported(&self) -> Vec<NetworkType> {
        NetworkType::ALL.into_iter().filter(|t| self.drivers.iter().any(|d| d.types().contains(t))).collect()
    }
}
