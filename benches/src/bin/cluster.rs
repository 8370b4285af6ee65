//! `cluster`: the cluster client at scale, no datapath. N simulated hosts register with one
//! etcd (each a `Cluster` with its lease, keep-alive and watcher), then M endpoints are published
//! spread over the hosts; it measures how long until every host's view has converged and the
//! etcd traffic per change. As root (etcd runs in a namespace of its own):
//!
//! ```text
//! cargo run --release -p benches --bin cluster -- --quick
//! cargo run --release -p benches --bin cluster -- --hosts 200 --endpoints 20000 --ttl 30
//! ```
//!
//! Figures: host registration time; bulk publish (M endpoints) until all N views hold all M;
//! one connect (an address by compare-and-swap, then the endpoint) until all N watchers saw
//! it; a full re-read (what a host does on resync); address allocation (compare-and-swap)
//! latency under contention;
//! a host's lease expiring until every other host dropped it and its endpoints. Traffic is
//! counted twice: the JSON bodies the clients exchanged (their own counters), and etcd's gRPC
//! bytes from its `/metrics` (the gateway's protobuf side: what a gRPC client would cost).
//!
//! How it grows (the layout in `tools::daemon::cluster`, figures in `benches/README.md`): every
//! host reads and watches one range (endpoints, networks, nodes), so each change is sent N
//! times (about 260 JSON bytes per host per endpoint) and convergence is linear in N × M (about
//! 100,000 deliveries per second on 2 shared CPUs); a resync reads everything (about 250 bytes
//! per endpoint); an automatic address allocation reads the network's pool per attempt and
//! racing allocators serialize on the network's cursor key. From about 100 hosts the lease TTL
//! wants 15 s or more (`--ttl`): a burst of watch traffic delays keep-alives. For thousands of
//! hosts the fan-out is what to change: a watch per network a host has endpoints on, etcd's
//! grpc-proxy to coalesce identical watches, a gRPC client (half the bytes), etcd sharded by
//! network; and address blocks handed to hosts (Calico's IPAM blocks) so allocations stop
//! contending on one key.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::e2e::cleanup::TempDir;
use benches::e2e::netns::{run_prefix, Netns};
use benches::e2e::proc::{find_program, in_netns, Daemon};
use clap::Parser;
use serde_json::json;
use tools::daemon::cluster::{
    Cluster, ClusterConfig, ClusterEvent, Etcd, MacAddr, NetworkSpec, Watcher,
};

/// The client URL etcd serves inside its namespace.
const ETCD_URL: &str = "http://127.0.0.1:2379";
/// How long any convergence may take before the run is declared failed.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);
/// The pause between two looks at the hosts' counters.
const POLL: Duration = Duration::from_millis(2);

/// N simulated hosts and M endpoints against one etcd: convergence time and traffic per change.
#[derive(Parser, Debug)]
#[command(after_help = "Run it as root: cargo run --release -p benches --bin cluster -- --quick")]
struct Args {
    /// Simulated hosts.
    #[arg(long, default_value_t = 200)]
    hosts: usize,
    /// Endpoints published, spread evenly over the hosts.
    #[arg(long, default_value_t = 20_000)]
    endpoints: usize,
    /// Small run: 10 hosts, 500 endpoints, 10 samples (overrides --hosts and --endpoints).
    #[arg(long)]
    quick: bool,
    /// Single-change and allocation samples.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Bulk phase: publish every endpoint in its own transaction (M revisions, as M separate
    /// connects), instead of each host's share in transactions of 100 (as a host's start-up
    /// does with `publish_endpoints`).
    #[arg(long)]
    one_by_one: bool,
    /// Lease TTL of each host, in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u64,
    /// Use this etcd (http://HOST:PORT) instead of starting one in a namespace (no root needed).
    #[arg(long)]
    etcd: Option<String>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.hosts = 10;
        args.endpoints = 500;
        args.samples = 10;
    }
    if args.hosts < 2 || args.endpoints == 0 || args.endpoints > 60_000 {
        eprintln!("cluster: need --hosts >= 2 and 1 <= --endpoints <= 60000");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts etcd when needed, then runs the measurement inside its namespace.
fn run(args: &Args) -> Result<(), Error> {
    if let Some(url) = &args.etcd {
        return measure(args, url);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root to run etcd in a namespace (or give --etcd URL)".into());
    }
    let etcd_bin = find_program("etcd").ok_or("needs etcd (apt-get install etcd-server)")?;
    let name = format!("{}c", run_prefix());
    let ns = Netns::create(&name)?;
    let dir = TempDir::create(std::env::temp_dir().join(format!("{name}-etcd")))?;
    let mut cmd = in_netns(ns.name(), &etcd_bin);
    cmd.arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", ETCD_URL])
        .args(["--advertise-client-urls", ETCD_URL])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .args(["--quota-backend-bytes", "8589934592"]);
    let mut etcd = Daemon::spawn("etcd", cmd, &dir.path().join("etcd.log"))?;
    let ns_file = tools::netns::open_netns(format!("/run/netns/{name}"))?;
    let result = tools::netns::in_netns(&ns_file, || measure(args, ETCD_URL))?;
    if result.is_err() {
        eprintln!("etcd log tail:\n{}", etcd.log_tail());
    }
    etcd.stop()?;
    result
}

/// One simulated host: its cluster connection and what its watcher has seen.
struct Host {
    cluster: Cluster,
    seen: Arc<Seen>,
}

/// Counts of the events one host's watcher delivered.
#[derive(Default)]
struct Seen {
    synced: AtomicU64,
    added: AtomicU64,
    removed: AtomicU64,
    node_down: AtomicU64,
}

/// Reads a watcher's events into counters until `stop` is set.
fn count_events(watcher: Watcher, seen: &Seen, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(event) = watcher.events.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let counter = match event {
            ClusterEvent::Synced { .. } => &seen.synced,
            ClusterEvent::EndpointAdded { .. } => &seen.added,
            ClusterEvent::EndpointRemoved { .. } => &seen.removed,
            ClusterEvent::NodeDown { .. } => &seen.node_down,
            _ => continue,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until `done` holds, failing after [`CONVERGE_TIMEOUT`]; returns the time waited.
fn converge(what: &str, since: Instant, mut done: impl FnMut() -> bool) -> Result<Duration, Error> {
    loop {
        if done() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > CONVERGE_TIMEOUT {
            return Err(format!("{what}: no convergence within {CONVERGE_TIMEOUT:?}").into());
        }
        std::thread::sleep(POLL);
    }
}

/// etcd's gRPC byte counters `(received, sent)` from its `/metrics`.
fn grpc_bytes(url: &str) -> Result<(f64, f64), Error> {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("etcd_network_client_grpc_received_bytes_total "),
        value("etcd_network_client_grpc_sent_bytes_total "),
    ))
}

/// The JSON body bytes all hosts exchanged so far.
fn client_bytes(hosts: &[Host]) -> u64 {
    hosts
        .iter()
        .map(|h| {
            let (sent, received) = h.cluster.etcd().traffic();
            sent + received
        })
        .sum()
}

/// The n-th endpoint's address in 10.100.0.0/16 (skipping the network and gateway addresses).
fn endpoint_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 2)) + n as u32)
}

/// The n-th endpoint's MAC address (locally administered).
fn endpoint_mac(n: usize) -> MacAddr {
    let b = (n as u32).to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

/// A sorted sample's percentile.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The measurement, run where `url` is reachable.
fn measure(args: &Args, url: &str) -> Result<(), Error> {
    let n = args.hosts;
    let m = args.endpoints;
    let endpoints = vec![url.to_string()];
    let probe = Etcd::new(
        &endpoints,
        Duration::from_millis(500),
        Duration::from_secs(5),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe.range("probe").is_err() {
        if Instant::now() > deadline {
            return Err("etcd did not answer within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let prefix = format!("/vswitch-bench-{}/", std::process::id());
    println!("cluster bench: {n} hosts, {m} endpoints, etcd {url}, prefix {prefix}");

    // 1. Registration, 16 hosts at a time.
    let started = Instant::now();
    let mut hosts: Vec<Host> = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let made: Vec<Result<Cluster, Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let endpoints = &endpoints;
                    let prefix = &prefix;
                    scope.spawn(move || {
                        let vtep = SocketAddr::from((
                            Ipv4Addr::new(172, 16, (i / 250) as u8, (i % 250 + 1) as u8),
                            4789,
                        ));
                        let mut config = ClusterConfig::new(endpoints, &format!("h{i}"), vtep);
                        config.prefix = prefix.clone();
                        config.ttl = Duration::from_secs(args.ttl);
                        config.timeout = Duration::from_secs(10);
                        Cluster::connect_with(config).map_err(Error::from)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("host thread panicked".into()))
                })
                .collect()
        });
        for cluster in made {
            hosts.push(Host {
                cluster: cluster?,
                seen: Arc::default(),
            });
        }
    }
    let registration = started.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let mut counters = Vec::new();
    for host in &hosts {
        let watcher = host.cluster.watch()?;
        let seen = Arc::clone(&host.seen);
        let stop = Arc::clone(&stop);
        counters.push(std::thread::spawn(move || {
            count_events(watcher, &seen, &stop)
        }));
    }
    let watch_start = converge("watchers synced", started, || {
        hosts
            .iter()
            .all(|h| h.seen.synced.load(Ordering::Relaxed) >= 1)
    })? - registration;

    let outcome = (|| -> Result<serde_json::Value, Error> {
        let first = &hosts[0].cluster;
        first.create_network(NetworkSpec {
            name: "bench".into(),
            vni: None,
            subnet: "10.100.0.0/16".parse()?,
            gateway: None,
            ip_range: None,
            reserved: vec![],
            options: Default::default(),
        })?;

        // 2. Bulk publish: M endpoints, host i publishing endpoints i, i+N, …, all in parallel.
        let (grpc_rx0, grpc_tx0) = grpc_bytes(url)?;
        let client0 = client_bytes(&hosts);
        let started = Instant::now();
        let one_by_one = args.one_by_one;
        let publish_errors: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .enumerate()
                .map(|(h, host)| {
                    scope.spawn(move || -> Result<(), String> {
                        if !one_by_one {
                            let share: Vec<(String, MacAddr, Ipv4Addr)> = (h..m)
                                .step_by(n)
                                .map(|e| (format!("e{e}"), endpoint_mac(e), endpoint_ip(e)))
                                .collect();
                            return host
                                .cluster
                                .publish_endpoints("bench", &share)
                                .map_err(|err| format!("publish host {h}'s endpoints: {err}"));
                        }
                        for e in (h..m).step_by(n) {
                            host.cluster
                                .publish_endpoint(
                                    "bench",
                                    &format!("e{e}"),
                                    endpoint_mac(e),
                                    endpoint_ip(e),
                                )
                                .map_err(|err| format!("publish e{e}: {err}"))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())).err())
                .collect()
        });
        if let Some(e) = publish_errors.first() {
            return Err(e.clone().into());
        }
        let published = started.elapsed();
        let converged = converge("bulk publish", started, || {
            hosts
                .iter()
                .all(|h| h.seen.added.load(Ordering::Relaxed) >= m as u64)
        })?;
        let (grpc_rx1, grpc_tx1) = grpc_bytes(url)?;
        let client1 = client_bytes(&hosts);
        let grpc_per_change = (grpc_rx1 - grpc_rx0 + grpc_tx1 - grpc_tx0) / m as f64;
        let json_per_change = (client1 - client0) as f64 / m as f64;

        // 3. Single changes: one connect at a time as the daemon makes it (an address taken by
        // compare-and-swap, then the endpoint published), until every host has seen it.
        let mut latencies = Vec::with_capacity(args.samples);
        let client_before = client_bytes(&hosts);
        for s in 0..args.samples {
            let target = (m + s + 1) as u64;
            let e = m + s;
            let started = Instant::now();
            let ip = first.allocate_address("bench", &format!("h0/e{e}"), None)?;
            first.publish_endpoint("bench", &format!("e{e}"), endpoint_mac(e), ip)?;
            latencies.push(converge("single change", started, || {
                hosts
                    .iter()
                    .all(|h| h.seen.added.load(Ordering::Relaxed) >= target)
            })?);
        }
        let connect_bytes =
            (client_bytes(&hosts) - client_before) as f64 / args.samples.max(1) as f64;
        latencies.sort();

        // 4. A full re-read (what one host does on resync).
        let (_, before) = first.etcd().traffic();
        let started = Instant::now();
        let view = first.snapshot()?;
        let resync = started.elapsed();
        let (_, after) = first.etcd().traffic();
        let resync_bytes = after - before;
        let total_endpoints: usize = view.endpoints.values().map(|e| e.len()).sum();
        if total_endpoints != m + args.samples {
            return Err(format!("re-read found {total_endpoints} endpoints").into());
        }

        // 5. Allocation by compare-and-swap, 4 hosts racing on one network.
        first.create_network(NetworkSpec {
            name: "alloc".into(),
            vni: None,
            subnet: "10.101.0.0/16".parse()?,
            gateway: None,
            ip_range: None,
            reserved: vec![],
            options: Default::default(),
        })?;
        let racers = 4.min(n);
        let per_racer = args.samples.max(1);
        let started = Instant::now();
        let mut alloc: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts[..racers]
                .iter()
                .enumerate()
                .map(|(r, host)| {
                    scope.spawn(move || -> Result<Vec<Duration>, String> {
                        (0..per_racer)
                            .map(|i| {
                                let t = Instant::now();
                                host.cluster
                                    .allocate_address("alloc", &format!("r{r}-{i}"), None)
                                    .map_err(|e| e.to_string())?;
                                Ok(t.elapsed())
                            })
                            .collect()
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.join().unwrap_or_else(|_| Err("panicked".into()))?);
            }
            Ok::<_, String>(all)
        })?;
        let alloc_total = started.elapsed();
        alloc.sort();

        // 6. A host dies: its lease expires, every other host drops it and its endpoints.
        let dead = n - 1;
        let dead_share = (dead..m).step_by(n).count() as u64;
        let removed0: Vec<u64> = hosts
            .iter()
            .map(|h| h.seen.removed.load(Ordering::Relaxed))
            .collect();
        hosts[dead].cluster.halt_keepalive();
        let started = Instant::now();
        let expiry = converge("lease expiry", started, || {
            hosts[..dead].iter().zip(&removed0).all(|(h, r0)| {
                h.seen.node_down.load(Ordering::Relaxed) >= 1
                    && h.seen.removed.load(Ordering::Relaxed) - r0 >= dead_share
            })
        })?;

        Ok(json!({
            "hosts": n,
            "endpoints": m,
            "ttl_s": args.ttl,
            "bulk_mode": if args.one_by_one { "one_by_one" } else { "batched" },
            "registration_ms": ms(registration),
            "watchers_synced_ms": ms(watch_start),
            "bulk_publish_ms": ms(published),
            "bulk_converged_ms": ms(converged),
            "bulk_changes_per_s": m as f64 / converged.as_secs_f64(),
            "grpc_bytes_per_change": grpc_per_change,
            "json_bytes_per_change": json_per_change,
            "json_bytes_per_change_per_host": json_per_change / n as f64,
            "connect_json_bytes": connect_bytes,
            "connect_json_bytes_per_host": connect_bytes / n as f64,
            "single_change_p50_ms": ms(pct(&latencies, 0.5)),
            "single_change_max_ms": ms(pct(&latencies, 1.0)),
            "resync_ms": ms(resync),
            "resync_bytes": resync_bytes,
            "alloc_racers": racers,
            "alloc_p50_ms": ms(pct(&alloc, 0.5)),
            "alloc_max_ms": ms(pct(&alloc, 1.0)),
            "alloc_per_s": alloc.len() as f64 / alloc_total.as_secs_f64(),
            "lease_expiry_converged_ms": ms(expiry),
        }))
    })();

    stop.store(true, Ordering::Relaxed);
    for c in counters {
        let _ = c.join();
    }
    // Leave cleanly: every lease revoked, then the bench's keys removed.
    let cleaner = Etcd::new(&endpoints, Duration::from_secs(30), Duration::from_secs(5))?;
    drop(hosts);
    cleaner.delete_prefix(&prefix)?;

    let figures = outcome?;
    print_report(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}

/// Prints the figures, one per line.
fn print_report(f: &serde_json::Value) {
    let get = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "registration of {} hosts          {:>10.1} ms",
        f["hosts"],
        get("registration_ms")
    );
    println!(
        "all watchers synced                {:>10.1} ms",
        get("watchers_synced_ms")
    );
    println!(
        "bulk ({}): {} endpoints published {:>10.1} ms, every view converged after {:.1} ms ({:.0} changes/s)",
        f["bulk_mode"].as_str().unwrap_or("?"),
        f["endpoints"],
        get("bulk_publish_ms"),
        get("bulk_converged_ms"),
        get("bulk_changes_per_s")
    );
    println!(
        "traffic per change                 {:>10.0} B JSON bodies ({:.0} B per host), {:.0} B etcd gRPC",
        get("json_bytes_per_change"),
        get("json_bytes_per_change_per_host"),
        get("grpc_bytes_per_change")
    );
    println!(
        "one connect seen by every host     {:>10.1} ms p50, {:.1} ms max, {:.0} B JSON ({:.0} B per host)",
        get("single_change_p50_ms"),
        get("single_change_max_ms"),
        get("connect_json_bytes"),
        get("connect_json_bytes_per_host")
    );
    println!(
        "full re-read (resync) of one host  {:>10.1} ms, {:.0} B",
        get("resync_ms"),
        get("resync_bytes")
    );
    println!(
        "CAS allocation, {} racing hosts     {:>10.1} ms p50, {:.1} ms max, {:.0}/s",
        f["alloc_racers"],
        get("alloc_p50_ms"),
        get("alloc_max_ms"),
        get("alloc_per_s")
    );
    println!(
        "dead host dropped by all (TTL {} s) {:>10.1} ms after its keep-alive stopped",
        f["ttl_s"],
        get("lease_expiry_converged_ms")
    );
}
