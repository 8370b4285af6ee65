//! `dns`: the embedded DNS server against dnsmasq. As root:
//!
//! ```text
//! cargo run --release -p benches --bin dns [-- --names 1000 --clients 4 --seconds 3 --json out.json]
//! ```
//!
//! Three namespaces of the run (`vsb<pid>-dns-…`): `d`, where the DNS service runs (in this
//! process: the daemon does not serve it yet) and queries leave for upstreams; `u`, joined to
//! `d` by a veth pair, where a dnsmasq answers the forwarded names from a hosts file; and `s`,
//! the sandbox, served by the DNS service at 127.0.0.11:53, where a second dnsmasq answers the
//! same local names from a hosts file at 127.0.0.53:53. Clients (closed loop, one query in flight
//! per client thread) run in `s` (or `d` for the direct upstream reference) and ask random names
//! for `--seconds` after a warm-up. Per scenario: answered queries per second, p50/p99/max
//! latency, and lost queries (no answer within a second). dnsmasq caches forwarded answers; the
//! DNS service does not.

use benches::e2e::cleanup::TempDir;
use benches::e2e::netns::{join, remove_stale, run_prefix, spawn_in, Netns};
use benches::e2e::proc::{find_program, in_netns, run as run_cmd, wait_until, Daemon};
use benches::e2e::{check_interrupt, install_signal_handlers, Error, IoContext, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tools::daemon::dns::{DnsService, ForwardConfig};

/// The command this bench is documented to be run with.
const COMMAND: &str = "cargo run --release -p benches --bin dns";

/// The embedded DNS server (local and forwarded names) against dnsmasq answering the same names
/// from a hosts file: queries per second and latency percentiles. Needs root and dnsmasq.
#[derive(Parser, Debug)]
#[command(after_help = format!("Run it as root from the workspace: {COMMAND}"))]
struct Args {
    /// How many local names (and as many forwarded names).
    #[arg(long, default_value_t = 1000)]
    names: usize,
    /// Client threads, each with one query in flight.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Measured seconds per scenario (after a warm-up of a quarter of that).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One scenario's figures.
struct Figures {
    name: &'static str,
    answered: u64,
    lost: u64,
    wrong: u64,
    seconds: f64,
    latency: Histogram<u64>,
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
    for (tool, package) in [("ip", "iproute2"), ("dnsmasq", "dnsmasq")] {
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
    match run(&args) {
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

fn local_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 50, (i / 250) as u8, (i % 250) as u8 + 2)
}

fn forwarded_name(i: usize) -> String {
    format!("fwd{i}.bench.test")
}

fn forwarded_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 60, (i / 250) as u8, (i % 250) as u8 + 2)
}

fn run(args: &Args) -> Result<Vec<Figures>> {
    if args.names == 0 || args.names > 60_000 || args.clients == 0 {
        return Err(Error::Unexpected(
            "--names must be 1..=60000 and --clients at least 1".into(),
        ));
    }
    let prefix = format!("{}-dns", run_prefix());
    let tmp = TempDir::create(std::env::temp_dir().join(&prefix))?;
    let d = Netns::create(&format!("{prefix}-d"))?;
    let u = Netns::create(&format!("{prefix}-u"))?;
    let s = Netns::create(&format!("{prefix}-s"))?;
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

    // dnsmasq upstream (forwarded names) in u, dnsmasq local (the same local names) in s.
    let mut upstream_hosts = String::new();
    let mut local_hosts = String::new();
    for i in 0..args.names {
        let _ = writeln!(
            upstream_hosts,
            "{} {}",
            forwarded_addr(i),
            forwarded_name(i)
        );
        let _ = writeln!(local_hosts, "{} {}", local_addr(i), local_name(i));
    }
    let dnsmasq = |ns: &str, hosts: &str, listen: &str, tag: &str| -> Result<Daemon> {
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
        .arg("--cache-size=10000");
        Daemon::spawn(tag, cmd, &tmp.path().join(format!("{tag}.log")))
    };
    let _upstream = dnsmasq(u.name(), &upstream_hosts, "10.253.0.2", "dnsmasq-upstream")?;
    let _local = dnsmasq(s.name(), &local_hosts, "127.0.0.53", "dnsmasq-local")?;

    // The DNS service, started from d so that it forwards from there.
    let d_name = d.name().to_string();
    let service = join(spawn_in(&d_name, "dns-start", move || {
        let config = ForwardConfig::from_args(&["10.253.0.2".into()])
            .map_err(|e| Error::Unexpected(e.to_string()))?;
        DnsService::start(config).context(|| "starting the DNS service".to_string())
    })?)?;
    let service = Arc::new(service);
    let s_file = std::fs::File::open(format!("/run/netns/{}", s.name()))
        .context(|| format!("opening netns {}", s.name()))?;
    service
        .add_sandbox(s.name(), &s_file)
        .context(|| "serving DNS in the sandbox".to_string())?;
    let table = service.table();
    table
        .add_endpoint("bench", s.name(), Ipv4Addr::new(10, 50, 255, 1), &[])
        .map_err(|e| Error::Unexpected(e.to_string()))?;
    for i in 0..args.names {
        table
            .add_endpoint("bench", &format!("sb{i}"), local_addr(i), &[local_name(i)])
            .map_err(|e| Error::Unexpected(e.to_string()))?;
    }

    let vswitch: SocketAddr = "127.0.0.11:53".parse().unwrap_or_else(|_| unreachable!());
    let local: SocketAddr = "127.0.0.53:53".parse().unwrap_or_else(|_| unreachable!());
    let upstream: SocketAddr = "10.253.0.2:53".parse().unwrap_or_else(|_| unreachable!());
    for (what, ns, target, name) in [
        ("vswitch DNS", s.name(), vswitch, local_name(0)),
        ("dnsmasq local", s.name(), local, local_name(0)),
        ("dnsmasq upstream", d.name(), upstream, forwarded_name(0)),
        (
            "vswitch DNS forwarding",
            s.name(),
            vswitch,
            forwarded_name(0),
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

    let scenarios: [(&'static str, &str, SocketAddr, bool); 4] = [
        ("local names: vswitch DNS", s.name(), vswitch, true),
        ("local names: dnsmasq (hosts file)", s.name(), local, true),
        (
            "forwarded names: vswitch DNS -> dnsmasq",
            s.name(),
            vswitch,
            false,
        ),
        (
            "forwarded names: dnsmasq directly (reference)",
            d.name(),
            upstream,
            false,
        ),
    ];
    let mut figures = Vec::new();
    for (name, ns, target, local_names) in scenarios {
        check_interrupt()?;
        figures.push(measure(args, name, ns, target, local_names)?);
    }
    let stats = service.stats();
    eprintln!("dns: DNS service counters: {stats:?}");
    drop(service);
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

/// Runs `args.clients` closed-loop clients in `ns` against `target` for the warm-up and the
/// measured time.
fn measure(
    args: &Args,
    name: &'static str,
    ns: &str,
    target: SocketAddr,
    local_names: bool,
) -> Result<Figures> {
    let warmup = Duration::from_secs_f64(args.seconds / 4.0);
    let measured = Duration::from_secs_f64(args.seconds);
    let start = Instant::now() + Duration::from_millis(50);
    let (measure_from, end) = (start + warmup, start + warmup + measured);
    let names = args.names;
    let handles = (0..args.clients)
        .map(|c| {
            spawn_in(ns, "dns-client", move || {
                let queries: Vec<(Vec<u8>, [u8; 4])> = (0..names)
                    .map(|i| {
                        let (n, a) = if local_names {
                            (local_name(i), local_addr(i))
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
    let mut figures = Figures {
        name,
        answered: 0,
        lost: 0,
        wrong: 0,
        seconds: measured.as_secs_f64(),
        latency: Histogram::new_with_bounds(1, 10_000_000, 3)
            .map_err(|e| Error::Unexpected(e.to_string()))?,
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
    Ok(figures)
}

fn table(args: &Args, figures: &[Figures]) -> String {
    let mut out = format!(
        "DNS: {} names, {} clients (one query in flight each), {} s per scenario\n\n{:<48} {:>10} {:>8} {:>8} {:>8} {:>6} {:>6}\n",
        args.names, args.clients, args.seconds, "scenario", "queries/s", "p50 us", "p99 us", "max us", "lost", "wrong"
    );
    for f in figures {
        let _ = writeln!(
            out,
            "{:<48} {:>10.0} {:>8} {:>8} {:>8} {:>6} {:>6}",
            f.name,
            f.answered as f64 / f.seconds,
            f.latency.value_at_quantile(0.5),
            f.latency.value_at_quantile(0.99),
            f.latency.max(),
            f.lost,
            f.wrong
        );
    }
    out
}

fn to_json(args: &Args, figures: &[Figures]) -> Value {
    json!({
        "names": args.names,
        "clients": args.clients,
        "seconds": args.seconds,
        "scenarios": figures.iter().map(|f| json!({
            "scenario": f.name,
            "queries_per_second": f.answered as f64 / f.seconds,
            "p50_us": f.latency.value_at_quantile(0.5),
            "p99_us": f.latency.value_at_quantile(0.99),
            "max_us": f.latency.max(),
            "answered": f.answered,
            "lost": f.lost,
            "wrong": f.wrong,
        })).collect::<Vec<_>>(),
    })
}
