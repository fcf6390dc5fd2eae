//! Who may use the API: its socket is root's and `--socket-group`'s, mode
//! 0660, and the kernel refuses everyone else — shown with real
//! unprivileged users.

use cnet_testkit::World;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

const GROUP: &str = "cnet-api-test";
const MEMBER: &str = "cnet-member";
const OUTSIDER: &str = "cnet-outsider";

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().expect(args[0])
}

/// The test's group and users (kept on the machine: creating them is
/// idempotent), made once for both tests; the group's ID.
fn users() -> u32 {
    static MADE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MADE.get_or_init(make_users)
}

fn make_users() -> u32 {
    if !run(&["getent", "group", GROUP]).status.success() {
        assert!(run(&["groupadd", "--system", GROUP]).status.success());
    }
    for (user, groups) in [(MEMBER, GROUP), (OUTSIDER, "")] {
        if !run(&["id", user]).status.success() {
            let mut args = vec!["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"];
            if !groups.is_empty() {
                args.extend(["--groups", groups]);
            }
            args.push(user);
            assert!(run(&args).status.success(), "useradd {user}");
        }
    }
    let line = String::from_utf8(run(&["getent", "group", GROUP]).stdout).unwrap();
    line.split(':').nth(2).unwrap().parse().unwrap()
}

/// `cnet network list` as `user` (with the groups the user is in).
fn list_as(w: &World, cli: &str, user: &str) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--init-groups", "--inh-caps=-all", cli, "network", "list"])
        .env("CNET_SOCKET", &w.socket)
        .output()
        .expect("setpriv")
}

/// A world whose directory others may enter, so only the socket's own mode decides.
fn world(args: &[&str]) -> (World, String) {
    let mut w = World::bare();
    w.daemon_args = args.iter().map(Into::into).collect();
    w.start_daemon();
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = w.dir.path().join("cnet");
    std::fs::copy(cnet_testkit::bin("cnet"), &cli).unwrap();
    (w, cli.to_string_lossy().into_owned())
}

#[test]
fn the_socket_is_roots_and_its_groups_and_the_kernel_refuses_anyone_else() {
    cnet_testkit::require_root!();
    let gid = users();
    let (w, cli) = world(&["--socket-group", GROUP]);
    let meta = std::fs::metadata(&w.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, gid));

    let member = list_as(&w, &cli, MEMBER);
    assert!(member.status.success(), "a member of the group: {}", String::from_utf8_lossy(&member.stderr));
    let outsider = list_as(&w, &cli, OUTSIDER);
    assert!(!outsider.status.success());
    let err = String::from_utf8_lossy(&outsider.stderr);
    assert!(err.contains("Permission denied") || err.contains("permission denied"), "refused by the kernel: {err}");
}

#[test]
fn without_a_group_only_root_may_connect_and_an_unknown_group_stops_the_start() {
    cnet_testkit::require_root!();
    users();
    let (w, cli) = world(&[]);
    let meta = std::fs::metadata(&w.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid(), meta.gid()), (0o660, 0, 0));
    assert!(!list_as(&w, &cli, MEMBER).status.success(), "the group is not root's");

    // In a world's host namespace, as every cnetd of the tests.
    let bad = World::bare();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", bad.host_path()))
        .arg(cnet_testkit::bin("cnetd"))
        .args(["--socket", bad.socket.to_str().unwrap(), "--state-dir", bad.state_dir.to_str().unwrap()])
        .args(["--socket-group", "no-such-group-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("group \"no-such-group-here\" does not exist: create it"), "{err}");
}

/// A set of `/proc/<pid>/task/<tid>/status` (`CapEff`, `CapBnd`, ...) as a mask.
fn caps_of(status: &str, set: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(&format!("{set}:"))).expect(set);
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn every_thread_of_the_daemon_keeps_only_the_documented_capabilities() {
    cnet_testkit::require_root!();
    let w = World::new();
    // Some work first, so that its threads exist.
    let net =
        serde_json::json!({"Name": "n", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.128.0.0/24"}]}]});
    w.client().post::<serde_json::Value>("/networks", &net).expect("network");
    let pid = w.daemon_pid().unwrap();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|t| t.unwrap().path()).collect();
    assert!(tasks.len() > 1, "cnetd has threads");
    let kept = cnetd::privilege::kept_mask();
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(caps_of(&status, set), kept, "{set} of {}", task.display());
        }
        assert_eq!(caps_of(&status, "CapInh"), 0);
        assert_eq!(caps_of(&status, "CapAmb"), 0);
    }
}
