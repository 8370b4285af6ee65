//! The cost of saving one `network connect` (an endpoint, its port, one IPAM allocation) with
//! 100, 1,000 and 10,000 endpoints already stored: the redb store against today's JSON state
//! file (the whole state cloned, serialized, written, fsynced and renamed), in the same run.
//!
//! `cargo bench -p benches --bench store`. The files go to `VSWITCH_BENCH_DIR` (default: the
//! temp dir); both sides fsync, so the figures depend on that disk. At the end a summary line
//! gives each side's cost at 10,000 over its cost at 100 (the store's target: at most 1.5).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ipam::{DefaultIpam, IpamDriver, PoolId, PoolRequest};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tools::daemon::state::StateDir;
use tools::daemon::store::{Store, Table};
use tools::daemon::SwitchState;

/// Endpoints already stored before the measured connects.
const SIZES: [usize; 3] = [100, 1_000, 10_000];

/// Seconds and connects timed, by (backend, size), over warm-up and samples.
type Totals = BTreeMap<(&'static str, usize), (f64, u64)>;
static TOTALS: Mutex<Totals> = Mutex::new(BTreeMap::new());

fn bench_dir(tag: &str) -> PathBuf {
    let base = std::env::var_os("VSWITCH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vst-bench-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The records one connect of endpoint `i` adds, in the daemon's shapes (see the fixture
/// `tools/src/daemon/store/testdata/switch-v0.json`).
fn endpoint(i: usize, ip: std::net::Ipv4Addr) -> (Value, Value) {
    let id = format!("{:064x}", (i as u128) * 0x9e37_79b9_7f4a_7c15);
    let host_if = format!("vse{:011x}", i);
    let endpoint = json!({
        "id": id, "network": "front", "sandbox": format!("sb{i}"), "interface": "eth0",
        "host_interface": host_if, "mac": format!("02:42:0a:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff),
        "ip": ip, "prefix_len": 16, "default_route": true,
    });
    let port = json!({
        "name": host_if, "network": "front", "type": "system", "vlan": null, "trunks": null,
        "owner": "endpoint",
    });
    (endpoint, port)
}

fn sandbox(i: usize) -> Value {
    json!({"name": format!("sb{i}"), "path": format!("/run/netns/sb{i}"), "adopted": false, "bound": false, "host": false})
}

fn network() -> Value {
    json!({"id": format!("{:064x}", 7), "name": "front", "driver": "bridge",
        "spec": {"name": "front", "driver": "bridge", "subnet": "10.0.0.0/16", "gateway": null,
        "ip_range": null, "vni": null, "peers": [], "parent": null, "mtu": null, "internal": false},
        "ipam": {"pool": "10.0.0.0/16", "subnet": "10.0.0.0/16", "gateway": "10.0.0.1"}})
}

/// A /16 pool (room for the 10,000 and the measured connects).
fn new_ipam() -> (DefaultIpam, PoolId) {
    let mut ipam = DefaultIpam::new();
    let pool = ipam
        .request_pool(PoolRequest {
            subnet: Some("10.0.0.0/16".parse().expect("a subnet")),
            ..PoolRequest::default()
        })
        .expect("a pool");
    (ipam, pool)
}

/// Times `iters` connects with `connect(i)` for i from `next`, and adds them to the totals.
fn timed(
    backend: &'static str,
    size: usize,
    next: &mut usize,
    iters: u64,
    mut connect: impl FnMut(usize),
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        connect(*next);
        *next += 1;
    }
    let took = start.elapsed();
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let t = totals.entry((backend, size)).or_default();
    t.0 += took.as_secs_f64();
    t.1 += iters;
    took
}

fn store_connect(c: &mut Criterion) {
    let mut g = c.benchmark_group("connect_save");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for size in SIZES {
        // The store: N endpoints, ports, sandboxes and allocations, written in one transaction.
        let dir = bench_dir("redb");
        let mut store = Store::open(&dir).expect("open the store");
        let (mut ipam, pool) = new_ipam();
        ipam.track_changes();
        store
            .write(|tx| {
                tx.put(Table::Networks, "front", &network())?;
                for i in 0..size {
                    let ip = ipam
                        .request_address(&pool, &format!("sb{i}"), None)
                        .expect("an address");
                    let (ep, port) = endpoint(i, ip);
                    tx.put(Table::Endpoints, ep["id"].as_str().unwrap_or(""), &ep)?;
                    tx.put(Table::Ports, port["name"].as_str().unwrap_or(""), &port)?;
                    tx.put(Table::Sandboxes, &format!("sb{i}"), &sandbox(i))?;
                }
                tx.apply_ipam(&ipam.take_changes())
            })
            .expect("fill the store");
        let mut next = size;
        g.bench_function(format!("redb/{size}"), |b| {
            b.iter_custom(|iters| {
                timed("redb", size, &mut next, iters, |i| {
                    let ip = ipam
                        .request_address(&pool, &format!("sb{i}"), None)
                        .expect("an address");
                    let (ep, port) = endpoint(i, ip);
                    let changes = ipam.take_changes();
                    store
                        .write(|tx| {
                            tx.put(Table::Endpoints, ep["id"].as_str().unwrap_or(""), &ep)?;
                            tx.put(Table::Ports, port["name"].as_str().unwrap_or(""), &port)?;
                            tx.apply_ipam(&changes)
                        })
                        .expect("save a connect");
                })
            })
        });
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);

        // Today: the whole state in one JSON file, cloned and saved on every change.
        let dir = bench_dir("json");
        let files = StateDir::open(&dir).expect("open the state dir");
        let (ipam, pool) = new_ipam();
        let mut doc = json!({"networks": [network()], "ports": [], "sandboxes": [], "endpoints": [], "ipam": ipam});
        let mut state: SwitchState = serde_json::from_value(doc.take()).expect("a state");
        for i in 0..size {
            let ip = state
                .ipam
                .request_address(&pool, &format!("sb{i}"), None)
                .expect("an address");
            let (ep, port) = endpoint(i, ip);
            state
                .endpoints
                .push(serde_json::from_value(ep).expect("an endpoint"));
            state
                .ports
                .push(serde_json::from_value(port).expect("a port"));
            state
                .sandboxes
                .push(serde_json::from_value(sandbox(i)).expect("a sandbox"));
        }
        files.save("switch.json", &state).expect("save");
        let mut next = size;
        g.bench_function(format!("json/{size}"), |b| {
            b.iter_custom(|iters| {
                timed("json", size, &mut next, iters, |i| {
                    let ip = state
                        .ipam
                        .request_address(&pool, &format!("sb{i}"), None)
                        .expect("an address");
                    let (ep, port) = endpoint(i, ip);
                    state
                        .endpoints
                        .push(serde_json::from_value(ep).expect("an endpoint"));
                    state
                        .ports
                        .push(serde_json::from_value(port).expect("a port"));
                    // As `Daemon::save` does: a fresh SwitchState of everything, then the file.
                    let snapshot = state.clone();
                    files
                        .save("switch.json", &snapshot)
                        .expect("save a connect");
                })
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

/// Prints each side's cost at every size and the 10,000 / 100 ratio.
fn summary(_: &mut Criterion) {
    let totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let means: BTreeMap<_, f64> = totals
        .iter()
        .map(|(k, (secs, n))| (*k, secs / (*n).max(1) as f64))
        .collect();
    for backend in ["redb", "json"] {
        let row: Vec<String> = SIZES
            .iter()
            .filter_map(|n| {
                means
                    .get(&(backend, *n))
                    .map(|s| format!("{n}: {:.2} ms", s * 1e3))
            })
            .collect();
        let ratio = match (means.get(&(backend, 10_000)), means.get(&(backend, 100))) {
            (Some(big), Some(small)) => format!("{:.2}", big / small),
            _ => "n/a".into(),
        };
        println!(
            "connect save, {backend}: {} (10,000 / 100 = {ratio})",
            row.join(", ")
        );
    }
}

criterion_group!(benches, store_connect, summary);
criterion_main!(benches);
