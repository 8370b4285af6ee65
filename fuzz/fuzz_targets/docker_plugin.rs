//! Any bytes as a sequence of Docker plugin calls (libnetwork's remote network and IPAM driver
//! protocol) on one in-memory backend: each call is answered with JSON, never a panic, and a
//! refused call leaves the backend as it was.
//!
//! Input: calls separated by `0xff`; each call's first byte picks the call, the rest is its body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tools::daemon::docker::{self, memory::MemoryBackend};

/// The calls Docker makes, and one it does not.
const CALLS: [&str; 23] = [
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.AllocateNetwork",
    "NetworkDriver.FreeNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.DiscoverNew",
    "NetworkDriver.DiscoverDelete",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
    "NetworkDriver.Nope",
    "",
];

fuzz_target!(|data: &[u8]| {
    let backend = MemoryBackend::new();
    for call in data.split(|b| *b == 0xff).take(16) {
        let Some((&pick, body)) = call.split_first() else {
            continue;
        };
        let name = CALLS[usize::from(pick) % CALLS.len()];
        let before = backend.snapshot();
        let reply = docker::handle(&backend, name, body);
        assert!(reply.body.is_object(), "{name}: the answer is not a JSON object");
        if reply.status != 200 {
            assert!(reply.body["Err"].is_string(), "{name}: a refusal without Err");
            assert_eq!(backend.snapshot(), before, "{name}: a refused call changed the state");
        }
    }
});
