//! The store under damage: a truncated or overwritten store file stops
//! cnetd's start with a message that says what to do, and is left as it
//! was (never reset); a full disk (the state directory on a tiny tmpfs)
//! answers `InsufficientStorage` (507) and changes nothing, cnetd keeps
//! answering, and once there is room again every acknowledged object is
//! there.

mod common;
use common::*;
use serde_json::json;
use std::process::Command;

/// Starts cnetd on `w`'s socket and state in its host namespace and waits
/// for it to exit (it must: the store is damaged).
fn start_fails(w: &World) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .arg("nsenter")
        .arg(format!("--net={}", w.host_path()))
        .arg(cnet_testkit::bin("cnetd"))
        .args(["--socket", w.socket.to_str().unwrap(), "--state-dir", w.state_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success() && out.status.code() != Some(124), "cnetd must refuse to start: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_damaged_store_stops_the_start_with_what_to_do_and_is_never_reset() {
    cnet_testkit::require_root!();
    let mut w = World::new();
    network(&w, "kept", "NAT", &["10.142.0.0/24"]);
    w.stop_daemon();
    let file = w.state_dir.join("cnet.redb");
    let whole = std::fs::read(&file).unwrap();
    for (what, damaged) in [("cut in half", whole[..whole.len() / 2].to_vec()), ("emptied", vec![])] {
        std::fs::write(&file, &damaged).unwrap();
        let err = start_fails(&w);
        assert!(err.contains("is damaged") && err.contains("never resets it"), "{what}: {err}");
        assert!(err.contains("Restore the file from a backup"), "{what}: says what to do: {err}");
        assert_eq!(std::fs::read(&file).unwrap(), damaged, "{what}: the file is left as it was");
    }
    // The whole file back: everything is there.
    std::fs::write(&file, &whole).unwrap();
    w.start_daemon();
    let nets: Vec<cnet_model::Network> = w.client().get("/networks").unwrap();
    assert!(nets.iter().any(|n| n.name.as_str() == "kept"));
}

/// A tmpfs of `size` on `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` up to the last byte.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let _ = Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", filler.display())).args(["bs=4k"]).output();
    filler
}

#[test]
fn a_full_disk_answers_insufficient_storage_changes_nothing_and_loses_nothing() {
    cnet_testkit::require_root!();
    let mut w = World::bare();
    let _fs = Tmpfs::mount(&w.state_dir, "8m");
    w.start_daemon();
    let net = network(&w, "full", "NAT", &["10.143.0.0/24"]);
    let kept = container(&w, &net, "kept", json!([port_map(6, 8081, 80)]));
    let filler = fill(&w.state_dir);

    // The store file has room of its own: changes go on until it is used up.
    // From then on, until there is room again, they are refused as such.
    let mut made = 0;
    let mut refused = 0;
    for i in 0..3000 {
        let ns = w.client().post::<serde_json::Value>("/namespaces", &json!({"Name": w.name(&format!("f{i}"))}));
        match ns {
            Ok(_) if refused == 0 => made += 1,
            Ok(_) => panic!("a change went through after one was refused for a full disk"),
            Err(e) => {
                assert_eq!(e.code(), Some(cnet_model::ErrorCode::InsufficientStorage), "{e}");
                assert!(e.to_string().contains("free space"), "says what to do: {e}");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused, 5, "a full disk refuses changes ({made} were made first)");
    let made_names: Vec<String> = (0..made).map(|i| w.name(&format!("f{i}"))).collect();
    let eps: Vec<serde_json::Value> = w.client().get("/endpoints").expect("reads still answer");
    assert_eq!(eps.len(), 1);

    // Room again: changes work without a restart, and after one nothing is lost.
    std::fs::remove_file(filler).unwrap();
    let later = container(&w, &net, "later", json!([]));
    w.kill_daemon();
    w.start_daemon();
    for c in [&kept, &later] {
        let ep: serde_json::Value = w.client().get(&format!("/endpoints/{}", c.ep.id)).expect("kept");
        assert_eq!(ep["HostComputeNamespace"], c.ns.id.to_string());
    }
    let names: Vec<serde_json::Value> = w.client().get("/namespaces").unwrap();
    assert_eq!(names.len(), 2 + made, "the made namespaces are kept, the refused ones were not made");
    let leftover: Vec<String> = std::fs::read_dir(cnet_dataplane::netns::NETNS_DIR)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&w.name("f")) && !made_names.contains(n))
        .collect();
    assert!(leftover.is_empty(), "a refused namespace left its file: {leftover:?}");
    assert!(w.drift().is_empty(), "{:?}", w.drift());
}
