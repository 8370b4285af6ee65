//! `sandboxes`: the control plane at scale. As root:
//!
//! ```text
//! cargo run --release -p benches --bin sandboxes [-- --count 200 --json out.json]
//! ```
//!
//! In a fresh network namespace (`vsb<pid>-sbx`) it starts vswitchd (`nsenter --net`, so the
//! sandboxes it mounts under /run/netns are visible here; socket and state in a temp dir), then:
//! 0. times N × `network ls` through vswitchctl and through the API socket, alternately: the
//!    difference is what starting a vswitchctl process costs;
//! 1. creates N sandboxes and connects each to the default `bridge` network with `vswitchctl
//!    sandbox create` + `vswitchctl network connect`, one after the other, timing every
//!    command (process start-up included), then removes them with `vswitchctl sandbox rm`
//!    (timed too);
//! 2. does the same N again through the API socket directly, in-process (one JSON line per
//!    request, a connection per request as vswitchctl makes), which leaves out the cost of
//!    starting a vswitchctl process; these N stay;
//! 3. kills vswitchd with SIGKILL, starts it again on the same state dir and times how long it
//!    takes to answer on its socket and until `port list` shows all N endpoint ports again;
//! 4. checks that a few sandboxes picked at random ping the bridge network's gateway (172.17.0.1)
//!    after the restore (a correctness check, not timed);
//! 5. removes the N sandboxes through the API (timed), stops the daemon, deletes the namespace
//!    and the temp dir.
//!
//! vswitchd's memory (VmRSS) and open descriptors are read at each stage. Everything made is
//! removed on success, on error and on Ctrl-C (guards); per-operation latencies go into HDR
//! histograms. Prints a table, and the same figures as JSON with `--json FILE`.
//!
//! Scale and baseline: `--counts 100,1000,10000` runs the whole scenario once per count (each
//! in a fresh namespace and state dir); `--api-only` leaves out step 0 and the vswitchctl pass;
//! `--baseline-vswitchd PATH` (and `--baseline-vswitchctl`) runs every count again against
//! another vswitchd (the JSON-state daemon before the store), up to `--baseline-max N`
//! sandboxes. A summary compares them: create + connect p50/p99, the cost of the 100th and of
//! the Nth connect (median of the 20 around each), the restore after kill -9, RSS per sandbox.

use benches::e2e::bins::vswitch_bins;
use benches::e2e::cleanup::{Resource, TempDir};
use benches::e2e::netns::{self, remove_stale, run_prefix, Netns};
use benches::e2e::proc::{find_program, in_netns, set_verbose, succeeds, wait_until};
use benches::e2e::switches::{spawn_vswitchd_in, vswitchctl, VswitchBins};
use benches::e2e::{check_interrupt, install_signal_handlers, interrupted, Error, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The command this bench is documented to be run with.
const COMMAND: &str = "cargo run --release -p benches --bin sandboxes";
/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the restarted daemon gets to bring every endpoint port back.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a sandbox gets to reach the gateway after the restore.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Control-plane scale: N sandboxes created and connected through vswitchctl and through the API
/// socket (per-operation p50/p99, total), vswitchd's memory, and the restore after kill -9.
/// Needs root.
#[derive(Parser, Debug)]
#[command(after_help = format!("Run it as root from the workspace: {COMMAND}"))]
struct Args {
    /// Sandboxes per pass (two passes: vswitchctl, then the API socket).
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=20000))]
    count: u32,
    /// Run the scenario once per count, e.g. `100,1000,10000` (replaces --count).
    #[arg(long, value_name = "N,N,…", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=20000))]
    counts: Vec<u32>,
    /// Only the API pass (no `network ls` overhead, no vswitchctl pass).
    #[arg(long)]
    api_only: bool,
    /// Also run every count against this vswitchd (e.g. the JSON-state daemon before the store).
    #[arg(long, value_name = "PATH")]
    baseline_vswitchd: Option<PathBuf>,
    /// The baseline's vswitchctl [default: next to the baseline vswitchd].
    #[arg(long, value_name = "PATH")]
    baseline_vswitchctl: Option<PathBuf>,
    /// Run the baseline only for counts up to N (it may be too slow at 10,000).
    #[arg(long, value_name = "N")]
    baseline_max: Option<u32>,
    /// Sandboxes picked at random to ping the gateway after the restore.
    #[arg(long, value_name = "K", default_value_t = 5)]
    check: u32,
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
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print every command the bench runs.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    set_verbose(args.verbose);
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "sandboxes: needs root: it creates network namespaces and runs vswitchd.\n\
             Run it as root: sudo -E {COMMAND}"
        );
        return ExitCode::from(2);
    }
    for tool in ["ip", "ping", "nsenter"] {
        if find_program(tool).is_none() {
            eprintln!(
                "sandboxes: `{tool}` is not installed (needs iproute2, iputils-ping, util-linux)"
            );
            return ExitCode::from(2);
        }
    }
    if let Err(e) = install_signal_handlers() {
        eprintln!("sandboxes: {e}");
        return ExitCode::FAILURE;
    }
    for r in remove_stale() {
        eprintln!("sandboxes: removed {r}, left by an earlier run that was killed");
    }
    let bins = match vswitch_bins(
        args.vswitchd.as_deref(),
        args.vswitchctl.as_deref(),
        args.no_build,
        "sandboxes",
    ) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sandboxes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut daemons = vec![("store", bins)];
    if let Some(path) = &args.baseline_vswitchd {
        let ctl = args
            .baseline_vswitchctl
            .clone()
            .unwrap_or_else(|| path.with_file_name("vswitchctl"));
        daemons.push((
            "baseline",
            VswitchBins {
                vswitchd: path.clone(),
                vswitchctl: ctl,
            },
        ));
    }
    let counts = if args.counts.is_empty() {
        vec![args.count]
    } else {
        args.counts.clone()
    };
    let largest = counts.iter().copied().max().unwrap_or(args.count);
    if let Err(e) = raise_fd_limit(largest) {
        // Without CAP_SYS_RESOURCE (a container) the hard limit stays: the counts that fit
        // still run, a larger one stops when vswitchd runs out of descriptors.
        eprintln!(
            "sandboxes: warning: {e}; vswitchd holds about 3 descriptors per sandbox, so a \
             count above about a third of the limit fails"
        );
    }
    let mut reports = Vec::new();
    let mut ok = true;
    for &count in &counts {
        for (label, bins) in &daemons {
            if *label == "baseline" && args.baseline_max.is_some_and(|m| count > m) {
                eprintln!("sandboxes: baseline not run at {count} (--baseline-max)");
                continue;
            }
            eprintln!("sandboxes: === {label} vswitchd, {count} sandboxes ===");
            match run(&args, bins, count, label) {
                Ok(report) => {
                    print!("{}", report.table());
                    ok &= report.ok();
                    reports.push(report);
                }
                Err(e) => {
                    if interrupted() {
                        eprintln!("sandboxes: interrupted; everything it made was removed");
                        return ExitCode::from(130);
                    }
                    eprintln!("sandboxes: {label} at {count}: {e}");
                    ok = false;
                }
            }
        }
    }
    print!("{}", summary(&reports));
    if let Some(path) = &args.json {
        let all: Vec<Value> = reports.iter().map(Report::to_json).collect();
        let text = serde_json::to_string_pretty(&Value::Array(all))
            .expect("a serde_json::Value always serialises");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("sandboxes: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("sandboxes: wrote {}", path.display());
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The median of `d[range]` (clamped to what there is), in ms.
fn median_ms(d: &[Duration], from: usize, to: usize) -> Option<f64> {
    let to = to.min(d.len());
    let from = from.min(to);
    let mut v: Vec<Duration> = d.get(from..to)?.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some(ms(v[v.len() / 2]))
}

/// Descriptors vswitchd holds per connected sandbox (its AF_PACKET port and the sandbox's
/// resolver sockets are 3), with room to spare.
const FDS_PER_SANDBOX: u64 = 4;

/// Raises this process's open-file limit, soft and hard, so that vswitchd (which inherits it
/// and raises its soft limit to the hard one) can hold `count` sandboxes: a hard limit of
/// 20,000 stops it near 6,600. Root may raise the hard limit up to `fs.nr_open`.
fn raise_fd_limit(count: u32) -> Result<(), String> {
    let want = u64::from(count) * FDS_PER_SANDBOX + 4096;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    // SAFETY: getrlimit/setrlimit read and write the local struct only.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    let have = lim.rlim_max;
    if have == libc::RLIM_INFINITY || have >= want {
        return Ok(());
    }
    let target = want.min(nr_open);
    lim.rlim_max = target;
    lim.rlim_cur = lim.rlim_cur.max(target.min(1024));
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "raising the open-file limit from {have} to {target} for {count} sandboxes: {}",
            std::io::Error::last_os_error()
        ));
    }
    eprintln!("sandboxes: open-file limit raised from {have} to {target} for {count} sandboxes");
    Ok(())
}

/// One line per run: the figures to compare across counts and daemons.
fn summary(reports: &[Report]) -> String {
    let header = [
        "vswitchd",
        "N",
        "create+connect s",
        "create p50/p99 ms",
        "connect p50/p99 ms",
        "100th connect ms",
        "Nth connect ms",
        "Nth/100th",
        "restart ms",
        "RSS KiB/sandbox",
    ];
    let mut rows = Vec::new();
    for r in reports {
        let op = |name: &str| r.ops.iter().find(|o| o.name == name);
        let pq = |o: Option<&Op>| {
            o.map_or("-".into(), |o| {
                format!("{:.2}/{:.2}", o.ms(0.5), o.ms(0.99))
            })
        };
        let n = r.connects.len();
        let at100 = median_ms(&r.connects, 90, 110);
        let last = median_ms(&r.connects, n.saturating_sub(20), n);
        let wall = r
            .walls
            .iter()
            .find(|(w, _)| w.contains("(API)") && w.contains("create"))
            .map_or("-".into(), |(_, d)| format!("{:.1}", d.as_secs_f64()));
        rows.push(vec![
            r.label.clone(),
            r.count.to_string(),
            wall,
            pq(op("sandbox create (API)")),
            pq(op("network connect (API)")),
            at100.map_or("-".into(), |v| format!("{v:.2}")),
            last.map_or("-".into(), |v| format!("{v:.2}")),
            match (at100, last) {
                (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
                _ => "-".into(),
            },
            r.restore
                .as_ref()
                .map_or("-".into(), |x| format!("{:.0}", ms(x.all_ports))),
            r.rss_per_sandbox()
                .map_or("-".into(), |v| format!("{v:.1}")),
        ]);
    }
    let mut out = String::from(
        "\nsummary (API pass; restart = kill -9 until every endpoint port is listed):\n",
    );
    out.push_str(&table(&header, &rows));
    out
}

// ---------------------------------------------------------------------------------------------
// The API socket, spoken directly.

/// One request on a fresh connection, as vswitchctl does it: the `result` on success, the
/// daemon's `error` otherwise.
fn api(socket: &Path, req: &Value) -> Result<Value> {
    let io = |what: &str, e: std::io::Error| Error::Io {
        context: format!("{what} {}", socket.display()),
        source: e,
    };
    let stream = UnixStream::connect(socket).map_err(|e| io("connecting to", e))?;
    stream
        .set_read_timeout(Some(API_TIMEOUT))
        .map_err(|e| io("setting a timeout on", e))?;
    let mut line = serde_json::to_vec(req).expect("a serde_json::Value always serialises");
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .map_err(|e| io("writing to", e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| io("reading from", e))?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| {
        Error::Unexpected(format!(
            "bad answer from vswitchd to {req} ({e}): {answer:?}"
        ))
    })?;
    if v.get("ok") == Some(&Value::Bool(true)) {
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    } else {
        Err(Error::Unexpected(format!(
            "vswitchd refused {req}: {}",
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error message")
        )))
    }
}

/// `port list`: (name, type, state) of every port.
fn port_list(socket: &Path) -> Result<Vec<(String, String, String)>> {
    let v = api(socket, &json!({"cmd": "port_list"}))?;
    let rows = v
        .as_array()
        .ok_or_else(|| Error::Unexpected(format!("port list is not a list: {v}")))?;
    Ok(rows
        .iter()
        .map(|r| {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (s("name"), s("type"), s("state"))
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The sandboxes, removed whatever happens.

/// The sandboxes made so far (a name is recorded before its `sandbox create`). On drop, each is
/// removed through the daemon while it answers, and its namespace deleted if still there.
struct Sandboxes {
    socket: PathBuf,
    names: Vec<String>,
}

impl Sandboxes {
    /// Removes one: the daemon's `sandbox_rm` if it answers (errors if it refuses), then the
    /// namespace itself if it is still there.
    fn remove(&self, name: &str) -> Result<()> {
        let mut refused = None;
        if UnixStream::connect(&self.socket).is_ok() {
            if let Err(e) = api(&self.socket, &json!({"cmd": "sandbox_rm", "name": name})) {
                refused = Some(e);
            }
        }
        if Path::new("/run/netns")
            .join(name)
            .symlink_metadata()
            .is_ok()
        {
            netns::delete(name)?;
        }
        match refused {
            Some(e) if !e.to_string().contains("no such sandbox") => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for Sandboxes {
    fn drop(&mut self) {
        if !self.names.is_empty() {
            eprintln!("sandboxes: removing {} sandboxes", self.names.len());
        }
        while let Some(name) = self.names.pop() {
            if let Err(e) = self.remove(&name) {
                eprintln!("sandboxes: cleanup: sandbox {name}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures.

/// Latencies of one kind of operation.
struct Op {
    name: String,
    hist: Histogram<u64>,
    total: Duration,
}

impl Op {
    fn new(name: String) -> Op {
        Op {
            name,
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            total: Duration::ZERO,
        }
    }

    fn record(&mut self, d: Duration) {
        self.total += d;
        self.hist
            .saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e3
    }

    fn to_json(&self) -> Value {
        json!({
            "operation": self.name,
            "count": self.hist.len(),
            "p50_ms": self.ms(0.5),
            "p99_ms": self.ms(0.99),
            "max_ms": self.hist.max() as f64 / 1e3,
            "mean_ms": self.hist.mean() / 1e3,
            "total_s": self.total.as_secs_f64(),
        })
    }
}

/// One pass: create + connect N sandboxes one way, time each step.
struct Pass {
    create: Op,
    connect: Op,
    both: Op,
    /// Each connect's time, in order.
    connects: Vec<Duration>,
    /// Wall time of the whole pass.
    wall: Duration,
}

/// vswitchd's memory and descriptors at one stage.
struct MemPoint {
    stage: String,
    rss_kib: u64,
    hwm_kib: u64,
    fds: usize,
}

/// The restore after kill -9.
struct Restore {
    /// Endpoint ports before the kill.
    ports: usize,
    /// From starting the new process until its socket accepted a connection.
    socket: Duration,
    /// From starting it until `port list` answered.
    first_answer: Duration,
    /// From starting it until `port list` showed every endpoint port.
    all_ports: Duration,
    /// Of those, how many were up at that moment.
    up: usize,
}

/// The ping check after the restore.
struct Check {
    gateway: String,
    passed: Vec<String>,
    failed: Vec<(String, String)>,
}

struct Report {
    /// Which vswitchd (`store`, `baseline`).
    label: String,
    count: u32,
    /// The API pass's connects, in order.
    connects: Vec<Duration>,
    kernel: String,
    cpus: usize,
    vswitchd: String,
    state_dir: String,
    state_fs: String,
    ops: Vec<Op>,
    walls: Vec<(String, Duration)>,
    memory: Vec<MemPoint>,
    restore: Option<Restore>,
    check: Option<Check>,
    teardown_errors: Vec<String>,
}

impl Report {
    /// VmRSS growth per sandbox over the API pass.
    fn rss_per_sandbox(&self) -> Option<f64> {
        let a = self.memory.iter().find(|m| m.stage.starts_with("fresh"))?;
        let b = self.memory.iter().find(|m| m.stage.contains("(API)"))?;
        Some((b.rss_kib as f64 - a.rss_kib as f64) / f64::from(self.count))
    }

    fn ok(&self) -> bool {
        self.restore.is_some()
            && self.check.as_ref().is_some_and(|c| c.failed.is_empty())
            && self.teardown_errors.is_empty()
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sandboxes: {} per pass; host: Linux {}, {} CPUs; vswitchd ({}) {}",
            self.count, self.kernel, self.cpus, self.label, self.vswitchd
        );
        let _ = writeln!(
            out,
            "state dir {} ({}): every API change is written (fsync) before the answer",
            self.state_dir, self.state_fs
        );
        let _ = writeln!(
            out,
            "one operation at a time; vswitchctl = a vswitchctl process per command (start-up \
             included), API = one JSON line on a fresh socket connection, in-process\n"
        );
        let header = [
            "operation",
            "count",
            "p50 ms",
            "p99 ms",
            "max ms",
            "total s",
            "ops/s",
        ];
        let mut rows: Vec<Vec<String>> = Vec::new();
        for op in &self.ops {
            let n = op.hist.len();
            rows.push(vec![
                op.name.clone(),
                n.to_string(),
                format!("{:.2}", op.ms(0.5)),
                format!("{:.2}", op.ms(0.99)),
                format!("{:.2}", op.hist.max() as f64 / 1e3),
                format!("{:.2}", op.total.as_secs_f64()),
                format!(
                    "{:.0}",
                    n as f64 / op.total.as_secs_f64().max(f64::MIN_POSITIVE)
                ),
            ]);
        }
        out.push_str(&table(&header, &rows));
        for (what, wall) in &self.walls {
            let _ = writeln!(out, "wall time, {what}: {:.2} s", wall.as_secs_f64());
        }
        let p50 = |name: &str| self.ops.iter().find(|o| o.name == name).map(|o| o.ms(0.5));
        if let (Some(ctl), Some(api)) = (p50("network ls (vswitchctl)"), p50("network ls (API)")) {
            let _ = writeln!(
                out,
                "vswitchctl process cost (network ls, alternated, p50): {ctl:.2} ms vs {api:.2} ms \
                 in-process = {:.2} ms per command",
                ctl - api
            );
        }
        if let (Some(ctl), Some(api)) = (
            p50("create + connect (vswitchctl)"),
            p50("create + connect (API)"),
        ) {
            let _ = writeln!(
                out,
                "create + connect p50: {ctl:.2} ms through vswitchctl (two commands), {api:.2} ms \
                 through the API (the passes ran one after the other: compare with the line above)"
            );
        }

        let _ = writeln!(out, "\nvswitchd memory:");
        let rows: Vec<Vec<String>> = self
            .memory
            .iter()
            .map(|m| {
                vec![
                    m.stage.clone(),
                    format!("{:.1}", m.rss_kib as f64 / 1024.0),
                    format!("{:.1}", m.hwm_kib as f64 / 1024.0),
                    m.fds.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["stage", "VmRSS MiB", "VmHWM MiB", "fds"], &rows));
        if let Some(per) = self.rss_per_sandbox() {
            let _ = writeln!(out, "per sandbox (API pass): {per:.1} KiB of VmRSS");
        }

        let _ = writeln!(out);
        match &self.restore {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "restore after kill -9 with {} endpoints: socket accepts after {:.0} ms, \
                     first `port list` answer after {:.0} ms, all {} endpoint ports listed after \
                     {:.0} ms ({} up then)",
                    r.ports,
                    ms(r.socket),
                    ms(r.first_answer),
                    r.ports,
                    ms(r.all_ports),
                    r.up
                );
            }
            None => {
                let _ = writeln!(out, "restore: not measured");
            }
        }
        match &self.check {
            Some(c) => {
                let total = c.passed.len() + c.failed.len();
                let _ = writeln!(
                    out,
                    "check after restore: {}/{total} random sandboxes ping the gateway {} ({})",
                    c.passed.len(),
                    c.gateway,
                    c.passed.join(", ")
                );
                for (name, e) in &c.failed {
                    let _ = writeln!(out, "  FAILED: {name}: {e}");
                }
            }
            None => {
                let _ = writeln!(out, "check after restore: not run");
            }
        }
        for e in &self.teardown_errors {
            let _ = writeln!(out, "teardown error: {e}");
        }
        let _ = writeln!(
            out,
            "\nnote: one run on a shared machine; latencies include the state dir's fsyncs."
        );
        out
    }

    fn to_json(&self) -> Value {
        let n = self.connects.len();
        json!({
            "vswitchd_label": self.label,
            "count": self.count,
            "connect_100th_ms": median_ms(&self.connects, 90, 110),
            "connect_nth_ms": median_ms(&self.connects, n.saturating_sub(20), n),
            "rss_kib_per_sandbox": self.rss_per_sandbox(),
            "host": { "kernel": self.kernel, "cpus": self.cpus },
            "vswitchd": self.vswitchd,
            "state_dir": self.state_dir,
            "state_dir_fs": self.state_fs,
            "operations": self.ops.iter().map(Op::to_json).collect::<Vec<_>>(),
            "wall_s": self.walls.iter().map(|(w, d)| json!({"what": w, "s": d.as_secs_f64()}))
                .collect::<Vec<_>>(),
            "memory": self.memory.iter().map(|m| json!({
                "stage": m.stage, "vm_rss_kib": m.rss_kib, "vm_hwm_kib": m.hwm_kib, "fds": m.fds,
            })).collect::<Vec<_>>(),
            "restore": self.restore.as_ref().map(|r| json!({
                "endpoint_ports": r.ports,
                "socket_ms": ms(r.socket),
                "first_answer_ms": ms(r.first_answer),
                "all_ports_ms": ms(r.all_ports),
                "ports_up_then": r.up,
            })),
            "teardown_errors": self.teardown_errors,
            "check": self.check.as_ref().map(|c| json!({
                "gateway": c.gateway,
                "passed": c.passed,
                "failed": c.failed.iter().map(|(n, e)| json!({"sandbox": n, "error": e}))
                    .collect::<Vec<_>>(),
            })),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A plain text table: first column left-aligned, the others right-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str(" | ");
            }
            let pad = " ".repeat(w.saturating_sub(c.chars().count()));
            if i == 0 {
                s.push_str(c);
                s.push_str(&pad);
            } else {
                s.push_str(&pad);
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(
        &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>()).replace(" | ", "-+-"),
    );
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// VmRSS and VmHWM (KiB) and the number of open descriptors of `pid`.
fn memory(stage: &str, pid: u32) -> Result<MemPoint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| Error::Io {
        context: format!("reading /proc/{pid}/status"),
        source: e,
    })?;
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let m = MemPoint {
        stage: stage.to_string(),
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        fds,
    };
    eprintln!(
        "sandboxes: vswitchd memory, {stage}: VmRSS {:.1} MiB, {} fds",
        m.rss_kib as f64 / 1024.0,
        m.fds
    );
    Ok(m)
}

/// The filesystem type of the mount holding `path` (from /proc/self/mounts).
fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && path.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, t)| t)
}

/// A small xorshift generator: enough to pick sandboxes to check, no dependency.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift(t ^ u64::from(std::process::id()).rotate_left(32) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// How a pass talks to the daemon.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Vswitchctl,
    Api,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Vswitchctl => "vswitchctl",
            Via::Api => "API",
        }
    }
}

fn run(args: &Args, bins: &VswitchBins, count: u32, label: &str) -> Result<Report> {
    let prefix = run_prefix();
    // Declared in the order they are made: dropped in reverse (sandboxes, daemon, namespace,
    // directory), also on an early return.
    let dir = TempDir::create(std::env::temp_dir().join(&prefix))?;
    let ns = Netns::create(&format!("{prefix}-sbx"))?;
    let socket = dir.path().join("vswitchd.sock");
    let state_dir = dir.path().join("state");
    eprintln!("sandboxes: starting vswitchd in netns {}", ns.name());
    let mut daemon = spawn_vswitchd_in(
        ns.name(),
        bins,
        &socket,
        &state_dir,
        &dir.path().join("vswitchd.log"),
    )?;
    let mut sandboxes = Sandboxes {
        socket: socket.clone(),
        names: Vec::new(),
    };
    wait_until("vswitchd to answer `port list`", API_TIMEOUT, || {
        daemon.check_running()?;
        Ok(port_list(&socket).is_ok())
    })?;

    let mut report = Report {
        label: label.to_string(),
        count,
        connects: Vec::new(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        vswitchd: bins.vswitchd.display().to_string(),
        state_dir: state_dir.display().to_string(),
        state_fs: fs_type(dir.path()),
        ops: Vec::new(),
        walls: Vec::new(),
        memory: Vec::new(),
        restore: None,
        check: None,
        teardown_errors: Vec::new(),
    };
    report.memory.push(memory("fresh start", daemon.pid())?);

    // What a vswitchctl process costs by itself: the same read-only request (`network ls`,
    // constant work) through vswitchctl and in-process, alternately so that a change of load
    // on the machine hits both alike.
    if !args.api_only {
        let (ctl_ls, api_ls) = request_overhead(count, bins, &socket)?;
        report.ops.extend([ctl_ls, api_ls]);

        // Pass 1: vswitchctl, then remove them the same way.
        let pass = create_pass(
            Via::Vswitchctl,
            count,
            &prefix,
            bins,
            &socket,
            &mut sandboxes,
        )?;
        report.memory.push(memory(
            &format!("{count} sandboxes (vswitchctl)"),
            daemon.pid(),
        )?);
        push_pass(&mut report, Via::Vswitchctl, pass);
        let rm = remove_all(Via::Vswitchctl, bins, &socket, &mut sandboxes)?;
        report
            .walls
            .push(("sandbox rm (vswitchctl)".into(), rm.total));
        report.ops.push(rm);
        report
            .memory
            .push(memory("after removing them", daemon.pid())?);
    }

    // Pass 2: the API socket; these stay for the restore.
    let mut pass = create_pass(Via::Api, count, &prefix, bins, &socket, &mut sandboxes)?;
    report
        .memory
        .push(memory(&format!("{count} sandboxes (API)"), daemon.pid())?);
    report.connects = std::mem::take(&mut pass.connects);
    push_pass(&mut report, Via::Api, pass);

    // Restore after kill -9.
    let before: BTreeSet<String> = port_list(&socket)?
        .into_iter()
        .filter(|(_, kind, _)| kind == "system")
        .map(|(name, _, _)| name)
        .collect();
    if before.len() != count as usize {
        return Err(Error::Unexpected(format!(
            "{} endpoint ports before the kill, expected {}",
            before.len(),
            count
        )));
    }
    check_interrupt()?;
    eprintln!(
        "sandboxes: kill -9 vswitchd (pid {}), restarting it",
        daemon.pid()
    );
    daemon.kill()?;
    let start = Instant::now();
    daemon = spawn_vswitchd_in(
        ns.name(),
        bins,
        &socket,
        &state_dir,
        &dir.path().join("vswitchd.restart.log"),
    )?;
    let socket_up = start.elapsed();
    let mut first_answer = None;
    let mut up = 0;
    wait_until(
        &format!("the {} endpoint ports after the restart", before.len()),
        RESTORE_TIMEOUT,
        || {
            daemon.check_running()?;
            let Ok(ports) = port_list(&socket) else {
                return Ok(false);
            };
            first_answer.get_or_insert_with(|| start.elapsed());
            let present = ports
                .iter()
                .filter(|(name, _, _)| before.contains(name))
                .count();
            up = ports
                .iter()
                .filter(|(name, _, state)| before.contains(name) && state == "up")
                .count();
            Ok(present == before.len())
        },
    )?;
    let all_ports = start.elapsed();
    report.restore = Some(Restore {
        ports: before.len(),
        socket: socket_up,
        first_answer: first_answer.unwrap_or(all_ports),
        all_ports,
        up,
    });
    eprintln!(
        "sandboxes: restored: all {} endpoint ports after {:.0} ms",
        before.len(),
        ms(all_ports)
    );
    report.memory.push(memory("after restore", daemon.pid())?);

    // Correctness: a few sandboxes reach the gateway through the restarted daemon.
    report.check = Some(ping_check(args.check, &socket, &sandboxes)?);

    // Remove the API pass's sandboxes through the API (timed); the guards see nothing left.
    let rm = remove_all(Via::Api, bins, &socket, &mut sandboxes)?;
    report.walls.push(("sandbox rm (API)".into(), rm.total));
    report.ops.push(rm);
    // The rest goes with the guards; here so that a failure is reported.
    let mut ns = ns;
    let mut dir = dir;
    for (what, r) in [
        ("stopping vswitchd", daemon.stop()),
        ("deleting the namespace", ns.release()),
        ("removing the temp dir", dir.release()),
    ] {
        if let Err(e) = r {
            report.teardown_errors.push(format!("{what}: {e}"));
        }
    }
    Ok(report)
}

/// `count` × `network ls` through vswitchctl and through the API, alternately.
fn request_overhead(count: u32, bins: &VswitchBins, socket: &Path) -> Result<(Op, Op)> {
    let mut ctl = Op::new("network ls (vswitchctl)".into());
    let mut api_op = Op::new("network ls (API)".into());
    eprintln!("sandboxes: {count} × network ls, through vswitchctl and the API alternately");
    for _ in 0..count {
        check_interrupt()?;
        let t0 = Instant::now();
        vswitchctl(bins, socket, &["network", "ls"])?;
        ctl.record(t0.elapsed());
        let t0 = Instant::now();
        api(socket, &json!({"cmd": "network_ls"}))?;
        api_op.record(t0.elapsed());
    }
    Ok((ctl, api_op))
}

fn push_pass(report: &mut Report, via: Via, pass: Pass) {
    report.walls.push((
        format!("{} × create + connect ({})", report.count, via.label()),
        pass.wall,
    ));
    report.ops.extend([pass.create, pass.connect, pass.both]);
}

/// Creates `count` sandboxes `PREFIX-c<i>` (vswitchctl) or `PREFIX-a<i>` (API) and connects
/// each to `bridge`, one after the other, timing each step.
fn create_pass(
    via: Via,
    count: u32,
    prefix: &str,
    bins: &VswitchBins,
    socket: &Path,
    sandboxes: &mut Sandboxes,
) -> Result<Pass> {
    let tag = via.label();
    let mut pass = Pass {
        create: Op::new(format!("sandbox create ({tag})")),
        connect: Op::new(format!("network connect ({tag})")),
        both: Op::new(format!("create + connect ({tag})")),
        connects: Vec::with_capacity(count as usize),
        wall: Duration::ZERO,
    };
    eprintln!("sandboxes: creating and connecting {count} sandboxes through {tag}");
    let letter = if via == Via::Api { 'a' } else { 'c' };
    let started = Instant::now();
    for i in 0..count {
        check_interrupt()?;
        let name = format!("{prefix}-{letter}{i}");
        sandboxes.names.push(name.clone());
        let t0 = Instant::now();
        match via {
            Via::Vswitchctl => vswitchctl(bins, socket, &["sandbox", "create", &name]).map(drop),
            Via::Api => api(socket, &json!({"cmd": "sandbox_create", "name": name})).map(drop),
        }?;
        let t1 = Instant::now();
        let out = match via {
            Via::Vswitchctl => {
                let text = vswitchctl(
                    bins,
                    socket,
                    &["--json", "network", "connect", "bridge", &name],
                )?;
                serde_json::from_str(&text).unwrap_or(Value::Null)
            }
            Via::Api => api(
                socket,
                &json!({"cmd": "network_connect", "network": "bridge", "sandbox": name}),
            )?,
        };
        let t2 = Instant::now();
        if out.get("ipv4").and_then(Value::as_str).is_none() {
            return Err(Error::Unexpected(format!(
                "network connect bridge {name}: no \"ipv4\" in the answer: {out}"
            )));
        }
        pass.create.record(t1 - t0);
        pass.connect.record(t2 - t1);
        pass.connects.push(t2 - t1);
        pass.both.record(t2 - t0);
        if (i + 1) % 500 == 0 {
            eprintln!("sandboxes:   {} / {count}", i + 1);
        }
    }
    pass.wall = started.elapsed();
    Ok(pass)
}

/// Removes every sandbox in `sandboxes` (`sandbox rm`, the way `via` says), timing each.
fn remove_all(
    via: Via,
    bins: &VswitchBins,
    socket: &Path,
    sandboxes: &mut Sandboxes,
) -> Result<Op> {
    let mut op = Op::new(format!("sandbox rm ({})", via.label()));
    eprintln!(
        "sandboxes: removing {} sandboxes through {}",
        sandboxes.names.len(),
        via.label()
    );
    while let Some(name) = sandboxes.names.last().cloned() {
        check_interrupt()?;
        let t0 = Instant::now();
        match via {
            Via::Vswitchctl => vswitchctl(bins, socket, &["sandbox", "rm", &name]).map(drop),
            Via::Api => api(socket, &json!({"cmd": "sandbox_rm", "name": name})).map(drop),
        }?;
        op.record(t0.elapsed());
        if Path::new("/run/netns")
            .join(&name)
            .symlink_metadata()
            .is_ok()
        {
            return Err(Error::Unexpected(format!(
                "sandbox rm {name}: /run/netns/{name} is still there"
            )));
        }
        sandboxes.names.pop();
    }
    Ok(op)
}

/// Pings the `bridge` network's gateway from `k` sandboxes picked at random (each gets
/// [`PING_TIMEOUT`] to answer: ARP and the restarted datapath may take a moment).
fn ping_check(k: u32, socket: &Path, sandboxes: &Sandboxes) -> Result<Check> {
    let inspect = api(socket, &json!({"cmd": "network_inspect", "name": "bridge"}))?;
    let net = inspect.get(0).unwrap_or(&inspect);
    let gateway = net
        .pointer("/IPAM/Config/0/Gateway")
        .and_then(Value::as_str)
        .unwrap_or("172.17.0.1")
        .to_string();
    let mut rng = XorShift::seeded();
    let mut pool = sandboxes.names.clone();
    let mut picked = Vec::new();
    for _ in 0..k.min(pool.len() as u32) {
        let i = (rng.next() % pool.len() as u64) as usize;
        picked.push(pool.swap_remove(i));
    }
    picked.sort();
    eprintln!(
        "sandboxes: checking that {} ping {gateway}",
        picked.join(", ")
    );
    let mut check = Check {
        gateway: gateway.clone(),
        passed: Vec::new(),
        failed: Vec::new(),
    };
    for name in picked {
        let r = wait_until(&format!("{name} to ping {gateway}"), PING_TIMEOUT, || {
            succeeds(in_netns(&name, "ping").args(["-c", "1", "-W", "1", "-q", &gateway]))
        });
        match r {
            Ok(()) => check.passed.push(name),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => check.failed.push((name, e.to_string())),
        }
    }
    Ok(check)
}
