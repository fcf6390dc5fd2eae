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
    /// The group the sockets are given to (root's only without one).
    pub socket_group: Option<String>,
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

/// The ID of group `name`.
fn group_id(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name).context("a group name has no NUL byte")?;
    // SAFETY: getgrnam with a NUL-terminated name; no other thread of
    // cnetd reads the group database, and the entry is read at once.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        bail!("group {name:?} does not exist: create it (groupadd {name}) or leave out --socket-group");
    }
    // SAFETY: `g` is a valid entry returned just above.
    Ok(unsafe { (*g).gr_gid })
}

/// A listening socket at `path`, root's and group `gid`'s, mode 0660. It is
/// created 0600 (the umask is set around the bind: files other threads
/// create meanwhile are only more private), so no one else can connect in
/// the moment before its mode is set.
fn bind(path: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    // SAFETY: umask(2) only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(old) };
    let listener = listener.with_context(|| format!("cannot bind {}", path.display()))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create the state directory {}", cfg.state_dir.display()))?;
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    claim_socket(&cfg.socket)?;
    let gid = cfg.socket_group.as_deref().map(group_id).transpose()?;
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

    // Restores cnet's nftables tables from the event of a change to them
    // (another tool's `nft flush ruleset`, a restart of the nftables
    // service), and checks them all every half minute as well, for changes
    // of single elements (which the watch leaves to this check: cnet's own
    // attaches and detaches are element changes).
    let watch = cnet_dataplane::nftwatch::TableWatch::open().context("cannot watch the nftables ruleset")?;
    let watched = Arc::downgrade(&svc);
    std::thread::Builder::new().name("cnet-nftwatch".into()).spawn(move || watch_tables(watch, watched))?;
    let periodic = svc.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FIREWALL_CHECK).await;
            let s = periodic.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || repair_tables(&s, Tables::ALL)).await {
                tracing::warn!("firewall check panicked: {e}");
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
        let listener = bind(&path, gid)?;
        let s = svc.clone();
        tokio::spawn(async move { crate::docker::serve(s, listener, &path).await });
    }

    let listener = bind(&cfg.socket, gid)?;
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

/// How often every table of cnet is checked, events or not.
const FIREWALL_CHECK: Duration = Duration::from_secs(30);

/// Which of cnet's tables to check.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Tables {
    /// `inet cnet`: port mappings, masquerade, outbound NAT, L4 proxy.
    pub firewall: bool,
    /// `inet cnetpol`: ACLs.
    pub policies: bool,
    /// `bridge cnetpol`: anti-spoofing.
    pub guards: bool,
}

impl Tables {
    pub const ALL: Tables = Tables { firewall: true, policies: true, guards: true };

    /// The tables a burst of changes may have damaged: cnet's tables whose
    /// shape changed (a deletion of the table, of a chain, of rules), all
    /// of them when events were lost. Element changes are left to the
    /// periodic check: they are what cnet's own attaches make.
    pub fn touched_by(burst: &cnet_dataplane::nftwatch::Burst) -> Tables {
        if burst.lost {
            return Tables::ALL;
        }
        let mut t = Tables::default();
        for e in burst.events.iter().filter(|e| !e.elements_only) {
            match (e.family, e.table.as_str()) {
                (1, crate::dataplane::FIREWALL_TABLE) => t.firewall = true,
                (1, crate::policy::TABLE) => t.policies = true,
                (7, crate::policy::spoof::TABLE) | (5, crate::policy::spoof::EGRESS_TABLE) => t.guards = true,
                _ => {}
            }
        }
        t
    }
}

/// Checks `tables` and restores what someone else changed.
fn repair_tables(svc: &Service, tables: Tables) {
    let results = [
        ("inet cnet", tables.firewall.then(|| svc.firewall.check_and_repair())),
        ("inet cnetpol", tables.policies.then(|| svc.policies.check_and_repair())),
        ("bridge cnetpol, netdev cnetguard", tables.guards.then(|| svc.guards.check_and_repair())),
    ];
    for (table, result) in results {
        if let Some(Err(e)) = result {
            tracing::warn!("checking the nftables table {table} failed: {e}");
        }
    }
}

/// Repairs cnet's tables after each burst of changes to them, for as long as the service lives.
fn watch_tables(mut watch: cnet_dataplane::nftwatch::TableWatch, svc: std::sync::Weak<Service>) {
    loop {
        let burst = match watch.wait() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("the nftables watch failed ({e}): tables are checked every {FIREWALL_CHECK:?} only");
                return;
            }
        };
        let Some(svc) = svc.upgrade() else { return };
        let tables = Tables::touched_by(&burst);
        if tables != Tables::default() {
            repair_tables(&svc, tables);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnet_dataplane::nftwatch::{Burst, TableEvent};

    fn event(family: u8, table: &str, elements_only: bool) -> TableEvent {
        TableEvent { family, table: table.into(), elements_only }
    }

    #[test]
    fn only_changes_to_the_shape_of_cnets_own_tables_ask_for_a_check() {
        let burst = |events| Burst { events, lost: false };
        assert_eq!(
            Tables::touched_by(&burst(vec![event(1, "filter", false), event(1, "cnet", true)])),
            Tables::default()
        );
        assert_eq!(
            Tables::touched_by(&burst(vec![event(1, "cnet", false), event(7, "cnetpol", false)])),
            Tables { firewall: true, policies: false, guards: true }
        );
        assert!(Tables::touched_by(&burst(vec![event(1, "cnetpol", false)])).policies);
        assert_eq!(Tables::touched_by(&burst(vec![event(7, "cnet", false)])), Tables::default(), "another family's");
        assert_eq!(Tables::touched_by(&Burst { events: vec![], lost: true }), Tables::ALL);
    }
}
