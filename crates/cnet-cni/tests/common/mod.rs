//! What the CNI tests share: the plugin run as the spec says, a network
//! configuration, namespaces as runtimes make them.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use cnet_testkit::{bin, World};
use serde_json::{json, Value};

pub struct Call<'a> {
    pub command: &'a str,
    pub container: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container: &'a str, netns: &'a str) -> Self {
        Call { command, container, netns, ifname: "eth0", args: "" }
    }
}

/// Runs the plugin; returns its exit status and its stdout as JSON (Null when empty).
pub fn cni(call: &Call, conf: &Value) -> (bool, Value) {
    let mut child = Command::new(bin("cnet-cni"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).expect("stdout is JSON") };
    (out.status.success(), v)
}

pub fn conf(w: &World, version: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": version, "name": "cninet", "type": "cnet-cni", "socket": w.socket,
        "network": {"Type": "NAT", "Ipams": [{"Type": "Static", "Subnets": [{"IpAddressPrefix": subnet}]}]}
    })
}

/// A fresh netns as a runtime would make it.
pub fn netns(w: &World, short: &str) -> String {
    let name = w.name(short);
    assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    format!("/run/netns/{name}")
}

pub fn addr_in(w: &World, netns: &str, ifname: &str) -> String {
    String::from_utf8_lossy(&w.exec_in(netns, &["ip", "-o", "addr", "show", "dev", ifname]).stdout).into_owned()
}
