//! `cnetd`: the cnet host network service. See `docs/operator-guide.md`.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "cnet host network service: HCN v2 networks, endpoints and namespaces on Linux")]
struct Args {
    /// Unix socket the API listens on.
    #[arg(long, default_value = "/run/cnet/cnetd.sock")]
    socket: PathBuf,
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/cnet")]
    state_dir: PathBuf,
    /// error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    openapi: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.openapi {
        print!("{}", cnetd::api::openapi_json());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    cnetd::daemon::run(cnetd::daemon::Config { socket: args.socket, state_dir: args.state_dir }).await
}
