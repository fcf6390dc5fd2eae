//! QoS: an endpoint's `QOS` and `Bandwidth` policies → the token buckets
//! of its [`Adapter`] ([`QosSpec`]), which the [`Dataplane`] programs with
//! tc (`cnet_dataplane::qos`). The compiler ([`spec_of`]) is pure.
//!
//! The adapter is the endpoint's host link (veth, TAP), or, for an
//! endpoint with none, its own link: a Transparent container's macvlan in
//! its namespace (with the ifb beside it there), a Transparent VM's
//! macvtap on the host. A container holding `CAP_NET_ADMIN` can remove the
//! caps of a link in its own namespace, as it can its anti-spoofing guard
//! there (`docs/policies.md`).
//!
//! - `QOS` (HCN): `MaximumOutgoingBandwidthInBytes` is the egress rate in
//!   bytes/s; HCN has no burst, so cnet gives max(64 KiB, 10 ms of the rate).
//! - `Bandwidth` (Linux extension; the CNI `bandwidth` capability): rates
//!   in bits/s and bursts in bits, converted to bytes as the CNI bandwidth
//!   plugin does.
//! - Both: the queue behind the bucket holds 25 ms at the rate plus the
//!   burst (the plugin's `limit = rate × latency + burst`, latency 25 ms).
//!
//! Invariants:
//! - A burst is never below 64 KiB: veths carry GSO packets of up to
//!   64 KiB, and a smaller bucket would split or drop every one of them.
//! - Only endpoints whose policies cap something touch tc: attaching or
//!   detaching one without QoS costs nothing here.
//! - The caps are in the endpoint's directions whatever the adapter: a
//!   link on the endpoint's side gets the spec mirrored.
//! - The `ifb` of an endpoint is named from its ID (`cnq` + 11 hex digits,
//!   as its veth is `cnv` + the same digits), so start-up repair tells an
//!   orphan from an owned one by name.

use cnet_dataplane::qos::{QosSpec, QosStatus, Shaper};
use cnet_model::findings::{Finding, FindingKind, Subject, SubjectKind};
use cnet_model::qos::{bandwidth_in, has_qos, qos_in};
use cnet_model::{EndpointPolicy, NetworkType};
use uuid::Uuid;

use crate::dataplane::{Dataplane, DataplaneError, DpResult};
use crate::state::EndpointRecord;

/// The smallest bucket: one GSO packet.
pub const MIN_BURST: u64 = 64 * 1024;
/// How long a packet may wait behind the bucket (the CNI plugin's latency).
pub const LATENCY_MS: u64 = 25;
/// HCN QOS has no burst: the bucket holds this much time at the rate.
pub const QOS_BURST_MS: u64 = 10;

/// The prefix of the endpoints' ifb links.
pub const IFB_PREFIX: &str = "cnq";

/// The ifb link of endpoint `id`: at most 15 bytes.
pub fn ifb_name(id: &Uuid) -> String {
    format!("{IFB_PREFIX}{:011x}", cnet_model::names::stable_hash(id.as_bytes()) & 0xfff_ffff_ffff)
}

/// A bucket of `rate` bytes/s and (at least) `burst` bytes.
fn shaper(rate: u64, burst: u64) -> Shaper {
    let burst = burst.clamp(MIN_BURST, u32::MAX as u64);
    let limit = (rate as u128 * LATENCY_MS as u128 / 1000 + burst as u128).min(u32::MAX as u128);
    Shaper { rate, burst: burst as u32, limit: limit as u32 }
}

/// The buckets `policies` ask for (nothing when they cap nothing).
pub fn spec_of(policies: &[EndpointPolicy]) -> Result<QosSpec, String> {
    let mut spec = QosSpec::default();
    if let Some(q) = qos_in(policies) {
        q.check()?;
        let rate = q.maximum_outgoing_bandwidth_in_bytes;
        spec.egress = Some(shaper(rate, rate * QOS_BURST_MS / 1000));
    }
    if let Some(b) = bandwidth_in(policies) {
        b.check()?;
        if let Some((rate, burst)) = b.ingress()? {
            spec.ingress = Some(shaper(rate / 8, burst / 8));
        }
        if let Some((rate, burst)) = b.egress()? {
            if spec.egress.is_some() {
                return Err("QOS and Bandwidth EgressRate both cap the egress: keep one".into());
            }
            spec.egress = Some(shaper(rate / 8, burst / 8));
        }
    }
    Ok(spec)
}

/// The link where an attached endpoint's traffic is counted and shaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adapter {
    /// The namespace it is in (`None`: the host's).
    pub netns: Option<String>,
    pub link: String,
    /// The link is the endpoint's own: what it sends is what the endpoint
    /// sent. A host-side port counts the other way.
    pub endpoint_side: bool,
}

impl Adapter {
    /// The spec `dp.qos_set` takes for this link.
    fn spec(&self, spec: QosSpec) -> QosSpec {
        if self.endpoint_side {
            spec.mirrored()
        } else {
            spec
        }
    }

    /// A container's namespace that is gone: its link and ifb went with it.
    fn gone(&self, dp: &dyn Dataplane) -> bool {
        self.netns.as_deref().is_some_and(|p| !dp.netns_exists(p))
    }

    fn status(&self, dp: &dyn Dataplane, ep: &EndpointRecord) -> DpResult<QosStatus> {
        if self.gone(dp) {
            return Ok(QosStatus::default());
        }
        let s = dp.qos_status(self.netns.as_deref(), &self.link, &ifb_name(&ep.id))?;
        Ok(if self.endpoint_side { s.mirrored() } else { s })
    }
}

/// `ep`'s adapter on a network of type `kind`, with `netns` the path of
/// the namespace it is attached to (empty for a VM's): its host link; a
/// Transparent container's macvlan in `netns`; a Transparent VM's macvtap.
/// `None` for an endpoint with none (remote, or a Transparent container
/// whose namespace is not known).
pub fn adapter(ep: &EndpointRecord, kind: NetworkType, netns: Option<&str>) -> Option<Adapter> {
    let vm = ep.vm_device.is_some() || netns == Some("");
    match (kind, vm, netns) {
        (NetworkType::Transparent, true, _) => {
            Some(Adapter { netns: None, link: crate::driver::transparent::vm_link(ep), endpoint_side: true })
        }
        // Never cnetd's own namespace: its links are the host's.
        (NetworkType::Transparent, false, Some(path)) if !crate::policy::inside::is_own(path) => {
            Some(Adapter { netns: Some(path.to_string()), link: ep.interface_name.to_string(), endpoint_side: true })
        }
        _ if !ep.host_interface_name.is_empty() => {
            Some(Adapter { netns: None, link: ep.host_interface_name.clone(), endpoint_side: false })
        }
        _ => None,
    }
}

/// Whether `ep` has buckets in the kernel to care about.
pub fn shaped(ep: &EndpointRecord) -> bool {
    has_qos(&ep.policies)
}

/// Brings `ep`'s adapter `at` to what its policies ask for (removes every
/// bucket when they ask for none).
pub fn set(dp: &dyn Dataplane, ep: &EndpointRecord, at: &Adapter) -> DpResult<()> {
    let spec = spec_of(&ep.policies)
        .map_err(|reason| DataplaneError::Invalid { what: format!("QoS of endpoint {}", ep.display_name()), reason })?;
    dp.qos_set(at.netns.as_deref(), &at.link, &ifb_name(&ep.id), &at.spec(spec))
}

/// Removes `ep`'s buckets from `at`, and its ifb (nothing to do in a
/// namespace that is gone).
pub fn clear(dp: &dyn Dataplane, ep: &EndpointRecord, at: &Adapter) -> DpResult<()> {
    if at.gone(dp) {
        return Ok(());
    }
    dp.qos_set(at.netns.as_deref(), &at.link, &ifb_name(&ep.id), &QosSpec::default())
}

/// Packets `ep`'s caps on `at` dropped: `(egress, ingress)`, 0 for a
/// direction without a cap.
pub fn drops(dp: &dyn Dataplane, ep: &EndpointRecord, at: &Adapter) -> DpResult<(u64, u64)> {
    let s = at.status(dp, ep)?;
    Ok((s.egress.unwrap_or(0), s.ingress.unwrap_or(0)))
}

/// Buckets `ep` should have on `at` and the kernel lacks, or has and should not.
pub fn drift(dp: &dyn Dataplane, ep: &EndpointRecord, at: &Adapter) -> DpResult<Vec<Finding>> {
    // A namespace that is gone is a finding of its own.
    if !shaped(ep) || at.gone(dp) {
        return Ok(vec![]);
    }
    let Ok(want) = spec_of(&ep.policies) else { return Ok(vec![]) };
    let have = at.status(dp, ep)?;
    let who = || Subject::new(SubjectKind::Endpoint, Some(ep.id), ep.display_name());
    let mut out = Vec::new();
    for (what, wanted, there) in [
        ("egress", want.egress.is_some(), have.egress.is_some()),
        ("ingress", want.ingress.is_some(), have.ingress.is_some()),
    ] {
        if wanted != there {
            let (kind, how) =
                if wanted { (FindingKind::Missing, "missing") } else { (FindingKind::Mismatch, "not asked for") };
            out.push(Finding::new(
                who(),
                kind,
                format!(
                    "endpoint {}: the {what} cap on {} is {how} (restart cnetd or set the policy again)",
                    ep.display_name(),
                    at.link
                ),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnet_model::qos::{BandwidthPolicy, QosPolicy};

    fn qos(n: u64) -> EndpointPolicy {
        EndpointPolicy::Qos(QosPolicy { maximum_outgoing_bandwidth_in_bytes: n })
    }
    fn bw(i: Option<(u64, u64)>, e: Option<(u64, u64)>) -> EndpointPolicy {
        EndpointPolicy::Bandwidth(BandwidthPolicy {
            ingress_rate: i.map(|x| x.0),
            ingress_burst: i.map(|x| x.1),
            egress_rate: e.map(|x| x.0),
            egress_burst: e.map(|x| x.1),
        })
    }

    #[test]
    fn hcn_qos_is_an_egress_bucket_of_ten_ms_but_at_least_64_kib() {
        // 2.5 MB/s (20 Mbit/s): 10 ms is 25 KB, below one GSO packet.
        let s = spec_of(&[qos(2_500_000)]).unwrap();
        assert_eq!(s.ingress, None);
        assert_eq!(s.egress, Some(Shaper { rate: 2_500_000, burst: 65_536, limit: 62_500 + 65_536 }));
        // 125 MB/s (1 Gbit/s): 10 ms is 1.25 MB.
        let s = spec_of(&[qos(125_000_000)]).unwrap().egress.unwrap();
        assert_eq!((s.burst, s.limit), (1_250_000, 3_125_000 + 1_250_000));
    }

    #[test]
    fn cni_bandwidth_is_converted_from_bits_with_the_plugins_limit() {
        // 40 Mbit/s with a 1 Mbit burst in, 20 Mbit/s with 2 Mbit out.
        let s = spec_of(&[bw(Some((40_000_000, 1_000_000)), Some((20_000_000, 2_000_000)))]).unwrap();
        assert_eq!(s.ingress, Some(Shaper { rate: 5_000_000, burst: 125_000, limit: 125_000 + 125_000 }));
        assert_eq!(s.egress, Some(Shaper { rate: 2_500_000, burst: 250_000, limit: 62_500 + 250_000 }));
        // A small burst is raised to 64 KiB; kubelet's "no limit" burst fits.
        let s = spec_of(&[bw(Some((8_000_000, 8)), None)]).unwrap();
        assert_eq!(s.ingress.unwrap().burst, 65_536);
        let s = spec_of(&[bw(None, Some((8_000_000, i32::MAX as u64)))]).unwrap();
        assert_eq!(s.egress.unwrap().burst, i32::MAX as u32 / 8);
        // QOS for the egress and Bandwidth for the ingress go together.
        let s = spec_of(&[qos(2_500_000), bw(Some((40_000_000, 1_000_000)), None)]).unwrap();
        assert!(s.egress.is_some() && s.ingress.is_some());
    }

    #[test]
    fn what_the_cni_plugin_refuses_is_refused() {
        assert!(spec_of(&[qos(0)]).is_err());
        assert!(spec_of(&[bw(Some((0, 10)), None)]).is_err());
        assert!(spec_of(&[bw(None, Some((10, 0)))]).is_err());
        assert!(spec_of(&[bw(None, None)]).is_err());
        assert!(spec_of(&[qos(1), bw(None, Some((8, 8)))]).unwrap_err().contains("keep one"));
        assert_eq!(spec_of(&[]).unwrap(), QosSpec::default());
    }

    #[test]
    fn ifb_names_fit_and_follow_the_veth_names() {
        let id = Uuid::new_v4();
        let name = ifb_name(&id);
        assert_eq!(name.len(), 14);
        let veth = format!("cnv{:011x}", cnet_model::names::stable_hash(id.as_bytes()) & 0xfff_ffff_ffff);
        assert_eq!(name[3..], veth[3..]);
    }
}
