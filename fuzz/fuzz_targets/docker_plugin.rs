//! Docker's network and IPAM plugin calls (`/NetworkDriver.*`,
//! `/IpamDriver.*`), against a real service on the fake data plane: a
//! sequence of calls with any bodies never panics, and every answer is
//! Docker's shape (200 with a JSON object, or 404 for a call cnet does not
//! implement). An input is one call per line: its first byte picks the
//! method, the rest is the body. The service lives across inputs (a
//! plugin is stateful), and starts again empty when it holds 200 objects.
#![no_main]

use std::sync::{Arc, Mutex};

use cnetd::dataplane::fake::FakeDataplane;
use cnetd::docker::Plugin;
use cnetd::driver::Registry;
use cnetd::service::{Capabilities, Service};
use cnetd::state::State;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 19] = [
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.DiscoverNew",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
    "NetworkDriver.AllocateNetwork",
];

struct Bed {
    _dir: tempfile::TempDir,
    svc: Arc<Service>,
    plugin: Arc<Plugin>,
}

fn bed() -> Bed {
    // tmpfs when there is one: every change is a store commit.
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("a temporary directory");
    let fake = Arc::new(FakeDataplane::new());
    fake.add_netns(cnetd::driver::bridge::OWN_NETNS);
    let store = cnet_store::Store::open(&dir.path().join("cnet.redb")).expect("a new store");
    let state = State::open(store).expect("an empty store loads");
    let svc = Arc::new(Service::new(state, fake, Registry::builtin(), Capabilities::all()));
    let plugin = Plugin::new(svc.clone());
    Bed { _dir: dir, svc, plugin }
}

static BED: Mutex<Option<Bed>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = BED.lock().unwrap_or_else(|e| e.into_inner());
    let full = guard.as_ref().is_some_and(|b| {
        let o = b.svc.state.read();
        o.networks.len() + o.endpoints.len() + o.namespaces.len() > 200
    });
    if guard.is_none() || full {
        *guard = Some(bed());
    }
    let b = guard.as_ref().expect("just made");
    for line in data.split(|c| *c == b'\n').take(16) {
        let Some((&pick, body)) = line.split_first() else { continue };
        let method = METHODS[usize::from(pick) % METHODS.len()];
        let (status, answer) = b.plugin.call(method, body);
        match status.as_u16() {
            200 => assert!(answer.is_object(), "{method} answered {answer}"),
            404 => assert!(answer.get("Err").is_some(), "{method} answered {answer}"),
            s => panic!("{method} answered {s}: {answer}"),
        }
    }
});
