//! What QoS needs from route netlink: creating an `ifb` link, and reading
//! one qdisc of a link (its kind and drop count) without a dump.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo as NlLinkInfo};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcStats2};
use netlink_packet_route::RouteNetlinkMessage;

use super::{by_name, failed, Rtnl};
use crate::Result;

/// A qdisc as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    /// Packets it dropped since it was made.
    pub drops: u64,
}

/// Where a qdisc hangs: the link's root (egress) or its ingress hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QdiscParent {
    Root,
    Ingress,
}

/// The kind and drop count of a qdisc message.
fn qdisc_of(m: &TcMessage) -> Qdisc {
    let mut q = Qdisc { kind: String::new(), drops: 0 };
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => q.kind = k.clone(),
            TcAttribute::Stats2(s) => {
                for s in s {
                    if let TcStats2::Queue(queue) = s {
                        q.drops = u64::from(queue.drops);
                    }
                }
            }
            TcAttribute::Stats(s) if q.drops == 0 => q.drops = u64::from(s.drops),
            _ => {}
        }
    }
    q
}

impl Rtnl {
    /// Creates an `ifb` link (down) with `mtu`.
    pub fn add_ifb(&mut self, name: &str, mtu: u32) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Ifb)]));
        self.request(|| format!("creating ifb {name}"), RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// The qdiscs of the links `indexes` by (link, parent), from one dump
    /// (this kernel answers a plain RTM_GETQDISC with an acknowledgement
    /// only, and dumps every link's). A link's default root qdisc
    /// (`noqueue`, `noop`) is listed as it is.
    pub fn qdiscs(&mut self, indexes: &[u32]) -> Result<Vec<(u32, QdiscParent, Qdisc)>> {
        let answers = self
            .exchange(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()), NLM_F_DUMP)
            .map_err(|e| failed("listing qdiscs", e))?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewQueueDiscipline(q) => {
                    let index = u32::try_from(q.header.index).ok().filter(|i| indexes.contains(i))?;
                    let parent = match q.header.parent {
                        TcHandle::ROOT => QdiscParent::Root,
                        TcHandle::INGRESS => QdiscParent::Ingress,
                        _ => return None,
                    };
                    Some((index, parent, qdisc_of(q)))
                }
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::tc::TcStatsQueue;

    #[test]
    fn a_qdisc_message_reads_as_its_kind_and_drops() {
        let mut m = TcMessage::with_index(3);
        m.attributes.push(TcAttribute::Kind("tbf".into()));
        let mut queue = TcStatsQueue::default();
        queue.drops = 65;
        m.attributes.push(TcAttribute::Stats2(vec![TcStats2::Queue(queue)]));
        assert_eq!(qdisc_of(&m), Qdisc { kind: "tbf".into(), drops: 65 });
    }
}
