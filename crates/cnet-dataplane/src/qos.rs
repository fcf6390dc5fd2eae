//! QoS of an endpoint's host link, with tc: the two token buckets the CNI
//! bandwidth plugin builds (`plugins/meta/bandwidth/ifb_creator.go`).
//! An endpoint without a host link (a Transparent container's macvlan,
//! which lives only in its namespace) is shaped on its own link in its
//! namespace, with the spec [`QosSpec::mirrored`]: what leaves that link
//! is what the endpoint sends, and the ifb is made in that namespace.
//!
//! - Traffic **to** the endpoint leaves the host through its host link
//!   `dev`: a `tbf` root qdisc on `dev` shapes it.
//! - Traffic **from** the endpoint enters the host through `dev`, and
//!   ingress cannot be shaped (no queue; this kernel has no `police` action
//!   either): an `ingress` qdisc (`ffff:`) on `dev` with a match-all `u32`
//!   filter redirects every packet (`mirred egress redirect`) to the
//!   endpoint's `ifb` link, whose `tbf` root qdisc shapes it.
//!
//! The qdiscs and the filter are written by the `tc` program, in one
//! `tc -batch` process per change: netlink-packet-route 0.34 encodes
//! neither `tbf` options nor the `u32` selector with a `mirred` action in
//! a form we could test byte for byte, and the change is not on a hot path
//! (a few milliseconds, once per policy change). The `ifb` link is made
//! and every read is done over route netlink, in process.
//!
//! Invariants:
//! - [`set`] brings `dev` to the spec whatever it had: `replace` for what
//!   is wanted (a rate change never touches a connection: packets queue
//!   in the bucket, none is dropped for the change itself), deletion of
//!   what is not; so a failed change is undone by setting the old spec
//!   again, and setting a spec twice changes nothing.
//! - The `ifb` exists exactly while the egress is shaped; a half-made one
//!   is deleted again when the step fails.
//! - A spec with nothing shaped, on a link that is gone, succeeds.

use crate::cmd::Cmd;
use crate::netlink::qos::{Qdisc, QdiscParent};
use crate::netlink::Rtnl;
use crate::{DataplaneError, Result};

/// One token bucket: `rate` in bytes per second, `burst` (the bucket) and
/// `limit` (the queue behind it) in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shaper {
    pub rate: u64,
    pub burst: u32,
    pub limit: u32,
}

/// An endpoint's QoS, in the endpoint's directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosSpec {
    /// What the endpoint sends (the `ifb`'s bucket).
    pub egress: Option<Shaper>,
    /// What the endpoint receives (the bucket on its host link).
    pub ingress: Option<Shaper>,
}

impl QosSpec {
    pub fn is_empty(&self) -> bool {
        self.egress.is_none() && self.ingress.is_none()
    }

    /// The same caps for a link on the endpoint's side (its egress is the
    /// endpoint's egress), given to [`set`] in place of a host link's.
    pub fn mirrored(self) -> QosSpec {
        QosSpec { egress: self.ingress, ingress: self.egress }
    }
}

/// What is in the kernel: for each direction, the drop count of its bucket,
/// or `None` when that direction is not shaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosStatus {
    pub egress: Option<u64>,
    pub ingress: Option<u64>,
}

impl QosStatus {
    /// The status of an endpoint-side link, in the endpoint's directions.
    pub fn mirrored(self) -> QosStatus {
        QosStatus { egress: self.ingress, ingress: self.egress }
    }
}

/// `tbf` arguments of a bucket, as `tc` reads them (sizes in bytes).
fn tbf(s: &Shaper) -> String {
    format!("tbf rate {}bit burst {} limit {}", s.rate.saturating_mul(8), s.burst, s.limit)
}

/// What the kernel has of an endpoint's buckets, piece by piece.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Have {
    /// The drops of the `tbf` root of the host link.
    pub root_tbf: Option<u64>,
    /// Whether the host link has the `ingress` qdisc (and so, maybe, the redirect).
    pub redirected: bool,
    /// The drops of the ifb's `tbf` root.
    pub ifb_tbf: Option<u64>,
}

impl Have {
    /// A direction is capped when its bucket is there, and for the egress
    /// the redirect to it too.
    pub fn status(&self) -> QosStatus {
        QosStatus { egress: self.ifb_tbf.filter(|_| self.redirected), ingress: self.root_tbf }
    }
}

/// The `tc -batch` lines that bring `dev` from `have` to `want`. The ifb
/// itself is made before and deleted after, over netlink.
pub fn script(dev: &str, ifb: &str, want: &QosSpec, have: &Have) -> String {
    let mut lines = Vec::new();
    match &want.ingress {
        Some(s) => lines.push(format!("qdisc replace dev {dev} root handle 1: {}", tbf(s))),
        None if have.root_tbf.is_some() => lines.push(format!("qdisc del dev {dev} root")),
        None => {}
    }
    match &want.egress {
        Some(s) => {
            lines.push(format!("qdisc replace dev {ifb} root handle 1: {}", tbf(s)));
            lines.push(format!("qdisc replace dev {dev} handle ffff: ingress"));
            lines.push(format!(
                "filter replace dev {dev} parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0 action mirred egress redirect dev {ifb}"
            ));
        }
        // Even a redirect to an ifb that is gone: it would drop everything.
        None if have.redirected => lines.push(format!("qdisc del dev {dev} ingress")),
        None => {}
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn bucket(q: Option<Qdisc>) -> Option<u64> {
    q.filter(|q| q.kind == "tbf").map(|q| q.drops)
}

/// What `dev` and `ifb` have; nothing when `dev` is gone.
pub fn have(nl: &mut Rtnl, dev: &str, ifb: &str) -> Result<Have> {
    let Some(index) = nl.index(dev)? else { return Ok(Have::default()) };
    let ifb_index = nl.index(ifb)?;
    let qdiscs = nl.qdiscs(&[Some(index), ifb_index].into_iter().flatten().collect::<Vec<_>>())?;
    let find = |i: Option<u32>, p: QdiscParent| qdiscs.iter().find(|q| Some(q.0) == i && q.1 == p).map(|q| q.2.clone());
    Ok(Have {
        root_tbf: bucket(find(Some(index), QdiscParent::Root)),
        redirected: find(Some(index), QdiscParent::Ingress).is_some_and(|q| q.kind == "ingress"),
        ifb_tbf: bucket(find(ifb_index, QdiscParent::Root)),
    })
}

fn rtnl(netns: Option<&str>) -> Result<Rtnl> {
    match netns {
        Some(path) => Rtnl::open_in(path),
        None => Rtnl::open(),
    }
}

/// Which directions of `dev` (in the namespace at `netns`, or the
/// host's) are capped, with their drop counts.
pub fn status(netns: Option<&str>, dev: &str, ifb: &str) -> Result<QosStatus> {
    Ok(have(&mut rtnl(netns)?, dev, ifb)?.status())
}

/// Brings link `dev` (in the namespace at `netns`, or the host's) and its
/// `ifb`, made beside it, to `want`.
pub fn set(netns: Option<&str>, dev: &str, ifb: &str, want: &QosSpec) -> Result<()> {
    let mut nl = rtnl(netns)?;
    if nl.index(dev)?.is_none() {
        if want.is_empty() {
            nl.delete(ifb)?;
            return Ok(());
        }
        return Err(DataplaneError::Netlink {
            what: format!("shaping link {dev}"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        });
    }
    let have = have(&mut nl, dev, ifb)?;
    let mut made_ifb = false;
    if want.egress.is_some() && nl.index(ifb)?.is_none() {
        let mtu = nl.link(dev)?.map_or(1500, |l| l.mtu);
        nl.add_ifb(ifb, mtu)?;
        made_ifb = true;
        if let Err(e) = nl.no_link_local(ifb).and_then(|_| nl.set_up(ifb, true)) {
            let _ = nl.delete(ifb);
            return Err(e);
        }
    }
    let lines = script(dev, ifb, want, &have);
    if !lines.is_empty() {
        if let Err(e) = Cmd::new("tc").args(["-batch", "-"]).stdin(lines).netns(netns).run() {
            if made_ifb {
                let _ = nl.delete(ifb);
            }
            return Err(e);
        }
    }
    if want.egress.is_none() {
        nl.delete(ifb)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Shaper = Shaper { rate: 2_500_000, burst: 65_536, limit: 128_036 };

    #[test]
    fn egress_goes_through_the_ifb_and_ingress_is_the_host_links_root() {
        let both = QosSpec { egress: Some(S), ingress: Some(S) };
        let s = script("cnv1", "cnq1", &both, &Have::default());
        assert_eq!(
            s,
            "qdisc replace dev cnv1 root handle 1: tbf rate 20000000bit burst 65536 limit 128036\n\
             qdisc replace dev cnq1 root handle 1: tbf rate 20000000bit burst 65536 limit 128036\n\
             qdisc replace dev cnv1 handle ffff: ingress\n\
             filter replace dev cnv1 parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0 action mirred egress redirect dev cnq1\n"
        );
    }

    #[test]
    fn what_is_no_longer_wanted_is_deleted_and_what_is_not_there_is_left_alone() {
        let have = Have { root_tbf: Some(0), redirected: true, ifb_tbf: Some(3) };
        let s = script("cnv1", "cnq1", &QosSpec::default(), &have);
        assert_eq!(s, "qdisc del dev cnv1 root\nqdisc del dev cnv1 ingress\n");
        assert_eq!(script("cnv1", "cnq1", &QosSpec::default(), &Have::default()), "");
        // A redirect whose ifb is gone goes too; an ifb without a redirect caps nothing.
        let stray = Have { redirected: true, ..Have::default() };
        assert_eq!(script("cnv1", "cnq1", &QosSpec::default(), &stray), "qdisc del dev cnv1 ingress\n");
        assert_eq!(Have { ifb_tbf: Some(1), ..Have::default() }.status(), QosStatus::default());
    }

    #[test]
    fn the_kernel_gets_the_buckets_reads_them_back_and_loses_them_again() {
        crate::testutil::in_private_netns(|| {
            let peer = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            let mut nl = Rtnl::open().unwrap();
            nl.add_veth("qv0", None, 1500, "qv1", &peer).unwrap();
            nl.set_up("qv0", true).unwrap();
            assert_eq!(status(None, "qv0", "qi0").unwrap(), QosStatus::default());
            let both = QosSpec { egress: Some(S), ingress: Some(S) };
            set(None, "qv0", "qi0", &both).unwrap();
            assert_eq!(status(None, "qv0", "qi0").unwrap(), QosStatus { egress: Some(0), ingress: Some(0) });
            set(None, "qv0", "qi0", &both).unwrap();
            set(None, "qv0", "qi0", &QosSpec { egress: None, ingress: Some(S) }).unwrap();
            assert_eq!(status(None, "qv0", "qi0").unwrap(), QosStatus { egress: None, ingress: Some(0) });
            assert_eq!(nl.index("qi0").unwrap(), None, "the ifb goes with the egress cap");
            set(None, "qv0", "qi0", &QosSpec::default()).unwrap();
            assert_eq!(status(None, "qv0", "qi0").unwrap(), QosStatus::default());
            nl.delete("qv0").unwrap();
            set(None, "qv0", "qi0", &QosSpec::default()).unwrap();
        });
    }
}
