//! `--publish` specifications: `[VIP:]EXT[-EXTEND]:INT[/PROTO]`.

use cnet_model::{PortMapping, Protocol};
use std::net::IpAddr;

/// Parses `8080:80`, `8080:80/udp`, `198.18.0.2:8080:80`, `[fd00::1]:8080:80/tcp`,
/// `8000-8009:9000` (a range of 10 ports).
pub fn parse_publish(spec: &str) -> Result<PortMapping, String> {
    let bad = |why: &str| format!("--publish {spec:?}: {why}; write [VIP:]HOSTPORT[-END]:CONTAINERPORT[/tcp|udp|sctp]");
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.parse::<Protocol>().map_err(|e| bad(&e.error))?),
        None => (spec, Protocol::Tcp),
    };
    let (vip, rest) = if let Some(stripped) = rest.strip_prefix('[') {
        let (v, r) = stripped.split_once("]:").ok_or_else(|| bad("unclosed [VIP]"))?;
        (Some(v.parse::<IpAddr>().map_err(|_| bad("VIP is not an address"))?), r)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            2 => (None, rest),
            3 => (
                Some(parts[0].parse::<IpAddr>().map_err(|_| bad("VIP is not an address"))?),
                &rest[parts[0].len() + 1..],
            ),
            _ => return Err(bad("wrong number of ':'")),
        }
    };
    let (ext, int) = rest.split_once(':').ok_or_else(|| bad("missing ':'"))?;
    let port = |s: &str| s.parse::<u16>().map_err(|_| bad(&format!("{s:?} is not a port")));
    let (ext0, count) = match ext.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(bad("range end is below its start"));
            }
            (a, b - a + 1)
        }
        None => (port(ext)?, 1),
    };
    Ok(PortMapping {
        protocol: proto,
        internal_port: port(int)?,
        external_port: ext0,
        vip,
        flags: 0,
        port_count: count,
    })
}

/// The inverse of [`parse_publish`], for tables.
pub fn format_publish(m: &PortMapping) -> String {
    let vip = match m.vip {
        Some(IpAddr::V6(v)) => format!("[{v}]:"),
        Some(v) => format!("{v}:"),
        None => String::new(),
    };
    let ext = if m.port_count > 1 {
        format!("{}-{}", m.external_port, m.external_port + m.port_count - 1)
    } else {
        m.external_port.to_string()
    };
    format!("{vip}{ext}:{}/{}", m.internal_port, m.protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_round_trip() {
        for s in ["8080:80/tcp", "198.18.0.2:53:53/udp", "[fd00::1]:8080:80/tcp", "8000-8009:9000/sctp"] {
            assert_eq!(format_publish(&parse_publish(s).unwrap()), s);
        }
        assert_eq!(parse_publish("8080:80").unwrap().protocol, Protocol::Tcp);
        assert_eq!(parse_publish("8000-8009:9000").unwrap().port_count, 10);
        assert!(parse_publish("80").is_err());
        assert!(parse_publish("x:80").is_err());
        assert!(parse_publish("90-80:80").is_err());
    }
}
