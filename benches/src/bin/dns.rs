//! `dns`: vswitchd's embedded DNS server against dnsmasq. As root:
//!
//! ```text
//! cargo run --release -p benches --bin dns [-- --names 1000 --targets 10 --clients 4 --seconds 6 --rounds 6]
//! ```
//!
//! Two namespaces of the run (`vsb<pid>-dns-…`): `d`, where a real `vswitchd` runs (started with
//! `--dns-upstream 10.253.0.2`, so forwarded queries leave from there), and `u`, joined to `d` by
//! a veth pair, where a dnsmasq answers the forwarded names from a hosts file (TTL 600 s). Through
//! `vswitchctl`, a network `bench` gets `--targets` sandboxes carrying the `--names` local names
//! as `--alias`es, and a client sandbox `c`, which vswitchd serves at 127.0.0.11:53 and where a
//! second dnsmasq answers the same local names (same addresses) from a hosts file at
//! 127.0.0.53:53, and forwards the other names to vswitchd (so both cache the same upstream
//! answers). Clients (closed loop, one query in flight per client thread) run in `c` (or `d`
//! for the direct upstream reference) and ask random names after a warm-up.
//!
//! Fairness: both servers get the same client code, query mix, concurrency and warm-up, in one
//! run; the measurement is split into `--rounds` rounds and the two servers of a pair alternate
//! (vswitchd first in even rounds, dnsmasq first in odd ones), so a change of the machine's load
//! hits both. Per scenario: answered queries per second, p50/p99/max latency, lost queries (no
//! answer within a second), wrong ones, and the answering thread's CPU time per query (from its
//! `schedstat`, read when the measured time starts and ends); per pair: vswitchd's ratio to
//! dnsmasq, over all rounds and as the median of the rounds' ratios (robust to a burst of load
//! in one round).

use benches::e2e::bins::vswitch_bins;
use benches::e2e::cleanup::TempDir;
use benches::e2e::netns::{join, remove_stale, run_prefix, spawn_in, Netns};
use benches::e2e::proc::{find_program, in_netns, run as run_cmd, wait_until, Daemon};
use benches::e2e::switches::{vswitchctl, VswitchBins, VswitchSandbox};
use benches::e2e::{check_interrupt, install_signal_handlers, Error, IoContext, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The command this bench is documented to be run with.
const COMMAND: &str = "cargo run --release -p benches --bin dns";

/// vswitchd's DNS server (local and forwarded names) against dnsmasq answering the same names
/// from a hosts file: queries per second and latency percentiles. Needs root and dnsmasq.
#[derive(Parser, Debug)]
#[command(after_help = format!("Run it as root from the workspace: {COMMAND}"))]
struct Args {
    /// How many local names (and as many forwarded names).
    #[arg(long, default_value_t = 1000)]
    names: usize,
    /// Sandboxes carrying the local names (as aliases, spread evenly).
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// Client threads, each with one query in flight.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Measured seconds per scenario, over all rounds (each measurement after a warm-up of a
    /// quarter of its time).
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
    /// Rounds: the scenarios of a pair alternate in each (more rounds, less drift).
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The vswitchd binary [default: next to this binary, else target/release/vswitchd, built
    /// first under `cargo run`].
    #[arg(long, value_name = "PATH")]
    vswitchd: Option<PathBuf>,
    /// The vswitchctl binary [default: next to vswitchd].
    #[arg(long, value_name = "PATH")]
    vswitchctl: Option<PathBuf>,
    /// Do not run `cargo build --release -p tools` first.
    #[arg(long)]
    no_build: bool,
}

/// One scenario's figures.
struct Figures {
    name: &'static str,
    answered: u64,
    lost: u64,
    wrong: u64,
    seconds: f64,
    latency: Histogram<u64>,
    /// Queries per second in each round.
    round_rates: Vec<f64>,
    /// CPU time the serving thread used while measured (from its schedstat), if readable.
    server_cpu: Option<Duration>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "dns: needs root: it creates network namespaces. Run it as root: sudo -E {COMMAND}"
        );
        return ExitCode::from(2);
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("dnsmasq", "dnsmasq"),
        ("nsenter", "util-linux"),
    ] {
        if find_program(tool).is_none() {
            eprintln!("dns: `{tool}` is not installed (apt-get install {package})");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = install_signal_handlers() {
        eprintln!("dns: {e}");
        return ExitCode::FAILURE;
    }
    for r in remove_stale() {
        eprintln!("dns: removed {r}, left by an earlier run that was killed");
    }
    let bins = match vswitch_bins(
        args.vswitchd.as_deref(),
        args.vswitchctl.as_deref(),
        args.no_build,
        "dns",
    ) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dns: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&args, &bins) {
        Ok(figures) => {
            print!("{}", table(&args, &figures));
            if let Some(path) = &args.json {
                let text =
                    serde_json::to_string_pretty(&to_json(&args, &figures)).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("dns: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dns: {e}");
            ExitCode::FAILURE
        }
    }
}

fn local_name(i: usize) -> String {
    format!("svc{i}")
}

fn forwarded_name(i: usize) -> String {
    format!("fwd{i}.bench.test")
}

fn forwarded_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 60, (i / 250) as u8, (i % 250) as u8 + 2)
}

/// The address vswitchd gave the target sandbox carrying local name `i`.
fn local_addr(targets: &[Ipv4Addr], i: usize) -> Ipv4Addr {
    targets[i % targets.len()]
}

fn run(args: &Args, bins: &VswitchBins) -> Result<Vec<Figures>> {
    if args.names == 0 || args.names > 60_000 || args.clients == 0 {
        return Err(Error::Unexpected(
            "--names must be 1..=60000 and --clients at least 1".into(),
        ));
    }
    if args.targets == 0 || args.targets > 200 {
        return Err(Error::Unexpected("--targets must be 1..=200".into()));
    }
    let prefix = format!("{}-dns", run_prefix());
    // Dropped in reverse: sandboxes (through vswitchd), vswitchd, dnsmasqs, namespaces, dir.
    let tmp = TempDir::create(std::env::temp_dir().join(&prefix))?;
    let d = Netns::create(&format!("{prefix}-d"))?;
    let u = Netns::create(&format!("{prefix}-u"))?;
    run_cmd(Command::new("ip").args([
        "-n",
        d.name(),
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        u.name(),
    ]))?;
    for (ns, dev, addr) in [
        (d.name(), "up0", "10.253.0.1/24"),
        (u.name(), "eth0", "10.253.0.2/24"),
    ] {
        run_cmd(Command::new("ip").args(["-n", ns, "addr", "add", addr, "dev", dev]))?;
        run_cmd(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
    }
    run_cmd(Command::new("ip").args(["-n", d.name(), "link", "set", "lo", "up"]))?;

    let dnsmasq =
        |ns: &str, hosts: &str, listen: &str, tag: &str, extra: &[&str]| -> Result<Daemon> {
            let file = tmp.path().join(format!("{tag}.hosts"));
            std::fs::write(&file, hosts).context(|| format!("writing {}", file.display()))?;
            let mut cmd = in_netns(ns, "dnsmasq");
            cmd.args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port",
                "53",
            ])
            .arg(format!("--addn-hosts={}", file.display()))
            .arg(format!("--listen-address={listen}"))
            .arg(format!(
                "--pid-file={}",
                tmp.path().join(format!("{tag}.pid")).display()
            ))
            .arg("--cache-size=10000")
            .args(extra);
            Daemon::spawn(tag, cmd, &tmp.path().join(format!("{tag}.log")))
        };
    let mut upstream_hosts = String::new();
    for i in 0..args.names {
        let _ = writeln!(
            upstream_hosts,
            "{} {}",
            forwarded_addr(i),
            forwarded_name(i)
        );
    }
    // A TTL both caches can keep for the whole run.
    let upstream_dnsmasq = dnsmasq(
        u.name(),
        &upstream_hosts,
        "10.253.0.2",
        "dnsmasq-upstream",
        &["--local-ttl=600"],
    )?;

    // The real vswitchd in d, forwarding to the upstream dnsmasq.
    let socket = tmp.path().join("vswitchd.sock");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", d.name()))
        .arg("--")
        .arg(&bins.vswitchd)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--dns-upstream", "10.253.0.2", "--docker-plugin", "none"])
        .args(["--log-level", "warn"])
        .env_remove("VSWITCH_SOCKET")
        .env_remove("VSWITCH_STATE_DIR")
        .env("NO_COLOR", "1");
    let mut daemon = Daemon::spawn("vswitchd", cmd, &tmp.path().join("vswitchd.log"))?;
    wait_until("vswitchd's API socket", Duration::from_secs(10), || {
        daemon.check_running()?;
        Ok(UnixStream::connect(&socket).is_ok())
    })?;
    let ctl = |a: &[&str]| vswitchctl(bins, &socket, a);
    ctl(&["network", "create", "bench", "--subnet", "10.50.0.0/16"])?;

    // The target sandboxes, each carrying its share of the local names as aliases.
    let mut sandboxes = Vec::new();
    let mut targets = Vec::new();
    for t in 0..args.targets {
        let name = format!("{prefix}-t{t}");
        sandboxes.push(VswitchSandbox::guard(&name, bins, &socket));
        ctl(&["sandbox", "create", &name])?;
        let aliases: Vec<String> = (t..args.names)
            .step_by(args.targets)
            .map(local_name)
            .collect();
        let mut a = vec!["--json", "network", "connect", "bench", name.as_str()];
        for alias in &aliases {
            a.extend(["--alias", alias.as_str()]);
        }
        let out: Value = serde_json::from_str(&ctl(&a)?)
            .map_err(|e| Error::Unexpected(format!("network connect printed bad JSON: {e}")))?;
        let ip = out["ipv4"]
            .as_str()
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| Error::Unexpected(format!("network connect gave no ipv4: {out}")))?;
        targets.push(ip);
    }
    let client = format!("{prefix}-c");
    sandboxes.push(VswitchSandbox::guard(&client, bins, &socket));
    ctl(&["sandbox", "create", &client])?;
    ctl(&["network", "connect", "bench", &client])?;
    let mut local_hosts = String::new();
    for i in 0..args.names {
        let _ = writeln!(local_hosts, "{} {}", local_addr(&targets, i), local_name(i));
    }
    // The other names go to vswitchd, as from any program in the sandbox; dnsmasq caches them.
    let local_dnsmasq = dnsmasq(
        &client,
        &local_hosts,
        "127.0.0.53",
        "dnsmasq-local",
        &["--server=127.0.0.11"],
    )?;

    let vswitch: SocketAddr = "127.0.0.11:53".parse().unwrap_or_else(|_| unreachable!());
    let local: SocketAddr = "127.0.0.53:53".parse().unwrap_or_else(|_| unreachable!());
    let upstream: SocketAddr = "10.253.0.2:53".parse().unwrap_or_else(|_| unreachable!());
    for (what, ns, target, name) in [
        ("vswitchd DNS", client.as_str(), vswitch, local_name(0)),
        ("dnsmasq local", client.as_str(), local, local_name(0)),
        ("dnsmasq upstream", d.name(), upstream, forwarded_name(0)),
        (
            "vswitchd DNS forwarding",
            client.as_str(),
            vswitch,
            forwarded_name(0),
        ),
        (
            "dnsmasq forwarding",
            client.as_str(),
            local,
            forwarded_name(1),
        ),
    ] {
        let ns = ns.to_string();
        wait_until(
            &format!("{what} to answer"),
            Duration::from_secs(10),
            || {
                let ns = ns.clone();
                let name = name.clone();
                join(spawn_in(&ns, "dns-probe", move || {
                    Ok(ask_once(target, &name, Duration::from_millis(200)).is_some())
                })?)
            },
        )?;
    }

    // The threads that answer: vswitchd's DNS thread, and each (single-threaded) dnsmasq.
    let vswitchd_dns =
        dns_thread(daemon.pid()).map(|tid| format!("/proc/{}/task/{tid}/schedstat", daemon.pid()));
    let schedstat = |pid: u32| Some(format!("/proc/{pid}/task/{pid}/schedstat"));
    let (local_cpu, upstream_cpu) = (
        schedstat(local_dnsmasq.pid()),
        schedstat(upstream_dnsmasq.pid()),
    );

    // Pairs first (vswitchd, then dnsmasq), the reference last.
    let scenarios: [(&'static str, &str, SocketAddr, bool, &Option<String>); 5] = [
        (
            "local names: vswitchd",
            client.as_str(),
            vswitch,
            true,
            &vswitchd_dns,
        ),
        (
            "local names: dnsmasq (hosts file)",
            client.as_str(),
            local,
            true,
            &local_cpu,
        ),
        (
            "forwarded names, cached: vswitchd",
            client.as_str(),
            vswitch,
            false,
            &vswitchd_dns,
        ),
        (
            "forwarded names, cached: dnsmasq",
            client.as_str(),
            local,
            false,
            &local_cpu,
        ),
        (
            "forwarded names: dnsmasq upstream directly (reference)",
            d.name(),
            upstream,
            false,
            &upstream_cpu,
        ),
    ];
    let rounds = args.rounds.max(1);
    let per_round = args.seconds / rounds as f64;
    let mut figures: Vec<Option<Figures>> = scenarios.iter().map(|_| None).collect();
    for round in 0..rounds {
        // ABBA: each pair's order flips every round.
        let mut order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1, 2, 3]
        } else {
            vec![1, 0, 3, 2]
        };
        order.push(4);
        for i in order {
            check_interrupt()?;
            let (name, ns, target, local_names, cpu) = scenarios[i];
            let got = measure(
                args,
                per_round,
                &targets,
                (name, ns, target, local_names),
                cpu.as_deref(),
            )?;
            match &mut figures[i] {
                Some(f) => f.add(got)?,
                slot => *slot = Some(got),
            }
        }
    }
    let figures: Vec<Figures> = figures.into_iter().flatten().collect();
    if let Ok(stats) = ctl(&["dns", "stats"]) {
        eprintln!("dns: vswitchctl dns stats:\n{stats}");
    }
    daemon.check_running()?;
    Ok(figures)
}

/// A query for `name` (A) with id `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    if let Ok(name) = Name::from_str(name) {
        msg.add_query(Query::query(name, RecordType::A));
    }
    msg.to_vec().unwrap_or_default()
}

/// One query and its answer (from the calling thread's namespace).
fn ask_once(target: SocketAddr, name: &str, timeout: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    socket.send_to(&query(name, 1), target).ok()?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// The id of vswitchd's DNS thread (named `dns`).
fn dns_thread(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "dns")
        })
        .and_then(|task| task.file_name().to_str()?.parse().ok())
}

/// The CPU time a thread has used so far: the first field of its `schedstat` (ns on a CPU,
/// the softirq work its sends trigger included).
fn cpu_time(schedstat: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(schedstat).ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `args.clients` closed-loop clients in `ns` against `target` (scenario `name`, asking
/// local or forwarded names) for the warm-up and the measured time; reads the serving
/// thread's CPU time (`schedstat`, a path) when the measured time starts and ends.
fn measure(
    args: &Args,
    seconds: f64,
    targets: &[Ipv4Addr],
    (name, ns, target, local_names): (&'static str, &str, SocketAddr, bool),
    schedstat: Option<&str>,
) -> Result<Figures> {
    let warmup = Duration::from_secs_f64(seconds / 4.0);
    let measured = Duration::from_secs_f64(seconds);
    let start = Instant::now() + Duration::from_millis(50);
    let (measure_from, end) = (start + warmup, start + warmup + measured);
    let names = args.names;
    let handles = (0..args.clients)
        .map(|c| {
            let targets = targets.to_vec();
            spawn_in(ns, "dns-client", move || {
                let queries: Vec<(Vec<u8>, [u8; 4])> = (0..names)
                    .map(|i| {
                        let (n, a) = if local_names {
                            (local_name(i), local_addr(&targets, i))
                        } else {
                            (forwarded_name(i), forwarded_addr(i))
                        };
                        (query(&n, 0), a.octets())
                    })
                    .collect();
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .context(|| "client socket".to_string())?;
                socket
                    .connect(target)
                    .context(|| format!("connect to {target}"))?;
                socket
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .context(|| "timeout".to_string())?;
                let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)
                    .map_err(|e| Error::Unexpected(e.to_string()))?;
                let (mut answered, mut lost, mut wrong) = (0u64, 0u64, 0u64);
                let mut buf = [0u8; 1500];
                let mut q = Vec::with_capacity(64);
                let mut id: u16 = (c as u16).wrapping_mul(7919);
                let mut pick: usize = c * 104_729;
                while Instant::now() < start {
                    std::hint::spin_loop();
                }
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    pick = pick
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let (template, want) = &queries[(pick >> 17) % queries.len()];
                    id = id.wrapping_add(1);
                    q.clear();
                    q.extend_from_slice(template);
                    q[..2].copy_from_slice(&id.to_be_bytes());
                    let sent = Instant::now();
                    if socket.send(&q).is_err() {
                        lost += 1;
                        continue;
                    }
                    let ok = loop {
                        match socket.recv(&mut buf) {
                            // A late answer to an earlier, timed-out query: skip it.
                            Ok(n) if n >= 2 && buf[..2] != id.to_be_bytes() => continue,
                            Ok(n) => break Some(buf[..n].ends_with(want)),
                            Err(_) => break None,
                        }
                    };
                    if sent < measure_from {
                        continue;
                    }
                    match ok {
                        Some(true) => {
                            answered += 1;
                            let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                        }
                        Some(false) => wrong += 1,
                        None => lost += 1,
                    }
                }
                Ok((answered, lost, wrong, hist))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The serving thread's CPU time over the measured window (read by this thread, which
    // otherwise only waits for the clients).
    let cpu_at = |at: Instant| {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        schedstat.and_then(cpu_time)
    };
    let cpu_from = cpu_at(measure_from);
    let cpu_to = cpu_at(end);
    let mut figures = Figures {
        name,
        answered: 0,
        lost: 0,
        wrong: 0,
        seconds: measured.as_secs_f64(),
        latency: Histogram::new_with_bounds(1, 10_000_000, 3)
            .map_err(|e| Error::Unexpected(e.to_string()))?,
        round_rates: Vec::new(),
        server_cpu: cpu_from.zip(cpu_to).map(|(a, b)| b.saturating_sub(a)),
    };
    for handle in handles {
        let (answered, lost, wrong, hist) = join(handle)?;
        figures.answered += answered;
        figures.lost += lost;
        figures.wrong += wrong;
        figures
            .latency
            .add(&hist)
            .map_err(|e| Error::Unexpected(e.to_string()))?;
    }
    figures.round_rates.push(figures.rate());
    Ok(figures)
}

impl Figures {
    /// Adds another round's figures of the same scenario.
    fn add(&mut self, other: Figures) -> Result<()> {
        self.answered += other.answered;
        self.lost += other.lost;
        self.wrong += other.wrong;
        self.seconds += other.seconds;
        self.round_rates.extend(other.round_rates);
        self.server_cpu = self.server_cpu.zip(other.server_cpu).map(|(a, b)| a + b);
        self.latency
            .add(&other.latency)
            .map_err(|e| Error::Unexpected(e.to_string()))
    }

    fn rate(&self) -> f64 {
        self.answered as f64 / self.seconds
    }

    /// The serving thread's CPU time per answered query, in microseconds.
    fn cpu_per_query(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.answered > 0).then(|| cpu.as_secs_f64() * 1e6 / self.answered as f64)
    }
}

/// vswitchd against dnsmasq in one pair of scenarios.
struct Ratio {
    what: &'static str,
    /// Queries per second over all rounds.
    qps: f64,
    /// The median over rounds of the round's queries/s ratio (the two measured back to back,
    /// so a change of the machine's load between rounds cancels out).
    qps_median: f64,
    p50: f64,
    p99: f64,
    /// CPU time per query (below 1: vswitchd spends less).
    cpu: Option<f64>,
}

/// The median of `values` (0 if empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// vswitchd against dnsmasq for each pair of scenarios; queries/s above 1 means vswitchd
/// answers more, latency and CPU below 1 that it waits or spends less.
fn ratios(figures: &[Figures]) -> Vec<Ratio> {
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    [("local names", 0), ("forwarded names, cached", 2)]
        .into_iter()
        .filter_map(|(what, i)| {
            let (v, d) = (figures.get(i)?, figures.get(i + 1)?);
            let per_round = v
                .round_rates
                .iter()
                .zip(&d.round_rates)
                .map(|(a, b)| a / b.max(1.0))
                .collect();
            Some(Ratio {
                what,
                qps: v.rate() / d.rate().max(1.0),
                qps_median: median(per_round),
                p50: ratio(
                    v.latency.value_at_quantile(0.5),
                    d.latency.value_at_quantile(0.5),
                ),
                p99: ratio(
                    v.latency.value_at_quantile(0.99),
                    d.latency.value_at_quantile(0.99),
                ),
                cpu: v
                    .cpu_per_query()
                    .zip(d.cpu_per_query())
                    .map(|(a, b)| a / b.max(f64::MIN_POSITIVE)),
            })
        })
        .collect()
}

fn table(args: &Args, figures: &[Figures]) -> String {
    let mut out = format!(
        "DNS (vswitchd, real daemon): {} names on {} sandboxes, {} clients (one query in flight each), {} s per scenario in {} alternating rounds\n\n{:<56} {:>10} {:>8} {:>8} {:>8} {:>6} {:>6} {:>10}\n",
        args.names, args.targets, args.clients, args.seconds, args.rounds.max(1), "scenario", "queries/s", "p50 us", "p99 us", "max us", "lost", "wrong", "cpu us/q"
    );
    for f in figures {
        let cpu = f
            .cpu_per_query()
            .map_or_else(|| "-".to_string(), |c| format!("{c:.2}"));
        let _ = writeln!(
            out,
            "{:<56} {:>10.0} {:>8} {:>8} {:>8} {:>6} {:>6} {:>10}",
            f.name,
            f.rate(),
            f.latency.value_at_quantile(0.5),
            f.latency.value_at_quantile(0.99),
            f.latency.max(),
            f.lost,
            f.wrong,
            cpu
        );
    }
    out.push_str(
        "\n(cpu us/q: the answering thread's CPU time per answered query, from its schedstat)\n\n",
    );
    for r in ratios(figures) {
        let cpu = r
            .cpu
            .map_or_else(String::new, |c| format!(", {c:.2}x CPU per query"));
        let _ = writeln!(
            out,
            "{}: vswitchd / dnsmasq = {:.2}x queries/s (median of the rounds' ratios {:.2}x), {:.2}x p50, {:.2}x p99{cpu}",
            r.what, r.qps, r.qps_median, r.p50, r.p99
        );
    }
    out
}

fn to_json(args: &Args, figures: &[Figures]) -> Value {
    json!({
        "names": args.names,
        "targets": args.targets,
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds.max(1),
        "ratios": ratios(figures).into_iter().map(|r| json!({
            "pair": r.what,
            "queries_per_second": r.qps,
            "queries_per_second_median_of_rounds": r.qps_median,
            "p50": r.p50,
            "p99": r.p99,
            "cpu_per_query": r.cpu,
        })).collect::<Vec<_>>(),
        "scenarios": figures.iter().map(|f| json!({
            "scenario": f.name,
            "queries_per_second": f.rate(),
            "p50_us": f.latency.value_at_quantile(0.5),
            "p99_us": f.latency.value_at_quantile(0.99),
            "max_us": f.latency.max(),
            "answered": f.answered,
            "lost": f.lost,
            "wrong": f.wrong,
            "round_queries_per_second": f.round_rates,
            "server_cpu_us_per_query": f.cpu_per_query(),
        })).collect::<Vec<_>>(),
    })
}
