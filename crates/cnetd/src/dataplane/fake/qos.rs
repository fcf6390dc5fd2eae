//! The fake's QoS: each link's buckets as plain data, and the ifb links, as
//! the kernel implementation leaves them (`cnet_dataplane::qos`): the
//! buckets go with a host link, the ifb exists while the redirected
//! direction is capped. A link in a namespace is one of `inside`; its ifb
//! is not modelled as a link but kept in its [`FakeQos`] until the caps are
//! cleared, as the kernel keeps an ifb in the namespace after its link is
//! gone.

use super::objects::{FakeLink, Objects};
use crate::dataplane::{DpResult, QosSpec, QosStatus};

/// The buckets of one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeQos {
    pub ifb: String,
    pub spec: QosSpec,
}

impl Objects {
    fn qos_link_mtu(&self, netns: Option<&str>, dev: &str) -> Option<u32> {
        match netns {
            Some(ns) => self.inside.get(&(ns.to_string(), dev.to_string())).map(|i| i.mtu),
            None => self.links.get(dev).map(|l| l.mtu),
        }
    }

    /// A namespace that is gone cannot be entered, as the kernel's `setns` fails.
    fn qos_enter(&self, netns: Option<&str>) -> DpResult<()> {
        match netns {
            Some(ns) if !self.namespaces.contains(ns) => Err(super::errno(format!("entering {ns}"), libc::ENOENT)),
            _ => Ok(()),
        }
    }

    pub(super) fn qos_set(&mut self, netns: Option<&str>, dev: &str, ifb: &str, spec: &QosSpec) -> DpResult<()> {
        self.qos_enter(netns)?;
        let key = (netns.unwrap_or_default().to_string(), dev.to_string());
        let Some(mtu) = self.qos_link_mtu(netns, dev) else {
            if spec.is_empty() {
                self.qos.remove(&key);
                if netns.is_none() {
                    self.links.remove(ifb);
                }
                return Ok(());
            }
            return Err(super::errno(format!("shaping link {dev}"), libc::ENODEV));
        };
        if netns.is_none() {
            if spec.egress.is_some() {
                self.links
                    .entry(ifb.to_string())
                    .or_insert_with(|| FakeLink { up: true, ..FakeLink::new("ifb", None, mtu) });
            } else {
                self.links.remove(ifb);
            }
        }
        if spec.is_empty() {
            self.qos.remove(&key);
        } else {
            self.qos.insert(key, FakeQos { ifb: ifb.to_string(), spec: *spec });
        }
        Ok(())
    }

    pub(super) fn qos_status(&self, netns: Option<&str>, dev: &str, ifb: &str) -> DpResult<QosStatus> {
        self.qos_enter(netns)?;
        let key = (netns.unwrap_or_default().to_string(), dev.to_string());
        let spec = self.qos.get(&key).map(|q| q.spec).unwrap_or_default();
        let redirected = spec.egress.is_some() && (netns.is_some() || self.links.contains_key(ifb));
        Ok(QosStatus { egress: redirected.then_some(0), ingress: spec.ingress.map(|_| 0) })
    }
}
