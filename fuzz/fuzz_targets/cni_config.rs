//! A runtime's CNI call: the network configuration on stdin and the
//! `CNI_ARGS` environment value; reading them never panics.
#![no_main]

use cnet_cni::config::NetConf;
use cnet_cni::invocation::{from_env, parse_cni_args};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is CNI_ARGS, the rest the configuration.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let args = String::from_utf8_lossy(&data[..split]).into_owned();
    let _ = parse_cni_args(&args);
    let env = |k: &str| match k {
        "CNI_COMMAND" => Some("ADD".to_string()),
        "CNI_CONTAINERID" => Some("c".to_string()),
        "CNI_NETNS" => Some("/run/netns/x".to_string()),
        "CNI_IFNAME" => Some("eth0".to_string()),
        "CNI_ARGS" => Some(args.clone()),
        _ => None,
    };
    let inv = from_env(env).ok();
    if let Ok(conf) = NetConf::parse(&data[split.min(data.len())..]) {
        let _ = conf.check_version();
        let _ = conf.check_name();
        let _ = conf.bandwidth();
        let _ = conf.port_mappings();
        let _ = conf.endpoint_dns();
        if let Some((_, inv)) = &inv {
            let _ = conf.static_ips(inv);
            let _ = conf.static_mac(inv);
        }
    }
});
