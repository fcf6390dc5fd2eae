//! Podman's netavark request (the network options on stdin): reading it and
//! mapping its networks and ports to cnet's never panic.
#![no_main]

use cnet_netavark::mapping::{cnet_network, names, network_type, port_policy, publishes_ports};
use cnet_netavark::types::NetworkOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(o) = serde_json::from_slice::<NetworkOptions>(data) else { return };
    for net in o.network_info.values() {
        let _ = network_type(net);
        let _ = publishes_ports(net);
        let _ = cnet_network(net);
    }
    for m in &o.port_mappings {
        let _ = port_policy(m);
    }
    for per in o.networks.values() {
        let _ = names(&o.container_name, per);
    }
});
