//! The `CNI_*` environment of one call.

use std::collections::BTreeMap;

use crate::error::{code, CniError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// What the runtime passed in the environment.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs (keys as sent; the runtime may order them at random).
    pub args: BTreeMap<String, String>,
}

/// Parses `K=V;K=V` (`CNI_ARGS`). Empty parts are skipped; a part without
/// `=` is an error.
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            CniError::new(code::INVALID_ENVIRONMENT, format!("CNI_ARGS part {part:?} is not KEY=VALUE"))
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Reads the command and, for the commands that need them, the other variables.
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<(Command, Invocation), CniError> {
    let cmd = match get("CNI_COMMAND").unwrap_or_default().as_str() {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "STATUS" => Command::Status,
        "GC" => Command::Gc,
        "VERSION" => Command::Version,
        "" => {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime",
            ))
        }
        other => {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_COMMAND {other:?} is unknown: use ADD, DEL, CHECK, STATUS, GC or VERSION"),
            ))
        }
    };
    let mut inv = Invocation {
        container_id: get("CNI_CONTAINERID").unwrap_or_default(),
        netns: get("CNI_NETNS").unwrap_or_default(),
        ifname: get("CNI_IFNAME").unwrap_or_default(),
        args: parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?,
    };
    if matches!(cmd, Command::Add | Command::Del | Command::Check) {
        let id_ok = inv.container_id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && inv.container_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !id_ok {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_CONTAINERID {:?} is missing or invalid: it must start with a letter or digit and hold only letters, digits, '_', '.', '-'", inv.container_id),
            ));
        }
        if cnet_model::IfName::new(&inv.ifname).is_err() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_IFNAME {:?} is missing or invalid: 1 to 15 bytes without '/', ':' or spaces", inv.ifname),
            ));
        }
        if matches!(cmd, Command::Add | Command::Check) && inv.netns.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_NETNS is not set: ADD and CHECK need the container's network namespace",
            ));
        }
    }
    // Some runtimes send placeholders ("dummy") for VERSION; nothing to check then.
    inv.netns = inv.netns.trim().to_string();
    Ok((cmd, inv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_in_any_order_with_empty_parts() {
        let a = parse_cni_args("K8S_POD_NAME=x;;IgnoreUnknown=1;IP=10.0.0.5").unwrap();
        assert_eq!(a["IP"], "10.0.0.5");
        assert_eq!(a.len(), 3);
        assert_eq!(parse_cni_args("nonsense").unwrap_err().code, code::INVALID_ENVIRONMENT);
    }

    #[test]
    fn add_without_netns_is_an_environment_error() {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some("ADD".to_string()),
            "CNI_CONTAINERID" => Some("abc".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            _ => None,
        };
        assert_eq!(from_env(env).unwrap_err().code, code::INVALID_ENVIRONMENT);
    }

    #[test]
    fn del_without_netns_is_fine() {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some("DEL".to_string()),
            "CNI_CONTAINERID" => Some("default-abc".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            "CNI_NETNS" => Some(String::new()),
            _ => None,
        };
        assert_eq!(from_env(env).unwrap().0, Command::Del);
    }
}
