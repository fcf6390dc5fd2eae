//! The cluster against a real etcd (Debian's `etcd-server`), run by each
//! test in a network namespace of its own (loopback only): hosts join under
//! leases, claim blocks concurrently without a double claim, and a host
//! whose lease ends is gone and its blocks reclaimable.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_cluster::{Cluster, Error, Host};
use ipnet::IpNet;
use uuid::Uuid;

/// The etcd process and its data directory (removed after it).
struct Etcd {
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `test` against a fresh etcd on 127.0.0.1:2379 of a new namespace.
fn with_etcd<F: std::future::Future<Output = ()>>(test: impl FnOnce(Vec<String>) -> F + Send + 'static) {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root (a network namespace of its own)");
        return;
    }
    let worker = std::thread::spawn(move || {
        // SAFETY: unshare(2) moves only this thread, which ends with the test.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        assert!(Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap().success());
        let dir = tempfile::tempdir().unwrap();
        let url = "http://127.0.0.1:2379";
        let child = Command::new("etcd")
            .args(["--name", "n1", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args([
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
            ])
            .args(["--initial-cluster", "n1=http://127.0.0.1:2380", "--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server; scripts/install-deps does)");
        let _etcd = Etcd { child, _data: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect("127.0.0.1:2379").is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let rt = match std::env::var_os("CNET_TEST_MT") {
            Some(_) => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap(),
            None => tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        };
        rt.block_on(test(vec![url.to_string()]));
    });
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

fn host(n: u8) -> Host {
    Host {
        id: Uuid::new_v4(),
        hostname: format!("host{n}"),
        provider_address: format!("192.168.77.{n}").parse().unwrap(),
        vtep_mac: format!("02:00:00:00:00:{n:02x}"),
    }
}

/// etcd answers before it has a leader: the first calls may fail.
async fn connect(endpoints: &[String], h: Host) -> Cluster {
    for _ in 0..50 {
        if let Ok(mut c) = Cluster::connect(endpoints, None, h.clone()).await {
            if c.hosts().await.is_ok() {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd did not answer");
}

#[test]
fn hosts_join_once_and_claim_blocks_concurrently_without_a_double_claim() {
    with_etcd(|ep| async move {
        let net = Uuid::new_v4();
        let subnet: IpNet = "10.200.0.0/24".parse().unwrap();
        let mut hosts = Vec::new();
        for n in 1..=3 {
            let mut c = connect(&ep, host(n)).await;
            c.join(10, None).await.unwrap();
            hosts.push(c);
        }
        hosts[0].create_network(net, 4096, &serde_json::json!({"Name": "ov"})).await.unwrap();
        // The same ID again, while the first is alive: refused.
        let mut twin = connect(&ep, hosts[0].host().clone()).await;
        assert!(matches!(twin.join(10, None).await, Err(Error::HostTaken(_))));
        assert_eq!(hosts[0].hosts().await.unwrap().len(), 3);

        // Four /26 blocks, three hosts claiming two each at once: four succeed, two are refused.
        let claims = hosts.iter().flat_map(|c| [c.clone(), c.clone()]).map(|mut c| async move {
            let id = c.host().id;
            (id, c.claim(net, subnet, 26).await)
        });
        let results = futures_join(claims.collect()).await;
        let won: Vec<(Uuid, IpNet)> = results.iter().filter_map(|(id, r)| r.as_ref().ok().map(|b| (*id, *b))).collect();
        assert_eq!(won.len(), 4, "{results:?}");
        assert!(results.iter().filter(|(_, r)| matches!(r, Err(Error::Exhausted(_)))).count() == 2, "{results:?}");
        let mut blocks: Vec<IpNet> = won.iter().map(|(_, b)| *b).collect();
        blocks.sort();
        blocks.dedup();
        assert_eq!(blocks.len(), 4, "no block claimed twice: {won:?}");
        let mut stored = hosts[0].blocks(net).await.unwrap();
        stored.sort();
        let mut want = won.clone();
        want.sort_by_key(|(_, b)| *b);
        assert_eq!(stored, want.iter().map(|(h, b)| (*b, *h)).collect::<Vec<_>>(), "etcd holds what was won");

        // A release by a host that does not hold the block changes nothing.
        let (holder, block) = won[0];
        let other = hosts.iter_mut().find(|c| c.host().id != holder).unwrap();
        assert!(!other.release(net, block).await.unwrap());
        let owner = hosts.iter_mut().find(|c| c.host().id == holder).unwrap();
        assert!(owner.release(net, block).await.unwrap());
        assert_eq!(hosts[0].blocks(net).await.unwrap().len(), 3);
    });
}

#[test]
fn a_host_whose_lease_ends_is_gone_and_only_then_are_its_blocks_reclaimed() {
    with_etcd(|ep| async move {
        let net = Uuid::new_v4();
        let subnet: IpNet = "fd00:200::/64".parse().unwrap();
        let (mut a, mut b) = (connect(&ep, host(1)).await, connect(&ep, host(2)).await);
        a.join(10, None).await.unwrap();
        b.join(2, None).await.unwrap();
        a.create_network(net, 4097, &serde_json::json!({"Name": "ov6"})).await.unwrap();
        let held = b.claim(net, subnet, 122).await.unwrap();
        assert!(a.reclaim(net, b.host().id).await.unwrap().is_empty(), "a live host keeps its blocks");
        assert!(b.keep_alive().await.unwrap() > 0);

        // B stops keeping its lease alive: within its TTL (2 s, plus etcd's
        // lease checks) it is gone from A's view, and A reclaims its block.
        let gone = Instant::now();
        while a.hosts().await.unwrap().iter().any(|h| h.id == b.host().id) {
            assert!(gone.elapsed() < Duration::from_secs(8), "B's registration outlived its lease");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(matches!(b.claim(net, subnet, 122).await, Err(Error::NotJoined)), "an expired host cannot claim");
        assert_eq!(a.reclaim(net, b.host().id).await.unwrap(), vec![held]);
        assert!(a.blocks(net).await.unwrap().is_empty());

        // Joining again after a restart: the old lease is revoked first.
        let old = a.lease();
        let mut again = connect(&ep, a.host().clone()).await;
        again.join(10, old).await.unwrap();
        assert_eq!(again.hosts().await.unwrap().len(), 1);
    });
}

/// Runs futures concurrently on the current thread (no extra crate).
async fn futures_join<T: 'static>(futs: Vec<impl std::future::Future<Output = T> + 'static>) -> Vec<T> {
    let set = tokio::task::LocalSet::new();
    let handles: Vec<_> = futs.into_iter().map(|f| set.spawn_local(f)).collect();
    set.await;
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("a claim task"));
    }
    out
}

#[test]
fn a_view_follows_joins_claims_and_departures_and_reads_again_after_a_compaction() {
    with_etcd(|ep| async move {
        let net = Uuid::new_v4();
        let subnet: IpNet = "10.201.0.0/24".parse().unwrap();
        let mut a = connect(&ep, host(1)).await;
        a.join(10, None).await.unwrap();
        let me = a.host().id;
        let mut view = a.snapshot().await.unwrap();
        assert_eq!(view.hosts.len(), 1);
        let within = Duration::from_secs(5);

        a.create_network(net, 4098, &serde_json::json!({"Name": "ovw"})).await.unwrap();
        let mut b = connect(&ep, host(2)).await;
        b.join(10, None).await.unwrap();
        let block = b.claim(net, subnet, 26).await.unwrap();
        tokio::time::timeout(within, a.follow(&mut view, |v| v.remote_hosts(net, me).is_empty()))
            .await
            .expect("B's block seen within 5 s")
            .unwrap();
        let remote = view.remote_hosts(net, me);
        assert_eq!((remote.len(), &remote[0].host, &remote[0].blocks), (1, b.host(), &vec![block]));

        b.leave().await.unwrap();
        tokio::time::timeout(within, a.follow(&mut view, |v| !v.remote_hosts(net, me).is_empty()))
            .await
            .expect("B's departure seen within 5 s")
            .unwrap();
        assert_eq!(view.departed(net), vec![b.host().id], "out of the data plane, its block reclaimable");

        // A view that missed events whose revisions were compacted away
        // reads everything again and ends up as etcd is.
        let stale = view.clone();
        assert_eq!(a.reclaim(net, b.host().id).await.unwrap(), vec![block]);
        let mut c = connect(&ep, host(3)).await;
        c.join(10, None).await.unwrap();
        c.claim(net, subnet, 26).await.unwrap();
        let now = a.snapshot().await.unwrap();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &ep[0], "compact", &now.revision.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut view = stale;
        let c_id = c.host().id;
        tokio::time::timeout(within, a.follow(&mut view, |v| !v.hosts.contains_key(&c_id)))
            .await
            .expect("converged within 5 s")
            .unwrap();
        assert_eq!((&view.hosts, &view.blocks, &view.networks), (&now.hosts, &now.blocks, &now.networks));
        assert_eq!(view.networks.len(), 1, "the network is in the view");
    });
}

#[test]
fn a_network_has_a_vni_of_its_own_and_goes_only_when_no_host_holds_its_blocks() {
    with_etcd(|ep| async move {
        let (n1, n2) = (Uuid::new_v4(), Uuid::new_v4());
        let subnet: IpNet = "10.202.0.0/24".parse().unwrap();
        let mut a = connect(&ep, host(1)).await;
        a.join(10, None).await.unwrap();
        a.create_network(n1, 5000, &serde_json::json!({"Name": "one"})).await.unwrap();
        assert!(matches!(a.create_network(n1, 5001, &serde_json::json!({})).await, Err(Error::NetworkExists(_))));
        let taken = a.create_network(n2, 5000, &serde_json::json!({})).await.unwrap_err();
        assert!(matches!(&taken, Error::VniTaken { vni: 5000, owner } if *owner == n1.to_string()), "{taken}");
        assert_eq!(a.networks().await.unwrap(), vec![(n1, serde_json::json!({"Name": "one"}))]);

        let block = a.claim(n1, subnet, 26).await.unwrap();
        let err = a.delete_network(n1, 5000).await.unwrap_err();
        assert!(
            err.to_string().contains("still has endpoints") && err.to_string().contains(&a.host().id.to_string()),
            "{err}"
        );
        assert!(a.release(n1, block).await.unwrap());
        assert!(a.delete_network(n1, 5000).await.unwrap());
        assert!(!a.delete_network(n1, 5000).await.unwrap(), "deleting again: nothing there");
        assert!(a.networks().await.unwrap().is_empty());
        assert!(matches!(a.claim(n1, subnet, 26).await, Err(Error::NoSuchNetwork(_))), "no block outlives its network");
        a.create_network(n2, 5000, &serde_json::json!({})).await.unwrap();
    });
}

#[test]
fn a_host_that_keeps_its_lease_alive_stays_registered_long_past_its_ttl() {
    with_etcd(|ep| async move {
        let mut a = connect(&ep, host(1)).await;
        a.join(2, None).await.unwrap();
        let mut watcher = connect(&ep, host(2)).await;
        let start = Instant::now();
        let every =
            Duration::from_millis(std::env::var("CNET_TEST_EVERY").ok().and_then(|v| v.parse().ok()).unwrap_or(600));
        while start.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(every).await;
            let t = Instant::now();
            let ttl = a.keep_alive().await.unwrap();
            assert!(ttl > 0, "the lease ended after {:?}", start.elapsed());
            assert!(t.elapsed() < Duration::from_secs(1), "a keep-alive took {:?}", t.elapsed());
            assert_eq!(watcher.hosts().await.unwrap().len(), 1, "still registered after {:?}", start.elapsed());
        }
    });
}
