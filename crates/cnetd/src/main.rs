//! `cnetd`: the cnet host network service. See `docs/operator-guide.md`.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "cnet host network service: HCN v2 networks, endpoints and namespaces on Linux")]
struct Args {
    /// Unix socket the API listens on.
    #[arg(long, default_value = "/run/cnet/cnetd.sock")]
    socket: PathBuf,
    /// The group that may use the API socket (and the Docker plugin's):
    /// both are root's and this group's, mode 0660. Without it, root's only.
    #[arg(long, env = "CNET_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/cnet")]
    state_dir: PathBuf,
    /// error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Join a cluster: etcd endpoints (comma-separated, http://HOST:2379).
    #[arg(long, env = "CNET_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// etcd user (with --etcd-password).
    #[arg(long, env = "CNET_ETCD_USER", requires = "etcd_password")]
    etcd_user: Option<String>,
    /// etcd password (better in the environment than on the command line).
    #[arg(long, env = "CNET_ETCD_PASSWORD", requires = "etcd_user", hide_env_values = true)]
    etcd_password: Option<String>,
    /// CA certificate (PEM) that signed etcd's server certificate (for https:// endpoints).
    #[arg(long, env = "CNET_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client certificate authentication (with --etcd-key).
    #[arg(long, env = "CNET_ETCD_CERT", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "CNET_ETCD_KEY", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// Seconds this host's registration outlives its last keep-alive.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(2..=3600))]
    cluster_lease_ttl: i64,
    /// Seconds the address blocks of a host whose lease ended stay its own
    /// before other hosts reclaim them (longer than any etcd outage a host
    /// should survive with its endpoints).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    cluster_block_grace: u64,
    /// This host's underlay address (default: the source address towards etcd).
    #[arg(long)]
    provider_address: Option<std::net::IpAddr>,
    /// Also answer Docker's network and IPAM plugin protocol on this socket
    /// (`/run/docker/plugins/cnet.sock` makes `docker network create -d cnet`
    /// work); dockerd must run in cnetd's network namespace.
    #[arg(long)]
    docker_plugin_socket: Option<PathBuf>,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    openapi: bool,
}

fn main() -> anyhow::Result<()> {
    cnetd::allocator::tune();
    // Capabilities are per thread: dropped before the runtime starts any.
    let dropped = cnetd::privilege::drop_to_kept();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(dropped))
}

async fn serve(dropped: Result<(), String>) -> anyhow::Result<()> {
    let args = Args::parse();
    if args.openapi {
        print!("{}", cnetd::api::openapi_json());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    match dropped {
        Ok(()) => tracing::debug!("capabilities kept: {:?}", cnetd::privilege::KEPT),
        Err(e) => tracing::warn!("keeping the capabilities cnetd was started with: {e}"),
    }
    let tls = match (&args.etcd_ca, args.etcd_cert.as_deref().zip(args.etcd_key.as_deref())) {
        (None, None) => None,
        (ca, cert_key) => Some(cnetd::cluster::tls_options(ca.as_deref(), cert_key)?),
    };
    let cluster = (!args.etcd.is_empty()).then(|| cnetd::cluster::Config {
        endpoints: args.etcd,
        user: args.etcd_user.zip(args.etcd_password),
        tls,
        ttl: args.cluster_lease_ttl,
        provider_address: args.provider_address,
        block_grace: std::time::Duration::from_secs(args.cluster_block_grace),
    });
    cnetd::daemon::run(cnetd::daemon::Config {
        socket: args.socket,
        socket_group: args.socket_group,
        state_dir: args.state_dir,
        cluster,
        docker_plugin_socket: args.docker_plugin_socket,
    })
    .await
}
