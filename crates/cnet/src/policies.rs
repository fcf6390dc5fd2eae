//! The firewall subcommands: `cnet endpoint acl`, `cnet network acl`
//! (NetworkACL) and `cnet network set` (SetPolicy), each turned into one
//! modify request (`ResourceType: Policy`) on its endpoint or network.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// The fields of one ACL rule.
#[derive(Args)]
pub struct RuleArgs {
    /// A name for the rule, to remove it by.
    #[arg(long)]
    pub id: Option<String>,
    /// Allow, Block or Pass.
    #[arg(long)]
    pub action: String,
    /// In (to the endpoint) or Out (from it).
    #[arg(long)]
    pub direction: String,
    /// IANA protocol numbers, comma separated (6 TCP, 17 UDP, 1 ICMP); any when absent.
    #[arg(long, default_value = "")]
    pub protocols: String,
    /// Addresses, prefixes or IP set Ids of the endpoint's side.
    #[arg(long, default_value = "")]
    pub local_addresses: String,
    /// Addresses, prefixes or IP set Ids of the peer.
    #[arg(long, default_value = "")]
    pub remote_addresses: String,
    /// Ports and ranges of the endpoint's side: 80,8000-8080.
    #[arg(long, default_value = "")]
    pub local_ports: String,
    #[arg(long, default_value = "")]
    pub remote_ports: String,
    /// Lower goes first.
    #[arg(long, default_value_t = 0)]
    pub priority: u16,
}

impl RuleArgs {
    /// The rule's `Settings`.
    pub fn settings(&self) -> Value {
        let mut s = json!({"Action": self.action, "Direction": self.direction, "Protocols": self.protocols,
            "LocalAddresses": self.local_addresses, "RemoteAddresses": self.remote_addresses,
            "LocalPorts": self.local_ports, "RemotePorts": self.remote_ports, "Priority": self.priority});
        if let Some(id) = &self.id {
            s["Id"] = json!(id);
        }
        s
    }
}

/// `acl add|remove` of an endpoint (ACL) or a network (NetworkACL).
#[derive(Subcommand)]
pub enum AclCmd {
    /// Add a rule; it applies at once, open connections stay.
    Add {
        /// The endpoint or network (ID or name).
        of: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Remove the rule with this ID.
    Remove {
        /// The endpoint or network (ID or name).
        of: String,
        #[arg(long)]
        id: String,
    },
}

/// A set's ID and members.
#[derive(Args)]
pub struct SetArgs {
    pub network: String,
    pub id: String,
    /// Addresses and prefixes, or with --nested the IDs of other sets.
    pub values: Vec<String>,
    /// A NESTEDIPSET: the union of the sets named in VALUES.
    #[arg(long)]
    pub nested: bool,
    #[arg(long)]
    pub name: Option<String>,
}

/// `set add|update|remove` of a network (SetPolicy).
#[derive(Subcommand)]
pub enum SetCmd {
    /// Add an IP set that ACLs name by its ID.
    Add(SetArgs),
    /// Replace a set's members (no rule changes).
    Update(SetArgs),
    /// Remove a set no rule names any more.
    Remove { network: String, id: String },
}

fn modify(kind: &str, policy: Value) -> Value {
    json!({"ResourceType": "Policy", "RequestType": kind, "Settings": {"Policies": [policy]}})
}

/// The object and the modify request of an `acl` command; `ty` is `ACL` or `NetworkACL`.
pub fn acl_request(ty: &str, cmd: AclCmd) -> (String, Value) {
    match cmd {
        AclCmd::Add { of, rule } => (of, modify("Add", json!({"Type": ty, "Settings": rule.settings()}))),
        // Rules are named by their ID; the other fields only need to parse.
        AclCmd::Remove { of, id } => {
            let settings = json!({"Id": id, "Action": "Block", "Direction": "In"});
            (of, modify("Remove", json!({"Type": ty, "Settings": settings})))
        }
    }
}

/// The network and the modify request of a `set` command.
pub fn set_request(cmd: SetCmd) -> (String, Value) {
    let set = |id: String, values: Vec<String>, nested: bool, name: Option<String>| {
        let ty = if nested { "NESTEDIPSET" } else { "IPSET" };
        json!({"Type": "SetPolicy", "Settings": {"Id": id, "Name": name.unwrap_or_default(), "PolicyType": ty,
            "Values": values.join(",")}})
    };
    let (kind, a) = match cmd {
        SetCmd::Add(a) => ("Add", a),
        SetCmd::Update(a) => ("Update", a),
        // Named by its ID; the type only needs to parse.
        SetCmd::Remove { network, id } => return (network, modify("Remove", set(id, vec![], false, None))),
    };
    (a.network, modify(kind, set(a.id, a.values, a.nested, a.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        set: SetCmd,
    }

    #[test]
    fn a_set_command_is_one_policy_modify_request() {
        let t = T::parse_from(["t", "update", "web", "peers", "10.0.0.1", "10.1.0.0/16"]);
        let (net, body) = set_request(t.set);
        assert_eq!(net, "web");
        assert_eq!(body["RequestType"], "Update");
        assert_eq!(body["Settings"]["Policies"][0]["Settings"]["Values"], "10.0.0.1,10.1.0.0/16");
        assert_eq!(body["Settings"]["Policies"][0]["Settings"]["PolicyType"], "IPSET");
    }
}
