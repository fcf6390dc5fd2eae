//! `cnet-netavark`: install it as Podman's `netavark` (see `docs/podman.md`).
//! Success: the answer on stdout. Failure: exactly `{"error": "…"}` on
//! stdout and exit 1, which is what Podman decodes; logs go to stderr.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use cnet_client::Client;
use cnet_netavark::backend;
use cnet_netavark::cli::{self, Command};
use cnet_netavark::types::NetworkOptions;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The options' bytes, from `-f FILE` or all of stdin. Read before any
/// refusal: Podman writes stdin through a pipe and would report a broken
/// pipe instead of our error if we exited without reading it.
fn input(file: Option<&str>) -> Result<Vec<u8>, String> {
    let mut text = Vec::new();
    match file {
        Some(f) => text = std::fs::read(f).map_err(|e| format!("cannot read {f}: {e}"))?,
        None => {
            std::io::stdin().read_to_end(&mut text).map_err(|e| format!("cannot read stdin: {e}"))?;
        }
    }
    Ok(text)
}

fn options(text: &[u8]) -> Result<NetworkOptions, String> {
    serde_json::from_slice(text).map_err(|e| format!("the network options are not netavark's JSON: {e}"))
}

fn client() -> Client {
    let socket = std::env::var("CNET_SOCKET").unwrap_or_else(|_| cnet_client::DEFAULT_SOCKET.to_string());
    // A restarting cnetd (an upgrade) is waited for, a bounded time.
    Client::new(socket).with_patience(Duration::from_secs(5))
}

fn run() -> Result<Option<String>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = cli::parse(&args)?;
    let text = match inv.command {
        Command::Setup(_) | Command::Teardown(_) => input(inv.file.as_deref())?,
        _ => Vec::new(),
    };
    if inv.rootless && matches!(inv.command, Command::Setup(_) | Command::Teardown(_)) {
        return Err("rootless Podman is not supported by cnet: cnetd serves rootful containers; run Podman as root or switch this user back to netavark".into());
    }
    match inv.command {
        Command::Setup(netns) => {
            let o = options(&text)?;
            let status = backend::setup(&client(), &netns, &o)?;
            Ok(Some(serde_json::to_string(&status).expect("serialisable")))
        }
        Command::Teardown(netns) => {
            let o = options(&text)?;
            backend::teardown(&client(), &netns, &o).map(|_| None)
        }
        Command::Version => Ok(Some(
            serde_json::to_string_pretty(&serde_json::json!({
                "version": "1.4.0", "commit": format!("cnet-netavark {VERSION}"),
                "build_time": "", "target": format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
            }))
            .expect("serialisable"),
        )),
        Command::VersionLine => Ok(Some(format!("netavark 1.4.0 (cnet-netavark {VERSION})"))),
        Command::Update(name) => {
            eprintln!("cnet-netavark: network {name}: cnet's DNS forwards to the host's resolvers; per-network DNS servers are not supported, nothing changed");
            Ok(None)
        }
        Command::Help => Ok(Some(
            "cnet-netavark: Podman's network backend on cnet (netavark's protocol)\n\
             usage: cnet-netavark [--config DIR] [--rootless=false] [-f FILE] setup|teardown NETNS_PATH | version\n\
             cnetd's socket: $CNET_SOCKET, else /run/cnet/cnetd.sock"
                .into(),
        )),
    }
}

fn main() -> ExitCode {
    let mut out = std::io::stdout().lock();
    match run() {
        Ok(text) => {
            if let Some(t) = text {
                let _ = writeln!(out, "{t}");
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            let _ = writeln!(out, "{}", serde_json::json!({ "error": msg }));
            eprintln!("cnet-netavark: {msg}");
            ExitCode::FAILURE
        }
    }
}
