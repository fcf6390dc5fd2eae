//! The kernel side of cnet: network namespaces, links, addresses and routes,
//! nftables transactions and sysctls.
//!
//! Invariants:
//! - Nothing here calls `setns` on the calling thread. Work inside another
//!   namespace runs either in a child process that enters the namespace
//!   before `exec` ([`cmd::Cmd::netns`]) or on a short-lived thread of its own
//!   ([`netns::run_in`]); the caller's thread never changes namespace, so an
//!   async runtime's workers are safe.
//! - The hot path (bridges, veths, addresses, routes, deletions) talks route
//!   netlink in process ([`netlink`]); listings for diagnostics use `ip -j`.
//!   Every nftables change is one atomic transaction ([`nft`]).
//! - Deletes succeed when the thing is already gone.

pub mod cmd;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod probe;
pub mod reaper;
pub mod sysctl;

/// An error from the kernel side, with the command and what it said.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot run {program}: {source} (is it installed? cnetd needs iproute2 and nftables)")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String },
    #[error("cannot enter network namespace {path}: {source}")]
    Netns { path: String, source: std::io::Error },
    #[error("unexpected output from {program}: {detail}")]
    Parse { program: String, detail: String },
    #[error("{what}: {source}")]
    Netlink { what: String, source: std::io::Error },
}

impl DataplaneError {
    /// Whether the failure says that a thing already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
            || matches!(self, DataplaneError::Failed { stderr, .. } if stderr.contains("File exists"))
    }

    /// Whether a bridge refused another port: it takes at most 1,024.
    pub fn is_bridge_full(&self) -> bool {
        self.errno() == Some(libc::EXFULL)
            || matches!(self, DataplaneError::Failed { stderr, .. } if stderr.contains("Exchange full"))
    }

    /// The kernel's error number, for netlink failures.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DataplaneError::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;
