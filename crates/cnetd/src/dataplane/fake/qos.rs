//! The fake's QoS: each host link's buckets as plain data, and the ifb
//! links, as the kernel implementation leaves them (`cnet_dataplane::qos`):
//! the buckets go with their link, the ifb exists while the egress is
//! capped.

use super::objects::{FakeLink, Objects};
use crate::dataplane::{DpResult, QosSpec, QosStatus};

/// The buckets of one host link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeQos {
    pub ifb: String,
    pub spec: QosSpec,
}

impl Objects {
    pub(super) fn qos_set(&mut self, dev: &str, ifb: &str, spec: &QosSpec) -> DpResult<()> {
        let Some(mtu) = self.links.get(dev).map(|l| l.mtu) else {
            if spec.is_empty() {
                self.links.remove(ifb);
                return Ok(());
            }
            return Err(super::errno(format!("shaping link {dev}"), libc::ENODEV));
        };
        if spec.egress.is_some() {
            self.links
                .entry(ifb.to_string())
                .or_insert_with(|| FakeLink { up: true, ..FakeLink::new("ifb", None, mtu) });
        } else {
            self.links.remove(ifb);
        }
        if spec.is_empty() {
            self.qos.remove(dev);
        } else {
            self.qos.insert(dev.to_string(), FakeQos { ifb: ifb.to_string(), spec: *spec });
        }
        Ok(())
    }

    pub(super) fn qos_status(&self, dev: &str, ifb: &str) -> QosStatus {
        let spec = self.qos.get(dev).map(|q| q.spec).unwrap_or_default();
        let redirected = spec.egress.is_some() && self.links.contains_key(ifb);
        QosStatus { egress: redirected.then_some(0), ingress: spec.ingress.map(|_| 0) }
    }
}
