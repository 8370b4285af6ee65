//! `e2e`: the end-to-end comparison of vswitchd with the Linux kernel bridge and Open vSwitch's
//! userspace datapath, on the same topology, in one run. As root:
//!
//! ```text
//! cargo run --release -p benches --bin e2e [-- --duration 5 --only kernel,vswitchd,ovs --json out.json]
//! cargo run --release -p benches --bin e2e -- --scenario overlay   # or: --scenario all
//! ```
//!
//! Scenario `flat` (the default):
//! For each variant it builds two host namespaces (h1 10.77.0.1/24, h2 10.77.0.2/24), each with
//! a veth to a switch namespace, puts the switch up there, and measures from h1 to h2: TCP
//! throughput (iperf3, one stream), 64-byte UDP packets per second and loss (iperf3 -u -b 0
//! -l 18) and UDP round-trip latency (a ping-pong between two threads entered into h1 and h2).
//! Then it removes everything, also on error or Ctrl-C, and prints a table with each figure's
//! ratio to the kernel bridge of the same run.
//!
//! Scenario `overlay`: two host namespaces hA and hB joined by an underlay veth, a sandbox
//! behind a switch in each, the sandboxes' traffic over VXLAN (kernel bridges with kernel VXLAN
//! devices; a vswitchd per host with an overlay network and sandboxes of its own; Open vSwitch
//! userspace tunnels, best effort), measured the same way from sandbox A to sandbox B with
//! ratios to the kernel variant (see `benches::e2e::overlay`).
//!
//! Scenario `gateway`: a sandbox behind the host's gateway and an "outside" namespace beyond
//! the host's uplink; TCP out through masquerade (`gateway-nat`) and in through a published
//! port (`gateway-publish`), vswitchd against Docker's recipe on the kernel bridge (see
//! `benches::e2e::gateway`). `all` runs every scenario, one table each.
//!
//! Under `cargo run` it first runs `cargo build --release -p tools` so the vswitchd measured is
//! the current one (`--no-build` or `--vswitchd PATH` skip that).

use benches::e2e::bins::vswitch_bins;
use benches::e2e::cleanup::TempDir;
use benches::e2e::gateway::Gateway;
use benches::e2e::measure;
use benches::e2e::netns::{remove_stale, run_prefix};
use benches::e2e::overlay::Overlay;
use benches::e2e::proc::{find_program, set_verbose};
use benches::e2e::report::{
    rounds_summary, HostInfo, Measured, Outcome, Report, Row, NOT_SELECTED,
};
use benches::e2e::scenario::{Env, Flat, Scenario};
use benches::e2e::switches::{OvsBins, Variant};
use benches::e2e::{blast, rfc2544, stalls};
use benches::e2e::{check_interrupt, install_signal_handlers, interrupted, Error};
use clap::{Parser, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The command this harness is documented to be run with.
const COMMAND: &str = "cargo run --release -p benches --bin e2e";
/// How long a freshly built topology gets to forward a ping.
const REACH_TIMEOUT: Duration = Duration::from_secs(20);

/// End-to-end comparison: the Linux bridge, vswitchd and Open vSwitch's userspace datapath on
/// the same two-namespace topology (TCP Gbit/s, 64-byte UDP kpps and loss, UDP RTT). Needs root.
#[derive(Parser, Debug)]
#[command(
    after_help = format!("Run it as root from the workspace: {COMMAND}\n\
Ratios are against the kernel bridge measured in the same run; they are the figures to compare.")
)]
struct Args {
    /// Seconds per iperf3 test (TCP, then UDP).
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=600))]
    duration: u32,
    /// The variants to run, comma-separated: kernel, vswitchd (its rows: in the overlay, one per
    /// VTEP backend), vswitchd-tap (the default VTEP only), vswitchd-socket, vswitchd-rt (the
    /// datapath thread real-time, `--datapath-rt-priority 1`; flat and overlay; only when
    /// named), ovs (both OVS rows), ovs-notso, ovs-tso.
    #[arg(long, value_name = "LIST", default_value = "kernel,vswitchd,ovs", value_parser = parse_only)]
    only: Selection,
    /// Run everything this many times, back to back, and end with each ratio to the kernel
    /// per round and its median (on a shared machine one round says little). `--json`
    /// then writes `{"rounds": [...]}`.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// The vswitchd binary [default: vswitchd next to this binary, else target/release/vswitchd
    /// in the workspace, built first under `cargo run`].
    #[arg(long, value_name = "PATH")]
    vswitchd: Option<PathBuf>,
    /// The vswitchctl binary [default: next to vswitchd].
    #[arg(long, value_name = "PATH")]
    vswitchctl: Option<PathBuf>,
    /// Do not run `cargo build --release -p tools` first.
    #[arg(long)]
    no_build: bool,
    /// Recorded UDP round trips for the latency figures.
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u32).range(100..))]
    rtt_count: u32,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The topology.
    #[arg(long, value_enum, default_value_t = ScenarioKind::Flat)]
    scenario: ScenarioKind,
    /// The measurements to run, comma-separated: tcp, udp (iperf3 full blast and the
    /// carried-rate search), rtt, rfc2544 (throughput at 0 % and < 1 % loss and one-way latency
    /// under load, with the blaster and sink of our own; about a minute per variant), or `all`.
    #[arg(long, value_name = "LIST", default_value = "tcp,udp,rtt", value_parser = parse_tests)]
    tests: Tests,
    /// RFC 2544: seconds of sending per trial.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    trial_secs: f64,
    /// RFC 2544: seconds the sink keeps receiving after a trial's last send (§ 26.1: 2).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    drain_secs: f64,
    /// RFC 2544: the highest rate tried, thousand datagrams per second.
    #[arg(long, value_name = "KPPS", default_value_t = 600.0)]
    max_kpps: f64,
    /// RFC 2544: most trials of the search for the < 1 % loss rate (the 0 % search adds up to
    /// half as many more).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=30))]
    steps: u32,
    /// TCP congestion control of the iperf3 sender (`-C`, e.g. cubic or bbr) [default: the
    /// system's, `net.ipv4.tcp_congestion_control`].
    #[arg(long, value_name = "ALG")]
    congestion: Option<String>,
    /// Print every command the harness runs.
    #[arg(short, long)]
    verbose: bool,
}

/// Which measurements `--tests` selected.
#[derive(Debug, Clone, Copy)]
struct Tests {
    tcp: bool,
    udp: bool,
    rtt: bool,
    rfc2544: bool,
}

fn parse_tests(s: &str) -> Result<Tests, String> {
    let mut t = Tests {
        tcp: false,
        udp: false,
        rtt: false,
        rfc2544: false,
    };
    for name in s.split(',').map(str::trim) {
        match name {
            "tcp" => t.tcp = true,
            "udp" => t.udp = true,
            "rtt" => t.rtt = true,
            "rfc2544" => t.rfc2544 = true,
            "all" => {
                t = Tests {
                    tcp: true,
                    udp: true,
                    rtt: true,
                    rfc2544: true,
                }
            }
            other => {
                return Err(format!(
                    "unknown test `{other}` (tcp, udp, rtt, rfc2544, all)"
                ))
            }
        }
    }
    Ok(t)
}

/// The topologies.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScenarioKind {
    /// Two hosts on one switch.
    Flat,
    /// Two hosts joined by an underlay, a sandbox behind a switch on each, over VXLAN.
    Overlay,
    /// A sandbox and an outside namespace through the host's NAT: out (masquerade) and into a
    /// published port (DNAT), TCP, kernel recipe and vswitchd.
    Gateway,
    /// Flat, then overlay, then gateway.
    All,
}

impl ScenarioKind {
    fn scenarios(self) -> Vec<Box<dyn Scenario>> {
        match self {
            ScenarioKind::Flat => vec![Box::new(Flat)],
            ScenarioKind::Overlay => vec![Box::new(Overlay)],
            ScenarioKind::Gateway => vec![
                Box::new(Gateway { inbound: false }),
                Box::new(Gateway { inbound: true }),
            ],
            ScenarioKind::All => vec![
                Box::new(Flat),
                Box::new(Overlay),
                Box::new(Gateway { inbound: false }),
                Box::new(Gateway { inbound: true }),
            ],
        }
    }
}

/// The variants `--only` selected, in table order.
#[derive(Debug, Clone)]
struct Selection(Vec<Variant>);

fn parse_only(s: &str) -> Result<Selection, String> {
    let mut picked = Vec::new();
    for word in s.split(',').filter(|w| !w.trim().is_empty()) {
        let v = Variant::parse_selection(word).ok_or_else(|| {
            format!(
                "unknown variant `{word}` (kernel, vswitchd, vswitchd-tap, vswitchd-socket, vswitchd-rt, \
                 ovs, ovs-notso, ovs-tso)"
            )
        })?;
        picked.extend(v);
    }
    if picked.is_empty() {
        return Err("no variant selected".into());
    }
    Ok(Selection(
        Variant::ALL
            .into_iter()
            .filter(|v| picked.contains(v))
            .collect(),
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    set_verbose(args.verbose);
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "e2e: needs root: it creates network namespaces, veth pairs and bridges and runs \
             switch daemons.\nRun it as root: sudo -E {COMMAND}"
        );
        return ExitCode::from(2);
    }
    for tool in ["ip", "iperf3", "ping"] {
        if find_program(tool).is_none() {
            eprintln!("e2e: `{tool}` is not installed (needs iproute2, iperf3, iputils-ping)");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = install_signal_handlers() {
        eprintln!("e2e: {e}");
        return ExitCode::FAILURE;
    }
    for r in remove_stale() {
        eprintln!("e2e: removed {r}, left by an earlier run that was killed");
    }
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        if interrupted() {
            break;
        }
        if args.rounds > 1 {
            eprintln!("e2e: round {round} of {}", args.rounds);
        }
        let reports = match run(&args) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("e2e: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (i, report) in reports.iter().enumerate() {
            if i > 0 || round > 1 {
                println!();
            }
            print!("{}", report.table());
        }
        rounds.push(reports);
    }
    if args.rounds > 1 {
        let figures: Vec<_> = rounds
            .iter()
            .map(|r| r.iter().flat_map(Report::ratio_figures).collect())
            .collect();
        print!("{}", rounds_summary(&figures));
    }
    let reports: Vec<&Report> = rounds.iter().flatten().collect();
    if let Some(path) = &args.json {
        // One scenario: its report, as before; several: {"scenarios": [...]}; several rounds:
        // {"rounds": [...]}, each one of those.
        let scenarios = |r: &[Report]| match r {
            [one] => one.to_json(),
            many => json!({ "scenarios": many.iter().map(Report::to_json).collect::<Vec<_>>() }),
        };
        let value = match rounds.as_slice() {
            [one] => scenarios(one),
            many => json!({ "rounds": many.iter().map(|r| scenarios(r)).collect::<Vec<_>>() }),
        };
        let text =
            serde_json::to_string_pretty(&value).expect("a serde_json::Value always serialises");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("e2e: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("e2e: wrote {}", path.display());
    }
    if interrupted() {
        eprintln!("e2e: interrupted; everything it made was removed");
        ExitCode::from(130)
    } else if reports.iter().any(|r| r.has_errors()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Finds what the selected variants need, then measures every selected variant of each
/// scenario, one after the other.
fn run(args: &Args) -> Result<Vec<Report>, Error> {
    let selected = &args.only.0;
    let mut host = HostInfo {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        ..HostInfo::default()
    };

    // Find (and build) what the selected variants need before making anything.
    let mut vswitch_missing = None;
    let vswitch = if selected.iter().any(|v| v.is_vswitchd()) {
        match vswitch_bins(
            args.vswitchd.as_deref(),
            args.vswitchctl.as_deref(),
            args.no_build,
            "e2e",
        ) {
            Ok(b) => {
                host.vswitchd = Some(b.vswitchd.display().to_string());
                Some(b)
            }
            Err(e) => {
                vswitch_missing = Some(e);
                None
            }
        }
    } else {
        None
    };
    let ovs = if selected.iter().any(|v| v.is_ovs()) {
        OvsBins::find()
    } else {
        None
    };
    host.ovs_version = ovs.as_ref().and_then(OvsBins::version);

    let workdir = TempDir::create(std::env::temp_dir().join(run_prefix()))?;
    let env = Env {
        prefix: run_prefix(),
        workdir: workdir.path().to_path_buf(),
        vswitch,
        ovs,
    };
    // The blaster's own ceiling, once per run, before any switch is up.
    let blaster_kpps = args.tests.rfc2544.then(|| {
        eprintln!("e2e: RFC 2544: the blaster alone, 2 s into a veth that drops everything");
        let r = blast::ceiling(&env.prefix, Duration::from_secs(2))
            .map(|pps| pps / 1e3)
            .map_err(|e| e.to_string());
        if let Ok(k) = &r {
            eprintln!("e2e:   {k:.1} kpps");
        }
        r
    });
    // The machine's own stalls, likewise: what a datapath thread has to wait out.
    let stalls = args.tests.rfc2544.then(|| {
        eprintln!("e2e: RFC 2544: the machine's own stalls, a thread spinning on each CPU for 2 s");
        let r = stalls::measure(Duration::from_secs(2)).map_err(|e| e.to_string());
        for s in r.iter().flatten() {
            eprintln!(
                "e2e:   CPU {}: {} gaps of 1 ms or more, {:.1} ms in all, longest {:.1} ms",
                s.cpu, s.count, s.total_ms, s.longest_ms
            );
        }
        r
    });
    let mut reports = Vec::new();
    for scenario in args.scenario.scenarios() {
        if interrupted() {
            break;
        }
        let scenario = &*scenario;
        eprintln!("e2e: scenario {}", scenario.name());
        let mut rows = Vec::new();
        for &variant in selected {
            if interrupted() {
                break;
            }
            if !scenario.runs(variant) {
                continue;
            }
            let row = |outcome| Row {
                variant,
                label: scenario.label(variant),
                outcome,
                teardown_errors: Vec::new(),
            };
            if variant.is_vswitchd() {
                if let Some(e) = &vswitch_missing {
                    rows.push(row(Outcome::Failed(e.clone())));
                    continue;
                }
            }
            if variant.is_ovs() && env.ovs.is_none() {
                rows.push(row(Outcome::Skipped(
                    "openvswitch: not installed, skipped".into(),
                )));
                continue;
            }
            if let Some(why) = scenario.skip_reason(variant, &env) {
                eprintln!("e2e: [{}] {why}", scenario.label(variant));
                rows.push(row(Outcome::Skipped(why)));
                continue;
            }
            rows.push(measure_variant(scenario, variant, &env, args));
        }
        reports.push(Report {
            scenario: scenario.name().to_string(),
            topology: scenario.describe(),
            duration_s: args.duration,
            rtt_rounds: args.rtt_count,
            host: host.clone(),
            path: scenario.path().to_string(),
            rfc2544: (args.tests.rfc2544 && !scenario.tcp_only()).then(|| rfc_config(args)),
            blaster_kpps: blaster_kpps
                .clone()
                .filter(|_| args.tests.rfc2544 && !scenario.tcp_only()),
            stalls: stalls
                .clone()
                .filter(|_| args.tests.rfc2544 && !scenario.tcp_only()),
            rows,
        });
    }
    drop(workdir);
    Ok(reports)
}

/// Sets the scenario up with one variant, measures, tears it down.
fn measure_variant(scenario: &dyn Scenario, variant: Variant, env: &Env, args: &Args) -> Row {
    let label_string = scenario.label(variant);
    let label = label_string.as_str();
    let step = |what: &str| eprintln!("e2e: [{label}] {what}");
    // A best-effort variant that cannot be set up or does not forward is a skip, said so.
    let failed = |what: String| match scenario.best_effort(variant) {
        Some(name) if !interrupted() => {
            let why = format!("{name}: skipped ({what})");
            step(&why);
            Outcome::Skipped(why)
        }
        _ => Outcome::Failed(what),
    };
    step("setting up");
    let deployment = match scenario.setup(variant, env) {
        Ok(d) => d,
        Err(e) => {
            return Row {
                variant,
                label: label_string.clone(),
                outcome: failed(format!("setup: {e}")),
                teardown_errors: Vec::new(),
            }
        }
    };
    let d = &deployment;
    let tests = if scenario.tcp_only() {
        Tests {
            tcp: args.tests.tcp,
            udp: false,
            rtt: false,
            rfc2544: false,
        }
    } else {
        args.tests
    };
    let outcome = match measure::wait_reachable(d, REACH_TIMEOUT) {
        Err(e) => failed(format!("no connectivity: {e}")),
        Ok(()) => {
            let mut m = Measured {
                tcp: Err(NOT_SELECTED.into()),
                udp: Err(NOT_SELECTED.into()),
                udp_carried: Err(NOT_SELECTED.into()),
                latency: Err(NOT_SELECTED.into()),
                rfc2544: Err(NOT_SELECTED.into()),
                notes: d.notes.clone(),
            };
            // Latency first, on a quiet switch; each figure stands alone if another fails.
            if tests.rtt {
                step(&format!("latency: {} round trips", args.rtt_count));
                m.latency = measure::latency(d, args.rtt_count).map_err(|e| e.to_string());
            }
            if tests.tcp && check_interrupt().is_ok() {
                step(&format!("TCP: {} s", args.duration));
                m.tcp = measure::tcp(d, args.duration, args.congestion.as_deref())
                    .map_err(|e| e.to_string());
            }
            if tests.udp && check_interrupt().is_ok() {
                step(&format!("UDP 64B: {} s", args.duration));
                m.udp = measure::udp(d, args.duration).map_err(|e| e.to_string());
                m.udp_carried = match &m.udp {
                    Ok(full) if check_interrupt().is_ok() => {
                        step("UDP 64B: searching the rate carried with under 1% loss");
                        measure::udp_carried(d, args.duration, full).map_err(|e| e.to_string())
                    }
                    Ok(_) => Err("interrupted".into()),
                    Err(_) => Err("no full-blast figure to start from".into()),
                };
            }
            if tests.rfc2544 && check_interrupt().is_ok() {
                let cfg = rfc_config(args);
                step(&format!(
                    "RFC 2544: {} s trials + {} s drain, bisection from {:.0} kpps",
                    cfg.trial.as_secs_f64(),
                    cfg.drain.as_secs_f64(),
                    cfg.max_pps / 1e3
                ));
                let mut log = |line: &str| eprintln!("e2e:   {line}");
                m.rfc2544 = rfc2544::measure(d, &cfg, &mut log).map_err(|e| e.to_string());
            }
            log_figures(label, &m);
            Outcome::Measured(Box::new(m))
        }
    };
    step("tearing down");
    let teardown_errors: Vec<String> = scenario
        .teardown(deployment)
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    for e in &teardown_errors {
        eprintln!("e2e: [{label}] teardown: {e}");
    }
    Row {
        variant,
        label: label_string.clone(),
        outcome,
        teardown_errors,
    }
}

/// The RFC 2544 settings the arguments ask for.
fn rfc_config(args: &Args) -> rfc2544::Config {
    let secs = |s: f64| {
        Duration::from_secs_f64(if s.is_finite() {
            s.clamp(0.1, 600.0)
        } else {
            1.0
        })
    };
    rfc2544::Config {
        trial: secs(args.trial_secs),
        drain: secs(args.drain_secs),
        max_pps: args.max_kpps.max(1.0) * 1e3,
        steps: args.steps,
        zero_steps: args.steps.div_ceil(2),
        ..rfc2544::Config::default()
    }
}

/// One progress line per variant, so a long run shows its figures as they come.
fn log_figures(label: &str, m: &Measured) {
    let tcp = m.tcp.as_ref().map_or_else(
        |e| format!("error ({e})"),
        |t| format!("{:.2} Gbit/s", t.gbps),
    );
    let udp = m.udp.as_ref().map_or_else(
        |e| format!("error ({e})"),
        |u| format!("{:.1} kpps, {:.1}% loss", u.kpps, u.lost_percent),
    );
    let carried = m.udp_carried.as_ref().map_or_else(
        |e| format!("error ({e})"),
        |c| format!("{:.1} kpps", c.best.kpps),
    );
    let lat = m.latency.as_ref().map_or_else(
        |e| format!("error ({e})"),
        |l| format!("p50 {:.1} µs, p99 {:.1} µs", l.p50_us, l.p99_us),
    );
    let rfc = m.rfc2544.as_ref().map_or_else(
        |e| format!("error ({e})"),
        |r| {
            format!(
                "0 % {:.1} kpps, < 1 % {:.1} kpps",
                r.zero_loss_kpps().unwrap_or(0.0),
                r.carried_kpps().unwrap_or(0.0)
            )
        },
    );
    eprintln!(
        "e2e: [{label}] TCP {tcp}; UDP full blast {udp}, carried {carried}; RTT {lat}; \
         RFC 2544 {rfc}"
    );
}
