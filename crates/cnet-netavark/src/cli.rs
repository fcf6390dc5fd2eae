//! netavark's command line, read leniently: global flags before the
//! command (`--config DIR`, `--rootless=BOOL`, `--aardvark-binary PATH`,
//! `-f FILE`, and the flags later netavark releases added), then `setup
//! NETNS`, `teardown NETNS`, `version` or `update NAME …`. Flags cnet has
//! no use for are accepted and ignored.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Setup(String),
    Teardown(String),
    Version,
    /// `--version` / `-V`: one line.
    VersionLine,
    Update(String),
    Help,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `-f FILE`: the options from a file instead of stdin.
    pub file: Option<String>,
    pub rootless: bool,
}

/// Global flags that take a value.
const VALUED: [&str; 10] = [
    "--config",
    "-c",
    "--aardvark-binary",
    "-a",
    "--file",
    "-f",
    "--firewall-driver",
    "--plugin-directory",
    "--rootless",
    "-r",
];

pub fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut file = None;
    let mut rootless = false;
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (a, None),
        };
        if flag == "--version" || flag == "-V" {
            return Ok(Invocation { command: Command::VersionLine, file, rootless });
        }
        if flag == "--help" || flag == "-h" {
            return Ok(Invocation { command: Command::Help, file, rootless });
        }
        if flag.starts_with('-') && rest.is_empty() {
            // `--rootless` alone means true; a value may follow it.
            let takes_value = VALUED.contains(&flag);
            let value = match (inline, takes_value) {
                (Some(v), _) => Some(v),
                (None, true) if flag == "--rootless" || flag == "-r" => match args.get(i + 1).map(String::as_str) {
                    Some("true") | Some("false") => {
                        i += 1;
                        Some(args[i].clone())
                    }
                    _ => Some("true".into()),
                },
                (None, true) => {
                    i += 1;
                    Some(args.get(i).cloned().ok_or_else(|| format!("{flag} needs a value"))?)
                }
                (None, false) => None,
            };
            match flag {
                "--file" | "-f" => file = value,
                "--rootless" | "-r" => rootless = value.as_deref() == Some("true"),
                _ => {}
            }
        } else {
            rest.push(a.to_string());
        }
        i += 1;
    }
    let arg = |n: usize, what: &str| rest.get(n).cloned().ok_or_else(|| format!("{} needs {what}", rest[0]));
    let command = match rest.first().map(String::as_str) {
        Some("setup") => Command::Setup(arg(1, "the network namespace path")?),
        Some("teardown") => Command::Teardown(arg(1, "the network namespace path")?),
        Some("version") => Command::Version,
        Some("update") => Command::Update(arg(1, "a network name")?),
        Some(other) => {
            return Err(format!("command {other:?} is not supported by cnet-netavark: use setup, teardown or version"))
        }
        None => Command::Help,
    };
    Ok(Invocation { command, file, rootless })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &str) -> Result<Invocation, String> {
        parse(&args.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn podman_43s_command_lines_are_read() {
        let inv = p("--config /run/containers/networks --rootless=false --aardvark-binary=/usr/lib/podman/aardvark-dns setup /run/netns/netns-1").unwrap();
        assert_eq!(inv.command, Command::Setup("/run/netns/netns-1".into()));
        assert!(!inv.rootless);
        let inv = p("--config /x --rootless true -f opts.json teardown /run/netns/n").unwrap();
        assert_eq!(
            (inv.command, inv.rootless, inv.file.as_deref()),
            (Command::Teardown("/run/netns/n".into()), true, Some("opts.json"))
        );
    }

    #[test]
    fn later_flags_and_commands_are_accepted_or_named() {
        assert_eq!(p("--firewall-driver nftables --plugin-directory /p version").unwrap().command, Command::Version);
        assert_eq!(p("--version").unwrap().command, Command::VersionLine);
        assert_eq!(
            p("--config /x update net1 --network-dns-servers 1.1.1.1").unwrap().command,
            Command::Update("net1".into())
        );
        assert!(p("dhcp-proxy").unwrap_err().contains("setup, teardown or version"));
        assert!(p("setup").unwrap_err().contains("namespace path"));
    }
}
