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

    /// The qdisc at `parent` of link `index`, or `None` when there is none
    /// (a link's default root qdisc, `noqueue` or `noop`, is reported as it
    /// is). A dump for the one link: this kernel answers a plain RTM_GETQDISC
    /// with an acknowledgement only.
    pub fn qdisc(&mut self, index: u32, parent: QdiscParent) -> Result<Option<Qdisc>> {
        let want = match parent {
            QdiscParent::Root => TcHandle::ROOT,
            QdiscParent::Ingress => TcHandle::INGRESS,
        };
        let answers = self
            .exchange(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(index as i32)), NLM_F_DUMP)
            .map_err(|e| failed(format!("reading the qdiscs of link {index}"), e))?;
        Ok(answers.iter().find_map(|a| match a {
            RouteNetlinkMessage::NewQueueDiscipline(q) if q.header.index == index as i32 && q.header.parent == want => {
                Some(qdisc_of(q))
            }
            _ => None,
        }))
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
