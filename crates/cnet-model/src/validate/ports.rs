//! Port mappings against each other and the host's: the check of
//! `PortAlreadyExists`, indexed so its cost does not grow with the number
//! of published ports.

use uuid::Uuid;

use crate::endpoint::PortMapping;
use crate::error::{ApiError, ErrorCode, Result};
use crate::names::ObjectName;
use crate::net::Protocol;

/// An endpoint that publishes ports, named in conflicts.
#[derive(Clone, Copy, Debug)]
pub struct Publisher<'a> {
    pub id: Uuid,
    pub name: Option<&'a ObjectName>,
    /// The namespace it is attached to.
    pub namespace: Option<Uuid>,
}

impl Publisher<'_> {
    pub fn display_name(&self) -> String {
        crate::names::display_name(self.name, &self.id)
    }
}

/// Checks port mappings of one endpoint against the host's and each other.
/// A mapping that another endpoint in the same namespace (`ns`) publishes
/// identically is not a conflict: runtimes send a container's ports with
/// every network it joins, and it stays one published port (the firewall
/// serves it through the endpoint that published it first).
pub fn check_port_mappings(
    mappings: &[&PortMapping],
    used: &[(&PortMapping, Publisher)],
    ns: Option<Uuid>,
    sctp_available: bool,
) -> Result<()> {
    for (i, m) in mappings.iter().enumerate() {
        m.check()?;
        if m.protocol == Protocol::Sctp && !sctp_available {
            return Err(ApiError::unsupported(
                "SCTP port mappings need the kernel's SCTP support, which this host lacks: load the sctp module or use TCP/UDP",
            ));
        }
        if mappings[..i].iter().any(|o| o.conflicts_with(m)) {
            return Err(ApiError::new(
                ErrorCode::PortAlreadyExists,
                format!("{} port {} is mapped twice in this request", m.protocol, m.external_port),
            ));
        }
    }
    // One pass over the host's mappings, each looked up among the request's
    // sorted by (protocol, first port): O(used · log request), so adding a
    // port costs the same with ten thousand published as with none.
    let mut sorted: Vec<&PortMapping> = mappings.to_vec();
    sorted.sort_by_key(|m| (m.protocol, m.external_port));
    let widest = sorted.iter().map(|m| m.port_count as u32).max().unwrap_or(1);
    for (u, owner) in used {
        let (start, end) = (u.external_port as u32, u.external_port as u32 + u.port_count as u32);
        // Request mappings starting in [start - widest + 1, end) may overlap u.
        let lo = sorted.partition_point(|m| {
            (m.protocol, (m.external_port as u32)) < (u.protocol, (start + 1).saturating_sub(widest))
        });
        let hi = sorted.partition_point(|m| (m.protocol, (m.external_port as u32)) < (u.protocol, end));
        let repeat = |m: &PortMapping| ns.is_some() && owner.namespace == ns && m == *u;
        if let Some(m) = sorted[lo..hi].iter().find(|m| u.conflicts_with(m) && !repeat(m)) {
            return Err(ApiError::new(
                ErrorCode::PortAlreadyExists,
                format!(
                    "{} port {} is already published by endpoint {}: pick another ExternalPort",
                    m.protocol,
                    m.external_port,
                    owner.display_name()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_conflicts_match_the_pairwise_check() {
        // A small LCG: the same pseudo-random mappings every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        fn random(next: &mut impl FnMut(u64) -> u64) -> PortMapping {
            PortMapping {
                protocol: if next(2) == 0 { Protocol::Tcp } else { Protocol::Udp },
                internal_port: 80,
                external_port: 1000 + next(60) as u16,
                vip: [None, Some("198.18.0.2".parse().unwrap()), Some("198.18.0.3".parse().unwrap())][next(3) as usize],
                flags: 0,
                port_count: 1 + next(8) as u16,
            }
        }
        let owner = Publisher { id: Uuid::new_v4(), name: None, namespace: None };
        for _ in 0..300 {
            let used: Vec<PortMapping> = (0..next(20)).map(|_| random(&mut next)).collect();
            let request: Vec<PortMapping> = (0..1 + next(4)).map(|_| random(&mut next)).collect();
            let used_refs: Vec<(&PortMapping, Publisher)> = used.iter().map(|m| (m, owner)).collect();
            let request_refs: Vec<&PortMapping> = request.iter().collect();
            let pairwise = request.iter().enumerate().any(|(i, m)| {
                used.iter().any(|u| u.conflicts_with(m)) || request[..i].iter().any(|o| o.conflicts_with(m))
            });
            let got = check_port_mappings(&request_refs, &used_refs, None, true);
            assert_eq!(got.is_err(), pairwise, "used {used:?} request {request:?}: {got:?}");
        }
    }
}
