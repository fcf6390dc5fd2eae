//! `cnet`: every cnetd API call from the command line. See `cnet --help`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use cnet::policies::{self, AclCmd, SetCmd};
use cnet::views::{cluster_text, endpoints_table, namespaces_table, networks_table};
use cnet::{ports, views};
use cnet_client::{escape, Client, DEFAULT_SOCKET};
use cnet_model::{Endpoint, EndpointPolicy, Namespace, Network};

#[derive(Parser)]
#[command(version, about = "Manage cnet networks, endpoints and namespaces through cnetd")]
struct Cli {
    /// cnetd's API socket.
    #[arg(long, global = true, env = "CNET_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Networks: the virtual switches.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Endpoints: the containers' network adapters.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Namespaces: the compartments endpoints attach to.
    #[command(subcommand)]
    Namespace(NamespaceCmd),
    /// Compare the store with the kernel; exits 1 when they differ, or when
    /// another table's base chain with `policy drop` would drop cnet's traffic.
    Diag,
    /// This host's cluster (cnetd --etcd): health, hosts, leases, blocks.
    Cluster,
    /// The names a network's DNS server answers, with their addresses.
    Dns { network: String },
    /// cnetd's API version and capabilities.
    Version,
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network from flags or from a HostComputeNetwork JSON file.
    Create {
        name: Option<String>,
        /// NAT, Internal, Private, Transparent, L2Bridge, L2Tunnel or Overlay.
        #[arg(long = "type", default_value = "NAT")]
        ty: String,
        /// The host interface a Transparent, L2Bridge or L2Tunnel network is on.
        #[arg(long)]
        uplink: Option<String>,
        /// Lease endpoint addresses from the LAN's DHCP server (Transparent).
        #[arg(long, conflicts_with = "gateway")]
        dhcp: bool,
        /// Put the subnets' endpoints on this VLAN (Transparent).
        #[arg(long)]
        vlan: Option<u32>,
        /// The VXLAN VNI of an Overlay network (its subnets' VSID).
        #[arg(long)]
        vsid: Option<u32>,
        /// Hand out addresses only from this block of the subnet of its
        /// family (repeatable), e.g. 192.168.1.64/26 of a LAN's /24.
        #[arg(long)]
        ip_range: Vec<String>,
        /// A subnet (repeat for dual stack), e.g. 10.79.0.0/24.
        #[arg(long)]
        subnet: Vec<String>,
        /// The gateway of the subnet of the same family (default: its first address).
        #[arg(long)]
        gateway: Vec<IpAddr>,
        #[arg(long)]
        mtu: Option<u32>,
        /// DNS servers handed to endpoints.
        #[arg(long)]
        dns_server: Vec<IpAddr>,
        /// A HostComputeNetwork JSON document (`-` for stdin) instead of flags.
        #[arg(long, short = 'f', conflicts_with_all = ["subnet", "gateway"])]
        file: Option<PathBuf>,
    },
    List {
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "type")]
        ty: Option<String>,
    },
    Show {
        network: String,
    },
    Delete {
        networks: Vec<String>,
    },
    /// Add a subnet to a network.
    AddSubnet {
        network: String,
        subnet: String,
    },
    /// Remove an unused subnet from a network.
    RemoveSubnet {
        network: String,
        subnet: String,
    },
    /// Add or remove the ACL rules of every endpoint of a network (NetworkACL).
    #[command(subcommand)]
    Acl(AclCmd),
    /// Add, change or remove a network's IP sets (SetPolicy).
    #[command(subcommand)]
    Set(SetCmd),
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Create an endpoint (and attach it at once with --namespace).
    Create {
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// A static address (one per family); allocated when absent.
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[arg(long)]
        mac: Option<String>,
        /// Publish a port: [VIP:]HOSTPORT[-END]:PORT[/tcp|udp|sctp].
        #[arg(long, short = 'p')]
        publish: Vec<String>,
        /// Attach to this namespace (ID or name) in the same call.
        #[arg(long)]
        namespace: Option<String>,
        /// The interface name inside the namespace (default eth0).
        #[arg(long)]
        interface_name: Option<String>,
        #[arg(long)]
        mtu: Option<u32>,
        /// Make it an access port of this VLAN (Transparent networks).
        #[arg(long)]
        vlan: Option<u32>,
        /// A HostComputeEndpoint JSON document (`-` for stdin) instead of flags.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    List {
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
    },
    /// The endpoint as JSON, with its traffic statistics (`Statistics`) when attached.
    Show {
        endpoint: String,
    },
    /// An endpoint's traffic statistics: bytes, packets, drops by reason.
    Stats {
        endpoint: String,
    },
    Delete {
        endpoints: Vec<String>,
    },
    /// Publish more ports on an endpoint.
    Publish {
        endpoint: String,
        specs: Vec<String>,
    },
    /// Stop publishing ports.
    Unpublish {
        endpoint: String,
        specs: Vec<String>,
    },
    /// Add or remove an endpoint's ACL rules (see docs/policies.md).
    #[command(subcommand)]
    Acl(AclCmd),
}

#[derive(Subcommand)]
enum NamespaceCmd {
    /// Create a named network namespace, or adopt one with --netns-path;
    /// with --guest, a VM's (its endpoints are TAPs its VMM opens).
    Create {
        name: Option<String>,
        #[arg(long)]
        netns_path: Option<String>,
        /// A VM: no network namespace; its endpoints are VM NICs.
        #[arg(long)]
        guest: bool,
        /// The uid that may open the VM's TAPs (the VMM's user).
        #[arg(long, requires = "guest")]
        vm_owner: Option<u32>,
        /// The gid that may open the VM's TAPs.
        #[arg(long, requires = "guest")]
        vm_group: Option<u32>,
        /// Multi-queue TAPs (the VMM opens one queue per vCPU).
        #[arg(long, requires = "guest")]
        multi_queue: bool,
    },
    List,
    Show {
        namespace: String,
    },
    Delete {
        namespaces: Vec<String>,
    },
    /// Attach an endpoint to a namespace.
    Attach {
        namespace: String,
        endpoint: String,
    },
    /// Detach an endpoint from a namespace.
    Detach {
        namespace: String,
        endpoint: String,
    },
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

fn show<T: serde::Serialize>(out: Output, v: &T, table: impl FnOnce(&T) -> String) {
    match out {
        Output::Json => print_json(v),
        Output::Table => print!("{}", table(v)),
    }
}

fn policy_request(request_type: &str, specs: &[String]) -> Result<Value> {
    let policies: Vec<EndpointPolicy> = specs
        .iter()
        .map(|s| ports::parse_publish(s).map(EndpointPolicy::PortMapping))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    Ok(json!({"ResourceType": "Policy", "RequestType": request_type, "Settings": {"Policies": policies}}))
}

fn network_policy(c: &Client, out: Output, (network, body): (String, Value)) -> Result<()> {
    let net: Network = c.patch(&format!("/networks/{}", escape(&network)), &body)?;
    show(out, &net, |n| networks_table(std::slice::from_ref(n)));
    Ok(())
}

fn subnet_change(c: &Client, out: Output, rt: &str, network: &str, subnet: &str) -> Result<()> {
    let body = json!({"ResourceType": "Subnet", "RequestType": rt, "Settings": {"IpAddressPrefix": subnet}});
    let net: Network = c.patch(&format!("/networks/{}", escape(network)), &body)?;
    show(out, &net, |n| networks_table(std::slice::from_ref(n)));
    Ok(())
}

fn membership(c: &Client, out: Output, rt: &str, namespace: &str, endpoint: &str) -> Result<()> {
    let body = json!({"ResourceType": "Endpoint", "RequestType": rt, "Settings": {"EndpointId": endpoint}});
    let ns: Namespace = c.patch(&format!("/namespaces/{}", escape(namespace)), &body)?;
    show(out, &ns, |n| namespaces_table(std::slice::from_ref(n)));
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let c = Client::new(&cli.socket);
    let out = cli.output;
    match cli.cmd {
        Cmd::Version => {
            let v: Value = c.get("/globals/version")?;
            let caps: Value = c.get("/capabilities")?;
            print_json(&json!({"Version": v, "Capabilities": caps}));
        }
        Cmd::Cluster => {
            let st: cnet_model::cluster::ClusterStatus = c.get("/cluster")?;
            show(out, &st, cluster_text);
        }
        Cmd::Dns { network } => {
            let names: Vec<cnet_model::DnsName> = c.get(&format!("/networks/{}/names", escape(&network)))?;
            show(out, &names, |n| views::dns_table(n));
        }
        Cmd::Diag => {
            let r: Value = c.get("/diag")?;
            let drift = r["Drift"].as_array().cloned().unwrap_or_default();
            let warnings = r["Warnings"].as_array().cloned().unwrap_or_default();
            if out == Output::Json {
                print_json(&r);
            } else {
                for w in &warnings {
                    println!("warning: {}", w["Message"].as_str().unwrap_or_default());
                }
                for d in &drift {
                    println!("drift: {}", d["Message"].as_str().unwrap_or_default());
                }
                if drift.is_empty() {
                    println!("no drift: the kernel matches the store");
                }
            }
            // A foreign `policy drop` chain drops cnet's traffic: as bad as drift.
            let foreign_drop = warnings.iter().any(|w| w["Kind"] == "ForeignDrop");
            if !drift.is_empty() || foreign_drop {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Network(cmd) => match cmd {
            NetworkCmd::Create {
                name,
                ty,
                uplink,
                dhcp,
                vlan,
                vsid,
                ip_range,
                subnet,
                gateway,
                mtu,
                dns_server,
                file,
            } => {
                let mut body = match file {
                    Some(f) => read_json(&f)?,
                    None => {
                        let subnets: Vec<Value> = subnet
                            .iter()
                            .map(|s| {
                                let v6 = s.contains(':');
                                let routes: Vec<Value> = gateway
                                    .iter()
                                    .filter(|g| g.is_ipv6() == v6)
                                    .map(|g| json!({"NextHop": g, "DestinationPrefix": if v6 { "::/0" } else { "0.0.0.0/0" }}))
                                    .collect();
                                let mut sub = json!({"IpAddressPrefix": s, "Routes": routes});
                                let blocks: Vec<Value> = ip_range
                                    .iter()
                                    .filter(|r| r.contains(':') == v6)
                                    .map(|r| json!({"IpAddressPrefix": r}))
                                    .collect();
                                if !blocks.is_empty() {
                                    sub["IpSubnets"] = json!(blocks);
                                }
                                let mut policies = Vec::new();
                                if let Some(id) = vlan {
                                    policies.push(json!({"Type": "VLAN", "Settings": {"IsolationId": id}}));
                                }
                                if let Some(id) = vsid {
                                    policies.push(json!({"Type": "VSID", "Settings": {"IsolationId": id}}));
                                }
                                if !policies.is_empty() {
                                    sub["Policies"] = json!(policies);
                                }
                                sub
                            })
                            .collect();
                        let ipam = if dhcp { "Dhcp" } else { "Static" };
                        let mut b = json!({"Type": ty, "Ipams": [{"Type": ipam, "Subnets": subnets}]});
                        if let Some(u) = uplink {
                            b["Policies"] = json!([{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": u}}]);
                        }
                        if let Some(m) = mtu {
                            b["Mtu"] = json!(m);
                        }
                        if !dns_server.is_empty() {
                            b["Dns"] = json!({"ServerList": dns_server});
                        }
                        b
                    }
                };
                if let Some(n) = name {
                    body["Name"] = json!(n);
                }
                let net: Network = c.post("/networks", &body)?;
                show(out, &net, |n| networks_table(std::slice::from_ref(n)));
            }
            NetworkCmd::List { name, ty } => {
                let mut q = Vec::new();
                if let Some(n) = name {
                    q.push(format!("name={}", escape(&n)));
                }
                if let Some(t) = ty {
                    q.push(format!("type={}", escape(&t)));
                }
                let nets: Vec<Network> = c.get(&format!("/networks?{}", q.join("&")))?;
                show(out, &nets, |n| networks_table(n));
            }
            NetworkCmd::Show { network } => {
                let net: Network = c.get(&format!("/networks/{}", escape(&network)))?;
                print_json(&net);
            }
            NetworkCmd::Delete { networks } => {
                for n in networks {
                    c.delete(&format!("/networks/{}", escape(&n)))?;
                }
            }
            NetworkCmd::AddSubnet { network, subnet } => subnet_change(&c, out, "Add", &network, &subnet)?,
            NetworkCmd::RemoveSubnet { network, subnet } => subnet_change(&c, out, "Remove", &network, &subnet)?,
            NetworkCmd::Acl(cmd) => network_policy(&c, out, policies::acl_request("NetworkACL", cmd))?,
            NetworkCmd::Set(cmd) => network_policy(&c, out, policies::set_request(cmd))?,
        },
        Cmd::Endpoint(cmd) => match cmd {
            EndpointCmd::Create { network, name, ip, mac, publish, namespace, interface_name, mtu, vlan, file } => {
                let mut body = match file {
                    Some(f) => read_json(&f)?,
                    None => json!({}),
                };
                if let Some(n) = network {
                    body["HostComputeNetwork"] = json!(n);
                }
                if body.get("HostComputeNetwork").is_none() {
                    anyhow::bail!("name the network with --network (or HostComputeNetwork in the file)");
                }
                if let Some(n) = name {
                    body["Name"] = json!(n);
                }
                if !ip.is_empty() {
                    body["IpConfigurations"] = json!(ip.iter().map(|i| json!({"IpAddress": i})).collect::<Vec<_>>());
                }
                if let Some(m) = mac {
                    body["MacAddress"] = json!(m);
                }
                if let Some(ns) = namespace {
                    body["HostComputeNamespace"] = json!(ns);
                }
                if let Some(i) = interface_name {
                    body["InterfaceName"] = json!(i);
                }
                let mut policies = body.get("Policies").and_then(|p| p.as_array()).cloned().unwrap_or_default();
                for p in &publish {
                    let m = ports::parse_publish(p).map_err(anyhow::Error::msg)?;
                    policies.push(serde_json::to_value(EndpointPolicy::PortMapping(m))?);
                }
                if let Some(m) = mtu {
                    policies.push(json!({"Type": "InterfaceParameters", "Settings": {"Mtu": m}}));
                }
                if let Some(id) = vlan {
                    policies.push(json!({"Type": "VLAN", "Settings": {"IsolationId": id}}));
                }
                if !policies.is_empty() {
                    body["Policies"] = json!(policies);
                }
                let ep: Endpoint = c.post("/endpoints", &body)?;
                show(out, &ep, |e| endpoints_table(std::slice::from_ref(e)));
            }
            EndpointCmd::List { network, namespace } => {
                let mut q = Vec::new();
                if let Some(n) = network {
                    q.push(format!("network={}", escape(&n)));
                }
                if let Some(n) = namespace {
                    q.push(format!("namespace={}", escape(&n)));
                }
                let eps: Vec<Endpoint> = c.get(&format!("/endpoints?{}", q.join("&")))?;
                show(out, &eps, |e| endpoints_table(e));
            }
            EndpointCmd::Show { endpoint } => {
                let ep: Endpoint = c.get(&format!("/endpoints/{}", escape(&endpoint)))?;
                let mut shown = serde_json::to_value(&ep).expect("serialisable");
                if ep.host_compute_namespace.is_some() || ep.host_interface_name.is_some() {
                    if let Ok(stats) = c.get::<serde_json::Value>(&format!("/endpoints/{}/stats", ep.id)) {
                        shown["Statistics"] = stats;
                    }
                }
                print_json(&shown);
            }
            EndpointCmd::Stats { endpoint } => {
                let st: cnet_model::stats::EndpointStats = c.get(&format!("/endpoints/{}/stats", escape(&endpoint)))?;
                show(out, &st, views::stats_text);
            }
            EndpointCmd::Delete { endpoints } => {
                for e in endpoints {
                    c.delete(&format!("/endpoints/{}", escape(&e)))?;
                }
            }
            EndpointCmd::Publish { endpoint, specs } => {
                let ep: Endpoint =
                    c.patch(&format!("/endpoints/{}", escape(&endpoint)), &policy_request("Add", &specs)?)?;
                show(out, &ep, |e| endpoints_table(std::slice::from_ref(e)));
            }
            EndpointCmd::Unpublish { endpoint, specs } => {
                let ep: Endpoint =
                    c.patch(&format!("/endpoints/{}", escape(&endpoint)), &policy_request("Remove", &specs)?)?;
                show(out, &ep, |e| endpoints_table(std::slice::from_ref(e)));
            }
            EndpointCmd::Acl(cmd) => {
                let (endpoint, body) = policies::acl_request("ACL", cmd);
                let ep: Endpoint = c.patch(&format!("/endpoints/{}", escape(&endpoint)), &body)?;
                show(out, &ep, |e| endpoints_table(std::slice::from_ref(e)));
            }
        },
        Cmd::Namespace(cmd) => match cmd {
            NamespaceCmd::Create { name, netns_path, guest, vm_owner, vm_group, multi_queue } => {
                let mut body = json!({});
                if let Some(n) = name {
                    body["Name"] = json!(n);
                }
                if let Some(p) = netns_path {
                    body["NetnsPath"] = json!(p);
                }
                if guest {
                    body["Type"] = json!("Guest");
                    if vm_owner.is_some() || vm_group.is_some() || multi_queue {
                        body["VmNic"] = json!({"Owner": vm_owner, "Group": vm_group, "MultiQueue": multi_queue});
                    }
                }
                let ns: Namespace = c.post("/namespaces", &body)?;
                show(out, &ns, |n| namespaces_table(std::slice::from_ref(n)));
            }
            NamespaceCmd::List => {
                let nss: Vec<Namespace> = c.get("/namespaces")?;
                show(out, &nss, |n| namespaces_table(n));
            }
            NamespaceCmd::Show { namespace } => {
                let ns: Namespace = c.get(&format!("/namespaces/{}", escape(&namespace)))?;
                print_json(&ns);
            }
            NamespaceCmd::Delete { namespaces } => {
                for n in namespaces {
                    c.delete(&format!("/namespaces/{}", escape(&n)))?;
                }
            }
            NamespaceCmd::Attach { namespace, endpoint } => membership(&c, out, "Add", &namespace, &endpoint)?,
            NamespaceCmd::Detach { namespace, endpoint } => membership(&c, out, "Remove", &namespace, &endpoint)?,
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cnet: {e:#}");
            ExitCode::from(2)
        }
    }
}
