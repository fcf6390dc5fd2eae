//! The store's records as cnetd decodes them at start (JSON values of the
//! redb tables): any bytes decode or are refused without a panic, a record
//! that decodes is written back to the same record (nothing changes across
//! a restart), and its API view can be built.
#![no_main]

use cnetd::state::{EndpointRecord, NamespaceRecord, NetworkRecord, RouteRecord, Stored};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<Stored<T>> {
    let s: Stored<T> = serde_json::from_slice(data).ok()?;
    let bytes = serde_json::to_vec(&s).expect("a record serialises");
    let again: Stored<T> = serde_json::from_slice(&bytes).expect("a written record is read back");
    assert_eq!(again, s, "a record changed on its way through the store");
    Some(s)
}

fuzz_target!(|data: &[u8]| {
    if let Some(n) = round_trip::<NetworkRecord>(data) {
        let _ = n.record.to_wire();
        let _ = (n.record.mtu(), n.record.vni(), n.record.bridge_mac(), n.record.uplink());
        let _ = n.record.gateways().count();
    }
    if let Some(e) = round_trip::<EndpointRecord>(data) {
        let _ = e.record.to_wire();
        let _ = (e.record.mtu(), e.record.display_name(), e.record.ips().count());
    }
    let _ = round_trip::<NamespaceRecord>(data);
    let _ = round_trip::<RouteRecord>(data);
});
