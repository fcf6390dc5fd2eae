//! The API's JSON bodies of every object: parsing and checking never
//! panic, and what is accepted reads back as itself.
#![no_main]

use cnet_model::validate::{prepare_endpoint, validate_network, Usage};
use cnet_model::{Endpoint, ModifyRequest, Namespace, Network};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let again: T = serde_json::from_slice(&serde_json::to_vec(&v).expect("serialises")).expect("reads back");
    assert_eq!(v, again);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let nat: Network = serde_json::from_str(
        r#"{"Name": "n", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.79.0.0/24"}, {"IpAddressPrefix": "fd00:79::/64"}]}]}"#,
    )
    .unwrap();
    if let Some(n) = round_trip::<Network>(data) {
        let _ = validate_network(&n, &[&nat]);
    }
    if let Some(mut e) = round_trip::<Endpoint>(data) {
        let _ = prepare_endpoint(&mut e, &nat, &Usage::default(), true);
    }
    let _ = round_trip::<Namespace>(data);
    let _ = round_trip::<ModifyRequest>(data);
});
