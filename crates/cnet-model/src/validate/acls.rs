//! Checks of an endpoint's `ACL` policies.

use crate::endpoint::{acls_in, EndpointPolicy};
use crate::error::{ApiError, Result};
use crate::{Network, NetworkType};

/// At most this many ACL policies on one endpoint.
pub const MAX_ACLS: usize = 1000;

/// The flag DisableICC needs a network whose traffic passes the host's switch.
pub fn check_disable_icc(flags: u32, net: &Network) -> Result<()> {
    if flags & crate::endpoint::DISABLE_ICC != 0 && net.r#type == NetworkType::Transparent {
        return Err(ApiError::unsupported(format!(
            "the endpoint flag DisableInterComputeCommunication (2) is not supported on Transparent networks in this build ({} is one)",
            net.name
        )));
    }
    Ok(())
}

/// Each `ACL` policy is a rule the kernel can match, and the network's
/// traffic passes the host's switch, where cnet enforces them.
pub fn check_acls(policies: &[EndpointPolicy], net: &Network) -> Result<()> {
    let mut n = 0;
    for acl in acls_in(policies) {
        acl.rule().map_err(ApiError::invalid_param)?;
        n += 1;
    }
    if n > MAX_ACLS {
        return Err(ApiError::invalid_param(format!(
            "an endpoint takes at most {MAX_ACLS} ACL policies, this one has {n}: merge rules with address and port lists"
        )));
    }
    if n > 0 && net.r#type == NetworkType::Transparent {
        return Err(ApiError::unsupported(format!(
            "ACL policies are not supported on Transparent networks in this build ({} is one): its endpoints' traffic never passes the host",
            net.name
        )));
    }
    Ok(())
}
