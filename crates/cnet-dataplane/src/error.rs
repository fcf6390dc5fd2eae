//! The crate's one error type and what kind of failure each error is.
//!
//! Invariants:
//! - The kind is decided once, where the error is made: from the errno for
//!   kernel and system-call failures, and by one classifier per helper tool
//!   (`ip_kind`, `nft_kind`) for their error texts. No caller searches a
//!   message for words.
//! - Helper programs run with `LC_ALL=C` ([`crate::cmd::Cmd`]), so the texts
//!   the classifiers read are the untranslated ones.

use std::io;

/// What kind of failure an error is, for callers that react to some of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The thing to create is already there (`EEXIST`).
    Exists,
    /// The thing (link, address, namespace, table, entry) is not there.
    NotFound,
    /// A bridge refused another port: it takes at most 1,024 (`EXFULL`).
    BridgeFull,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind of a kernel error number.
    pub fn of_errno(errno: i32) -> ErrorKind {
        match errno {
            libc::EEXIST => ErrorKind::Exists,
            libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL => ErrorKind::NotFound,
            libc::EXFULL => ErrorKind::BridgeFull,
            _ => ErrorKind::Other,
        }
    }

    fn of_io(e: &io::Error) -> ErrorKind {
        e.raw_os_error().map_or(ErrorKind::Other, ErrorKind::of_errno)
    }
}

/// An error from the kernel side: what failed, on which object, and why.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot run {program}: {source} (is it installed? cnetd needs iproute2 and nftables)")]
    Spawn { program: String, source: io::Error },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String, kind: ErrorKind },
    #[error("cannot enter network namespace {path}: {source}")]
    Netns { path: String, source: io::Error },
    #[error("unexpected output from {program}: {detail}")]
    Parse { program: String, detail: String },
    #[error("{what}: {source}")]
    Netlink { what: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Sysctl { path: String, source: io::Error },
    #[error("{what} is not valid: {reason}")]
    Invalid { what: String, reason: String },
}

impl DataplaneError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DataplaneError::Failed { kind, .. } => *kind,
            DataplaneError::Netns { source, .. }
            | DataplaneError::Netlink { source, .. }
            | DataplaneError::Sysctl { source, .. } => ErrorKind::of_io(source),
            DataplaneError::Spawn { .. } | DataplaneError::Parse { .. } | DataplaneError::Invalid { .. } => {
                ErrorKind::Other
            }
        }
    }

    /// The kernel's error number, for netlink failures.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DataplaneError::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// A failed helper program, its kind decided by that program's classifier.
    pub(crate) fn failed(program: &str, stderr: String) -> DataplaneError {
        let kind = match program {
            "ip" => ip_kind(&stderr),
            "nft" => nft_kind(&stderr),
            _ => ErrorKind::Other,
        };
        DataplaneError::Failed { program: program.to_string(), stderr, kind }
    }
}

/// The kind of an `ip` (iproute2) error text: it prints the kernel's
/// `strerror` or a sentence of its own for a missing device.
pub(crate) fn ip_kind(stderr: &str) -> ErrorKind {
    if stderr.contains("File exists") {
        ErrorKind::Exists
    } else if stderr.contains("Exchange full") {
        ErrorKind::BridgeFull
    } else if ["No such file or directory", "No such device", "Cannot find device", "does not exist", "Cannot assign"]
        .iter()
        .any(|t| stderr.contains(t))
    {
        ErrorKind::NotFound
    } else {
        ErrorKind::Other
    }
}

/// The kind of an nftables error text (libnftables and `nft` print the same):
/// a missing table, chain, set or element is `ENOENT`, a duplicate `EEXIST`.
pub(crate) fn nft_kind(stderr: &str) -> ErrorKind {
    if stderr.contains("No such file or directory") {
        ErrorKind::NotFound
    } else if stderr.contains("File exists") {
        ErrorKind::Exists
    } else {
        ErrorKind::Other
    }
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_kinds() {
        assert_eq!(ErrorKind::of_errno(libc::EEXIST), ErrorKind::Exists);
        for e in [libc::ENODEV, libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL] {
            assert_eq!(ErrorKind::of_errno(e), ErrorKind::NotFound, "{e}");
        }
        assert_eq!(ErrorKind::of_errno(libc::EXFULL), ErrorKind::BridgeFull);
        assert_eq!(ErrorKind::of_errno(libc::EPERM), ErrorKind::Other);
        let e = DataplaneError::Netlink { what: "x".into(), source: io::Error::from_raw_os_error(libc::ENODEV) };
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn helper_texts_are_classified_per_tool() {
        let nft = |t: &str| DataplaneError::failed("nft", t.into()).kind();
        assert_eq!(
            nft("Error: No such file or directory\nlist table inet cnet\n                 ^^^^"),
            ErrorKind::NotFound
        );
        assert_eq!(nft("Error: Could not process rule: File exists"), ErrorKind::Exists);
        assert_eq!(nft("Error: syntax error, unexpected newline"), ErrorKind::Other);
        let ip = |t: &str| DataplaneError::failed("ip", t.into()).kind();
        assert_eq!(ip("Cannot create namespace file \"/run/netns/a\": File exists"), ErrorKind::Exists);
        assert_eq!(ip("Cannot find device \"veth0\""), ErrorKind::NotFound);
        assert_eq!(ip("RTNETLINK answers: Exchange full"), ErrorKind::BridgeFull);
        assert_eq!(DataplaneError::failed("other", "File exists".into()).kind(), ErrorKind::Other);
    }
}
