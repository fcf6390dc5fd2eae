//! `cnet-cni`: the CNI plugin binary. See `docs/cni.md`.

use std::io::{Read, Write};
use std::process::ExitCode;

use cnet_client::Client;
use cnet_cni::config::NetConf;
use cnet_cni::error::CniError;
use cnet_cni::invocation::{self, Command};
use cnet_cni::plugin;

fn run(stdin: &[u8]) -> Result<Option<serde_json::Value>, (CniError, String)> {
    let fallback = "1.1.0".to_string();
    let (cmd, inv) = invocation::from_env(|k| std::env::var(k).ok()).map_err(|e| (e, fallback.clone()))?;
    if cmd == Command::Version {
        // Podman sends VERSION with placeholders and sometimes no config at all.
        let requested = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(|s| s.as_str()).map(str::to_string))
            .unwrap_or_default();
        return Ok(Some(plugin::version(&requested)));
    }
    let conf = NetConf::parse(stdin).map_err(|e| (e, fallback.clone()))?;
    let version = if conf.cni_version.is_empty() { fallback } else { conf.cni_version.clone() };
    let fail = |e: CniError| (e, version.clone());
    conf.check_version().map_err(fail)?;
    // While cnetd restarts (an upgrade) its socket is gone for a moment:
    // wait for it, a bounded time, rather than fail every ADD and DEL.
    let wait = conf.raw.get("socketWaitSeconds").and_then(|v| v.as_f64()).unwrap_or(5.0).clamp(0.0, 60.0);
    let client = Client::new(&conf.socket).with_patience(std::time::Duration::from_secs_f64(wait));
    match cmd {
        Command::Add => plugin::add(&client, &conf, &inv).map(Some),
        Command::Del => plugin::del(&client, &conf, &inv).map(|_| None),
        Command::Check => plugin::check(&client, &conf, &inv).map(|_| None),
        Command::Status => plugin::status(&client, &conf).map(|_| None),
        Command::Gc => plugin::gc(&client, &conf).map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
    .map_err(fail)
}

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let mut out = std::io::stdout().lock();
    match run(&stdin) {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err((e, version)) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            eprintln!("cnet-cni: {}", e.msg);
            ExitCode::FAILURE
        }
    }
}
