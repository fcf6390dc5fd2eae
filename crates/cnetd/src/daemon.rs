//! Start-up and the serving loop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::UnixListener;

use crate::dataplane::Kernel;
use crate::driver::Registry;
use crate::service::{Capabilities, Service};
use crate::state::State;

pub struct Config {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// With `--etcd`: the cluster to join.
    pub cluster: Option<crate::cluster::Config>,
    /// With `--docker-plugin-socket`: where Docker's network and IPAM
    /// plugin protocol is answered (dockerd must share cnetd's network namespace).
    pub docker_plugin_socket: Option<PathBuf>,
}

/// Refuses to take over the socket of a live daemon; removes a stale one.
fn claim_socket(path: &Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("another cnetd already answers on {}: stop it or pick another --socket", path.display());
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("removing the stale socket"),
        _ => Ok(()),
    }
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create the state directory {}", cfg.state_dir.display()))?;
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    claim_socket(&cfg.socket)?;
    let store = cnet_store::Store::open(&cfg.state_dir.join("cnet.redb"))?;
    let state = State::open(store)?;
    let svc = Arc::new(Service::new(state, Arc::new(Kernel::start()), Registry::builtin(), Capabilities::probe()));

    let started = std::time::Instant::now();
    let s = svc.clone();
    let report = tokio::task::spawn_blocking(move || crate::reconcile::startup(&s)).await??;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, ?report, "start-up reconcile done");

    if let Some(c) = cfg.cluster.clone() {
        // The cluster's networks become this host's and its remote hosts are
        // programmed (on a blocking thread: the service's calls block).
        let mirror = Arc::downgrade(&svc);
        let on_change: crate::cluster::OnChange = Box::new(move || {
            if let Some(svc) = mirror.upgrade() {
                tokio::task::spawn_blocking(move || svc.cluster_changed());
            }
        });
        let member: Arc<dyn crate::cluster::Member> = crate::cluster::start(c, &cfg.state_dir, on_change)?;
        let _ = svc.cluster.set(member);
    }

    // Name resolution on every network that has it, before the API answers.
    svc.dns.start(&svc, tokio::runtime::Handle::current());

    // DHCP leases of endpoints are renewed from their records.
    let leases = Arc::downgrade(&svc);
    std::thread::Builder::new().name("cnet-dhcp".into()).spawn(move || crate::dhcp::run(leases))?;

    // DHCP for VM endpoints on networks with EnableDhcpServer.
    let served = Arc::downgrade(&svc);
    std::thread::Builder::new().name("cnet-dhcpd".into()).spawn(move || crate::dhcp::server::serve(served))?;

    // Restores our nftables table within a second of someone flushing it.
    let watch = svc.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let w = watch.clone();
            match tokio::task::spawn_blocking(move || {
                w.firewall.check_and_repair().and(w.policies.check_and_repair()).and(w.guards.check_and_repair())
            })
            .await
            {
                Ok(Err(e)) => tracing::warn!("firewall check failed: {e}"),
                Err(e) => tracing::warn!("firewall check panicked: {e}"),
                _ => {}
            }
        }
    });

    // Docker's plugin protocol, on its own socket (dockerd retries a
    // plugin it cannot reach for 30 s, so answering a moment after the API is fine).
    if let Some(path) = cfg.docker_plugin_socket.clone() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        claim_socket(&path)?;
        let listener = UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
        let s = svc.clone();
        tokio::spawn(async move { crate::docker::serve(s, listener, &path).await });
    }

    let listener = UnixListener::bind(&cfg.socket).with_context(|| format!("cannot bind {}", cfg.socket.display()))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %cfg.socket.display(), "cnetd ready");
    let app = crate::api::router(svc);
    let socket = cfg.socket.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("stopping; the data plane stays as it is");
        })
        .await?;
    let _ = std::fs::remove_file(socket);
    if let Some(path) = &cfg.docker_plugin_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
