//! The results: a table for people (stdout) and the same figures as JSON (`--json FILE`).
//! Ratios are taken against the kernel bridge measured in the same run.

use super::measure::{
    Carried, Latency, Tcp, Udp, LOSS_TOLERANCE_PERCENT, SEARCH_TRIALS, UDP_FRAME_WITH_FCS,
    UDP_PAYLOAD, UDP_SOCKET_BUFFER, WARMUP_ROUNDS,
};
use super::rfc2544::{self, Rfc2544, LOAD_PERCENTS};
use super::stalls::CpuStalls;
use super::switches::Variant;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// What happened to one variant.
#[derive(Debug)]
pub enum Outcome {
    /// Not run (e.g. Open vSwitch not installed); the message says why.
    Skipped(String),
    /// The topology could not be built.
    Failed(String),
    /// Built and measured; each measurement may still have failed on its own.
    Measured(Box<Measured>),
}

/// What a figure holds when `--tests` left its test out: shown as "-", not an error.
pub const NOT_SELECTED: &str = "not selected";

/// Whether a figure failed (one left out on purpose did not).
fn failed<T>(r: &Result<T, String>) -> bool {
    matches!(r, Err(e) if e != NOT_SELECTED)
}

/// The three figures of one variant.
#[derive(Debug)]
pub struct Measured {
    /// TCP throughput.
    pub tcp: Result<Tcp, String>,
    /// 64-byte UDP packet rate at full blast.
    pub udp: Result<Udp, String>,
    /// The highest 64-byte UDP rate carried with under 1% loss.
    pub udp_carried: Result<Carried, String>,
    /// Round-trip latency.
    pub latency: Result<Latency, String>,
    /// RFC 2544 throughput and latency under load, with the blaster and sink of our own.
    pub rfc2544: Result<Rfc2544, String>,
    /// Remarks from the setup.
    pub notes: Vec<String>,
}

/// One row of the table.
#[derive(Debug)]
pub struct Row {
    /// The switch.
    pub variant: Variant,
    /// Its name in this scenario's table.
    pub label: String,
    /// What happened.
    pub outcome: Outcome,
    /// Anything that could not be removed afterwards.
    pub teardown_errors: Vec<String>,
}

impl Row {
    fn measured(&self) -> Option<&Measured> {
        match &self.outcome {
            Outcome::Measured(m) => Some(m),
            _ => None,
        }
    }

    fn tcp(&self) -> Option<&Tcp> {
        self.measured().and_then(|m| m.tcp.as_ref().ok())
    }

    fn udp(&self) -> Option<&Udp> {
        self.measured().and_then(|m| m.udp.as_ref().ok())
    }

    fn carried(&self) -> Option<&Carried> {
        self.measured().and_then(|m| m.udp_carried.as_ref().ok())
    }

    fn rfc2544(&self) -> Option<&Rfc2544> {
        self.measured().and_then(|m| m.rfc2544.as_ref().ok())
    }

    /// Whether something went wrong (a skip is not an error).
    pub fn has_error(&self) -> bool {
        !self.teardown_errors.is_empty()
            || match &self.outcome {
                Outcome::Skipped(_) => false,
                Outcome::Failed(_) => true,
                Outcome::Measured(m) => {
                    failed(&m.tcp)
                        || failed(&m.udp)
                        || failed(&m.udp_carried)
                        || failed(&m.latency)
                        || failed(&m.rfc2544)
                }
            }
    }
}

/// Facts about the machine, recorded with the figures.
#[derive(Debug, Clone, Default)]
pub struct HostInfo {
    /// `uname -r`.
    pub kernel: String,
    /// CPUs available to the harness.
    pub cpus: usize,
    /// `ovs-vswitchd --version`, if installed.
    pub ovs_version: Option<String>,
    /// The vswitchd binary measured.
    pub vswitchd: Option<String>,
}

/// The whole run.
#[derive(Debug)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The scenario's one-line description.
    pub topology: String,
    /// Seconds per iperf3 test.
    pub duration_s: u32,
    /// Recorded ping-pong round trips per variant.
    pub rtt_rounds: u32,
    /// The machine.
    pub host: HostInfo,
    /// What the traffic goes from and to ("h1 → h2").
    pub path: String,
    /// How the RFC 2544 measurement ran, when it was selected.
    pub rfc2544: Option<rfc2544::Config>,
    /// The blaster alone into a veth that drops everything, thousand datagrams per second (or why not).
    pub blaster_kpps: Option<Result<f64, String>>,
    /// The machine's own stalls per CPU, measured with the blaster's ceiling (or why not).
    pub stalls: Option<Result<Vec<CpuStalls>, String>>,
    /// One per selected variant, in table order.
    pub rows: Vec<Row>,
}

/// The note printed under the table and stored in the JSON.
pub const NOTE: &str = "one run per variant on a shared machine, nothing pinned: the absolute \
numbers move from run to run and machine to machine; the ratios to the kernel bridge measured in \
the same run are the meaningful figures.";

impl Report {
    fn kernel(&self) -> Option<&Row> {
        self.rows.iter().find(|r| r.variant == Variant::Kernel)
    }

    fn tcp_ratio(&self, row: &Row) -> Option<f64> {
        ratio(row.tcp()?.gbps, self.kernel()?.tcp()?.gbps)
    }

    fn udp_ratio(&self, row: &Row) -> Option<f64> {
        ratio(row.udp()?.kpps, self.kernel()?.udp()?.kpps)
    }

    fn carried_ratio(&self, row: &Row) -> Option<f64> {
        ratio(
            row.carried()?.best.kpps,
            self.kernel()?.carried()?.best.kpps,
        )
    }

    /// The under-1 % rate of the RFC 2544 measurement against the kernel's.
    fn rfc_ratio(&self, row: &Row) -> Option<f64> {
        ratio(
            row.rfc2544()?.carried_kpps()?,
            self.kernel()?.rfc2544()?.carried_kpps()?,
        )
    }

    /// The p99 one-way latency at `percent` % of the carried rate against the kernel's at
    /// `percent` % of its own.
    fn p99_ratio_at(&self, row: &Row, percent: u32) -> Option<f64> {
        ratio(
            row.rfc2544()?.at(percent)?.latency.p99_us,
            self.kernel()?.rfc2544()?.at(percent)?.latency.p99_us,
        )
    }

    /// The p99 one-way latency at 90 % of the carried rate against the kernel's (issue 18).
    fn p99_at_90_ratio(&self, row: &Row) -> Option<f64> {
        self.p99_ratio_at(row, 90)
    }

    /// Every ratio to the kernel this run measured, row by row (the kernel's own row left
    /// out): the figures a summary over several rounds takes the median of.
    pub fn ratio_figures(&self) -> Vec<RatioFigure> {
        let measures: [(&'static str, RatioOf); 5] = [
            ("TCP", Report::tcp_ratio),
            ("UDP 64 B full blast", Report::udp_ratio),
            ("UDP 64 B carried (iperf3)", Report::carried_ratio),
            ("RFC 2544 < 1 % loss rate", Report::rfc_ratio),
            ("RFC 2544 p99 at 90 %", Report::p99_at_90_ratio),
        ];
        let mut out = Vec::new();
        for row in self.rows.iter().filter(|r| r.variant != Variant::Kernel) {
            for (what, of) in measures {
                if let Some(ratio) = of(self, row) {
                    out.push(RatioFigure {
                        scenario: self.scenario.clone(),
                        label: row.label.clone(),
                        what,
                        ratio,
                    });
                }
            }
        }
        out
    }

    /// The RFC 2544 table, if that measurement was selected; its errors go to `errors`.
    fn rfc2544_table(&self, errors: &mut Vec<String>) -> Option<String> {
        let cfg = self.rfc2544.as_ref()?;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "RFC 2544, blaster and sink of our own ({p}-byte payloads, {f}-byte frames): trials \
             of {t} s paced with sendmmsg, each datagram numbered and time-stamped \
             (CLOCK_MONOTONIC), received with recvmmsg; a trial ends {dr} s after its last send \
             (RFC 2544 § 26.1) or when all have arrived, and every datagram not received by \
             then is lost. Throughput: the highest offered rate with 0 % and with < 1 % loss, \
             by bisection from {max:.0} kpps (≤ {s} + {z} trials; ≥: the top rate passed, \
             the sender's limit). Latency: one-way, of every datagram received, at 50 / 90 / \
             100 % of each switch's own < 1 % rate. iperf3 carried kpps: from the first table; \
             iperf3 counts no loss after the last datagram it received.",
            p = UDP_PAYLOAD,
            f = UDP_FRAME_WITH_FCS,
            t = cfg.trial.as_secs_f64(),
            dr = cfg.drain.as_secs_f64(),
            max = cfg.max_pps / 1e3,
            s = cfg.steps,
            z = cfg.zero_steps,
        );
        match &self.blaster_kpps {
            Some(Ok(k)) => {
                let times = self
                    .kernel()
                    .and_then(Row::rfc2544)
                    .and_then(Rfc2544::carried_kpps)
                    .and_then(|kernel| ratio(*k, kernel))
                    .map_or(String::new(), |r| {
                        format!(", {r:.1}× the kernel bridge's < 1 % rate")
                    });
                let _ = writeln!(
                    out,
                    "The blaster alone (no switch, no receiver: into a veth whose peer drops \
                     every frame) offers {k:.1} kpps{times}."
                );
            }
            Some(Err(e)) => errors.push(format!("the blaster's own ceiling: {e}")),
            None => {}
        }
        match &self.stalls {
            Some(Ok(cpus)) => {
                let each: Vec<String> = cpus
                    .iter()
                    .map(|s| {
                        format!(
                            "CPU {} lost {} times, {:.1} ms in all ({:.2} %), longest {:.1} ms",
                            s.cpu,
                            s.count,
                            s.total_ms,
                            s.percent(),
                            s.longest_ms
                        )
                    })
                    .collect();
                let spun = cpus.iter().map(|s| s.spun_s).fold(0.0, f64::max);
                let _ = writeln!(
                    out,
                    "The machine's own stalls (a thread spinning on each CPU for {spun:.1} s, gaps \
                     of 1 ms or more): {}. A frame waits out such a gap when the thread that \
                     forwards it is on that CPU, as a user-space datapath's is; the kernel bridge \
                     forwards inside the sender's system call.",
                    each.join("; ")
                );
            }
            Some(Err(e)) => errors.push(format!("the machine's own stalls: {e}")),
            None => {}
        }
        let _ = writeln!(out);
        let header = [
            "variant",
            "0 % loss kpps",
            "< 1 % loss kpps",
            "× kernel",
            "iperf3 carried kpps",
            "trials",
        ];
        let load_header = [
            "variant",
            "load",
            "offered kpps",
            "loss %",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "p99 × kernel",
            "p99 read µs",
        ];
        let cpu_header = [
            "variant",
            "load",
            "blaster",
            "sink",
            "switch",
            "ksoftirqd",
            "whole machine",
            "machine busy %",
        ];
        let mut lines = Vec::new();
        let mut load_lines = Vec::new();
        let mut cpu_lines = Vec::new();
        for row in &self.rows {
            let label = row.label.clone();
            let m = match &row.outcome {
                Outcome::Measured(m) => m,
                Outcome::Skipped(why) => {
                    lines.push(Line::Span(label, why.clone()));
                    continue;
                }
                Outcome::Failed(_) => {
                    lines.push(Line::Span(label, "failed (see below)".into()));
                    continue;
                }
            };
            let r = match &m.rfc2544 {
                Ok(r) => r,
                Err(e) => {
                    if e != NOT_SELECTED {
                        errors.push(format!("{label}: RFC 2544: {e}"));
                    }
                    lines.push(Line::Span(label, format!("error: {e}")));
                    continue;
                }
            };
            let kpps = |k: Option<f64>, floor: bool| {
                k.map_or("none".to_string(), |k| {
                    format!("{}{k:.1}", if floor { "≥ " } else { "" })
                })
            };
            let zero_floor = r.at_ceiling && r.zero_loss_kpps() == r.carried_kpps();
            lines.push(Line::Cells(vec![
                label.clone(),
                kpps(r.zero_loss_kpps(), zero_floor),
                kpps(r.carried_kpps(), r.at_ceiling),
                fmt_ratio(self.rfc_ratio(row)),
                row.carried().map_or("-".into(), |c| {
                    format!(
                        "{}{:.1}",
                        if c.sender_limited { "≥ " } else { "" },
                        c.best.kpps
                    )
                }),
                r.trials.len().to_string(),
            ]));
            for p in LOAD_PERCENTS {
                let Some(t) = r.at(p) else {
                    load_lines.push(Line::Span(label.clone(), format!("{p} %: not measured")));
                    continue;
                };
                let l = &t.latency;
                load_lines.push(Line::Cells(vec![
                    label.clone(),
                    format!("{p} %"),
                    format!("{:.1}", t.offered_pps / 1e3),
                    format!("{:.2}", t.seq.loss_ratio() * 100.0),
                    format!("{:.1}", l.p50_us),
                    format!("{:.1}", l.p99_us),
                    format!("{:.1}", l.p999_us),
                    format!("{:.1}", l.max_us),
                    fmt_ratio(self.p99_ratio_at(row, p)),
                    format!("{:.1}", t.read_latency.p99_us),
                ]));
                let c = &t.cpu;
                let us = |s: f64| {
                    format!(
                        "{:.2}",
                        super::blast::TrialCpu::per_datagram_us(s, t.seq.received)
                    )
                };
                cpu_lines.push(Line::Cells(vec![
                    label.clone(),
                    format!("{p} %"),
                    us(c.blaster_s),
                    us(c.sink_s),
                    c.switch_s.map_or("-".into(), us),
                    us(c.softirqd_s),
                    us(c.machine_busy_s),
                    format!("{:.0} of {}", c.percent(c.machine_busy_s), 100 * c.cpus),
                ]));
            }
        }
        out.push_str(&grid(&header, &lines));
        if !load_lines.is_empty() {
            let _ = writeln!(
                out,
                "\nOne-way latency under load (each switch at a share of its own < 1 % rate), \
                 to the datagram's arrival at the sink's interface (the kernel's receive time \
                 stamp, SO_TIMESTAMPNS: RFC 1242's latency ends when the frame is seen on the \
                 output port); p99 read: to the moment the sink read it, adding the wait for the \
                 sink thread to run:\n"
            );
            out.push_str(&grid(&load_header, &load_lines));
            let _ = writeln!(
                out,
                "\nWhere the CPU goes in those trials, µs of CPU per datagram received (blaster \
                 and sink: their threads' own clocks, which include the kernel work done inside \
                 their system calls, for the kernel bridge the whole forwarding path; switch: its \
                 daemon; whole machine: every CPU's busy time, /proc/stat); machine busy: percent \
                 of one CPU from the first send to the last arrival:\n"
            );
            out.push_str(&grid(&cpu_header, &cpu_lines));
        }
        Some(out)
    }

    /// Whether any variant failed, partly or wholly.
    pub fn has_errors(&self) -> bool {
        self.rows.iter().any(Row::has_error)
    }

    /// The table, the targets from DESIGN.md, the errors and the notes.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario {}: {}", self.scenario, self.topology);
        let _ = writeln!(
            out,
            "host: Linux {}, {} CPUs{}",
            self.host.kernel,
            self.host.cpus,
            self.host
                .ovs_version
                .as_ref()
                .map_or(String::new(), |v| format!(", {v}"))
        );
        let _ = writeln!(
            out,
            "TCP: iperf3, 1 stream, {d} s, {path}, what the receiver got.\n\
             UDP 64B: iperf3 -u -l {p} -w {buf}, {d} s: {p}-byte payloads make {f}-byte frames \
             counting the FCS ({f0} on the veth); kpps = datagrams received per second, \
             loss = sent but never received. Full blast: -b 0. Carried (< {tol}% loss): the \
             highest offered rate received with under {tol}% loss, by bisection over -b in up \
             to {trials} more runs (RFC 2544 throughput, {tol}% tolerance); ≥: no run lost \
             {tol}% and iperf3, pacing itself, sent less than asked: a floor.\n\
             RTT: {n} UDP round trips of {p}-byte payloads, one in flight, after {w} unrecorded.\n\
             CPU/Gbit: during the TCP test, percent of one CPU taken by both iperf3 ends, the \
             switch's daemons and the ksoftirqd threads, per Gbit/s received (- : not tracked).",
            d = self.duration_s,
            path = self.path,
            p = UDP_PAYLOAD,
            f = UDP_FRAME_WITH_FCS,
            f0 = UDP_FRAME_WITH_FCS - 4,
            buf = UDP_SOCKET_BUFFER,
            tol = LOSS_TOLERANCE_PERCENT,
            trials = SEARCH_TRIALS,
            n = self.rtt_rounds,
            w = WARMUP_ROUNDS,
        );
        let _ = writeln!(out);
        let header = [
            "variant",
            "TCP Gbit/s",
            "× kernel",
            "CPU % per Gbit/s",
            "UDP 64B full blast kpps",
            "loss %",
            "carried kpps",
            "× kernel",
            "RTT p50 / p99 / p99.9 µs",
        ];
        let mut lines = Vec::new();
        let mut errors = Vec::new();
        for row in &self.rows {
            let label = row.label.clone();
            let m = match &row.outcome {
                Outcome::Skipped(why) => {
                    lines.push(Line::Span(label, why.clone()));
                    continue;
                }
                Outcome::Failed(e) => {
                    errors.push(format!("{label}: {e}"));
                    lines.push(Line::Span(label, "failed (see below)".into()));
                    continue;
                }
                Outcome::Measured(m) => m,
            };
            let mut err = |what: &str, e: &String| {
                if e == NOT_SELECTED {
                    return "-".to_string();
                }
                errors.push(format!("{label}: {what}: {e}"));
                "error".to_string()
            };
            let tcp = match &m.tcp {
                Ok(t) => format!("{:.2}", t.gbps),
                Err(e) => err("TCP", e),
            };
            let cpu = match &m.tcp {
                Ok(t) => t
                    .cpu
                    .filter(|_| t.gbps > 0.0)
                    .map_or("-".into(), |c| format!("{:.0}", c.total() / t.gbps)),
                Err(_) => "-".into(),
            };
            let (udp, loss) = match &m.udp {
                Ok(u) => (format!("{:.1}", u.kpps), format!("{:.1}", u.lost_percent)),
                Err(e) => (err("UDP", e), "-".into()),
            };
            let carried = match &m.udp_carried {
                Ok(c) if c.sender_limited => format!("≥ {:.1}", c.best.kpps),
                Ok(c) => format!("{:.1}", c.best.kpps),
                Err(e) => err("UDP carried", e),
            };
            let rtt = match &m.latency {
                Ok(l) => format!("{:.1} / {:.1} / {:.1}", l.p50_us, l.p99_us, l.p999_us),
                Err(e) => err("RTT", e),
            };
            lines.push(Line::Cells(vec![
                label,
                tcp,
                fmt_ratio(self.tcp_ratio(row)),
                cpu,
                udp,
                loss,
                carried,
                fmt_ratio(self.carried_ratio(row)),
                rtt,
            ]));
            for e in &row.teardown_errors {
                errors.push(format!("{}: teardown: {e}", row.label));
            }
        }
        out.push_str(&grid(&header, &lines));
        if let Some(rfc) = self.rfc2544_table(&mut errors) {
            out.push('\n');
            out.push_str(&rfc);
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(out, "\ntargets (DESIGN.md):");
            for t in &targets {
                let _ = writeln!(
                    out,
                    "  [{}] {}: {}",
                    if t.met { "met" } else { "NOT met" },
                    t.what,
                    t.value
                );
            }
        }
        for row in &self.rows {
            if let Some(m) = row.measured() {
                for n in &m.notes {
                    let _ = writeln!(out, "note: {}: {n}", row.label);
                }
            }
        }
        if !errors.is_empty() {
            let _ = writeln!(out, "\nerrors:");
            for e in &errors {
                let _ = writeln!(out, "  {e}");
            }
        }
        let _ = writeln!(out, "\nnote: {NOTE}");
        out
    }

    /// The performance targets of DESIGN.md this scenario can check.
    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let Some(vs) = self.rows.iter().find(|r| r.variant == Variant::Vswitchd) else {
            return t;
        };
        if self.scenario == "overlay" {
            // DESIGN.md sets one target across hosts: TCP over VXLAN.
            if let Some(r) = self.tcp_ratio(vs) {
                t.push(Target {
                    what: "TCP across two vswitchd hosts over VXLAN ≥ 0.7× two kernel bridges \
                           joined by kernel VXLAN"
                        .into(),
                    value: format!("{r:.2}×"),
                    met: r >= 0.7,
                });
            }
            return t;
        }
        if let Some(r) = self.tcp_ratio(vs) {
            t.push(Target {
                what: "TCP through vswitchd ≥ 0.7× the kernel bridge".into(),
                value: format!("{r:.2}×"),
                met: r >= 0.7,
            });
        }
        if let Some(vs_tcp) = vs.tcp() {
            let ovs_best = self
                .rows
                .iter()
                .filter(|r| r.variant.is_ovs())
                .filter_map(Row::tcp)
                .map(|t| t.gbps)
                .fold(None, |a: Option<f64>, g| Some(a.map_or(g, |a| a.max(g))));
            if let Some(best) = ovs_best {
                t.push(Target {
                    what: "TCP through vswitchd ahead of Open vSwitch userspace".into(),
                    value: format!("{:.2} vs {best:.2} Gbit/s", vs_tcp.gbps),
                    met: vs_tcp.gbps > best,
                });
            }
        }
        if let (Some(r), Some(rfc)) = (self.rfc_ratio(vs), vs.rfc2544()) {
            t.push(Target {
                what: "64-byte UDP through vswitchd ≥ 0.9× the kernel bridge, under 1% loss \
                       (RFC 2544, every datagram counted)"
                    .into(),
                value: format!(
                    "{r:.2}× ({:.1} kpps{})",
                    rfc.carried_kpps().unwrap_or(0.0),
                    if rfc.at_ceiling {
                        "; passed at the top rate tried: a floor"
                    } else {
                        ""
                    }
                ),
                met: r >= 0.9,
            });
        }
        if let (Some(r), Some(at)) = (
            self.p99_at_90_ratio(vs),
            vs.rfc2544().and_then(|x| x.at(90)),
        ) {
            t.push(Target {
                what: "one-way p99 through vswitchd at 90% of its carried rate within 2× the \
                       kernel bridge's at 90% of its own"
                    .into(),
                value: format!("{r:.2}× ({:.1} µs)", at.latency.p99_us),
                met: r <= 2.0,
            });
        }
        if let (Some(r), Some(c)) = (self.carried_ratio(vs), vs.carried()) {
            t.push(Target {
                what: "64-byte UDP through vswitchd ≥ 0.9× the kernel bridge, under 1% loss \
                       (iperf3's receiver count)"
                    .into(),
                value: format!(
                    "{r:.2}× ({:.1} kpps carried at {:.2}% loss{})",
                    c.best.kpps,
                    c.best.lost_percent,
                    if c.sender_limited {
                        "; sender-limited: no trial lost 1%, iperf3 offered less than asked, \
                         so this is a floor"
                    } else {
                        ""
                    }
                ),
                met: r >= 0.9 && c.best.lost_percent < LOSS_TOLERANCE_PERCENT,
            });
        }
        t
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut v = json!({
                    "variant": row.variant.key(),
                    "label": row.label,
                    "teardown_errors": row.teardown_errors,
                });
                match &row.outcome {
                    Outcome::Skipped(why) => {
                        v["status"] = json!("skipped");
                        v["reason"] = json!(why);
                    }
                    Outcome::Failed(e) => {
                        v["status"] = json!("failed");
                        v["error"] = json!(e);
                    }
                    Outcome::Measured(m) => {
                        v["status"] = json!(if row.has_error() { "partial" } else { "ok" });
                        v["tcp"] = match &m.tcp {
                            Ok(t) => json!({
                                "gbps": t.gbps,
                                "ratio_to_kernel": self.tcp_ratio(row),
                                "retransmits": t.retransmits,
                                "cpu_percent": t.cpu.map(|c| json!({
                                    "iperf3_both_ends": c.iperf3,
                                    "switch_daemons": c.switch,
                                    "ksoftirqd": c.softirqd,
                                    "total": c.total(),
                                    "per_gbps": c.total() / t.gbps.max(f64::EPSILON),
                                })),
                            }),
                            Err(e) => json!({ "error": e }),
                        };
                        v["udp_64b"] = match &m.udp {
                            Ok(u) => json!({
                                "kpps": u.kpps,
                                "ratio_to_kernel": self.udp_ratio(row),
                                "received_packets": u.received,
                                "sent_packets": u.sent,
                                "lost_percent": u.lost_percent,
                                "offered_kpps": u.offered_kpps,
                            }),
                            Err(e) => json!({ "error": e }),
                        };
                        v["udp_64b_carried"] = match &m.udp_carried {
                            Ok(c) => json!({
                                "kpps": c.best.kpps,
                                "ratio_to_kernel": self.carried_ratio(row),
                                "offered_kpps": c.best.offered_kpps,
                                "lost_percent": c.best.lost_percent,
                                "trials": c.trials,
                                "sender_limited": c.sender_limited,
                            }),
                            Err(e) => json!({ "error": e }),
                        };
                        v["rtt_us"] = match &m.latency {
                            Ok(l) => json!({
                                "p50": l.p50_us,
                                "p99": l.p99_us,
                                "p99_9": l.p999_us,
                                "min": l.min_us,
                                "mean": l.mean_us,
                                "max": l.max_us,
                                "samples": l.samples,
                                "lost": l.lost,
                            }),
                            Err(e) => json!({ "error": e }),
                        };
                        v["rfc2544"] = match &m.rfc2544 {
                            Ok(r) => json!({
                                "zero_loss_kpps": r.zero_loss_kpps(),
                                "under_1_percent_kpps": r.carried_kpps(),
                                "ratio_to_kernel": self.rfc_ratio(row),
                                "at_ceiling": r.at_ceiling,
                                "p99_at_90_percent_ratio_to_kernel": self.p99_at_90_ratio(row),
                                "loads": r.loads.iter().map(|l| {
                                    let mut v = trial_json(&l.trial);
                                    v["percent"] = json!(l.percent);
                                    v
                                }).collect::<Vec<_>>(),
                                "trials": r.trials.iter().map(trial_json).collect::<Vec<_>>(),
                            }),
                            Err(e) => json!({ "error": e }),
                        };
                        v["notes"] = json!(m.notes);
                    }
                }
                v
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| json!({ "target": t.what, "value": t.value, "met": t.met }))
            .collect();
        json!({
            "scenario": self.scenario,
            "topology": self.topology,
            "duration_s": self.duration_s,
            "latency_round_trips": self.rtt_rounds,
            "latency_warmup_round_trips": WARMUP_ROUNDS,
            "udp_payload_bytes": UDP_PAYLOAD,
            "udp_frame_bytes_with_fcs": UDP_FRAME_WITH_FCS,
            "udp_socket_buffer": UDP_SOCKET_BUFFER,
            "udp_loss_tolerance_percent": LOSS_TOLERANCE_PERCENT,
            "blaster_alone_kpps": self.blaster_kpps.as_ref().and_then(|r| r.as_ref().ok()),
            "cpu_stalls": self.stalls.as_ref().and_then(|r| r.as_ref().ok()).map(|cpus| {
                cpus.iter()
                    .map(|s| {
                        json!({
                            "cpu": s.cpu,
                            "gaps_1ms_or_more": s.count,
                            "total_ms": s.total_ms,
                            "longest_ms": s.longest_ms,
                            "spun_s": s.spun_s,
                        })
                    })
                    .collect::<Vec<_>>()
            }),
            "rfc2544": self.rfc2544.as_ref().map(|c| json!({
                "trial_s": c.trial.as_secs_f64(),
                "drain_s": c.drain.as_secs_f64(),
                "max_kpps": c.max_pps / 1e3,
                "min_kpps": c.min_pps / 1e3,
                "steps": c.steps,
                "zero_loss_steps": c.zero_steps,
                "resolution": c.resolution,
            })),
            "host": {
                "kernel": self.host.kernel,
                "cpus": self.host.cpus,
                "ovs_version": self.host.ovs_version,
                "vswitchd": self.host.vswitchd,
            },
            "note": NOTE,
            "variants": rows,
            "targets": targets,
        })
    }
}

/// How one figure of a row is put against the kernel's.
type RatioOf = fn(&Report, &Row) -> Option<f64>;

/// One ratio to the kernel in one run (see [`Report::ratio_figures`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RatioFigure {
    pub scenario: String,
    pub label: String,
    pub what: &'static str,
    pub ratio: f64,
}

/// The summary over several rounds of the same run: for each scenario, row and figure, its
/// ratio to the kernel in each round (measured in that round, so each is against its own
/// reference) and their median. On a shared machine one round says little; the median of
/// several, each taken back to back, is what to compare.
pub fn rounds_summary(rounds: &[Vec<RatioFigure>]) -> String {
    let mut keys: Vec<(String, String, &'static str)> = Vec::new();
    for f in rounds.iter().flatten() {
        let key = (f.scenario.clone(), f.label.clone(), f.what);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut lines = Vec::new();
    for (scenario, label, what) in keys {
        let per_round: Vec<Option<f64>> = rounds
            .iter()
            .map(|r| {
                r.iter()
                    .find(|f| f.scenario == scenario && f.label == label && f.what == what)
                    .map(|f| f.ratio)
            })
            .collect();
        let mut got: Vec<f64> = per_round.iter().flatten().copied().collect();
        got.sort_by(f64::total_cmp);
        lines.push(Line::Cells(vec![
            scenario,
            label,
            what.to_string(),
            per_round
                .iter()
                .map(|r| r.map_or("-".to_string(), |r| format!("{r:.2}")))
                .collect::<Vec<_>>()
                .join(" "),
            fmt_ratio(median(&got)),
        ]));
    }
    let mut out = format!(
        "\nOver {} rounds (each ratio against the kernel of its own round):\n\n",
        rounds.len()
    );
    out.push_str(&grid(
        &[
            "scenario",
            "variant",
            "figure",
            "× kernel, per round",
            "median",
        ],
        &lines,
    ));
    out
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// One RFC 2544 trial as JSON.
fn trial_json(t: &super::blast::Trial) -> Value {
    let s = &t.seq;
    let l = &t.latency;
    let r = &t.read_latency;
    let c = &t.cpu;
    json!({
        "asked_kpps": t.asked_pps / 1e3,
        "offered_kpps": t.offered_pps / 1e3,
        "sent": s.sent,
        "received": s.received,
        "lost_middle": s.lost_middle,
        "lost_tail": s.lost_tail,
        "lost_percent": s.loss_ratio() * 100.0,
        "lost_at_sink_socket": t.sink_drops,
        "late_by_send_ms": t.late.nonzero().map(|(ms, n)| json!([ms, n])).collect::<Vec<_>>(),
        "duplicates": s.duplicates,
        "reordered": s.reordered,
        "stray": s.stray,
        "one_way_us": {
            "p50": l.p50_us, "p99": l.p99_us, "p99_9": l.p999_us, "max": l.max_us, "mean": l.mean_us,
        },
        "one_way_to_read_us": {
            "p50": r.p50_us, "p99": r.p99_us, "p99_9": r.p999_us, "max": r.max_us, "mean": r.mean_us,
        },
        "cpu_seconds": {
            "wall": c.wall_s,
            "blaster": c.blaster_s,
            "sink": c.sink_s,
            "switch": c.switch_s,
            "ksoftirqd": c.softirqd_s,
            "machine_busy": c.machine_busy_s,
            "cpus": c.cpus,
        },
    })
}

/// A DESIGN.md performance target and whether this run met it.
struct Target {
    what: String,
    value: String,
    met: bool,
}

/// One line of a table.
enum Line {
    /// A cell per column.
    Cells(Vec<String>),
    /// A label in the first column and a message across the others (a skip, an error).
    Span(String, String),
}

/// A table: `header`, a rule, then `lines`; the first column is left-aligned, the others right.
fn grid(header: &[&str], lines: &[Line]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for l in lines {
        match l {
            Line::Cells(cells) => {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
            Line::Span(label, _) => {
                if let Some(w) = widths.first_mut() {
                    *w = (*w).max(label.chars().count());
                }
            }
        }
    }
    let first = widths.first().copied().unwrap_or(0);
    let fmt_line = |cells: &[String]| -> String {
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
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let _ = writeln!(out, "{}", fmt_line(&header));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "{}", fmt_line(&rule).replace(" | ", "-+-"));
    for l in lines {
        let _ = match l {
            Line::Cells(cells) => writeln!(out, "{}", fmt_line(cells)),
            Line::Span(label, msg) => {
                let pad = " ".repeat(first.saturating_sub(label.chars().count()));
                writeln!(out, "{label}{pad} | {msg}")
            }
        };
    }
    out
}

fn ratio(x: f64, reference: f64) -> Option<f64> {
    (reference > 0.0).then(|| x / reference)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::measure::TcpCpu;

    fn measured(gbps: f64, kpps: f64, carried_kpps: f64) -> Outcome {
        Outcome::Measured(Box::new(Measured {
            tcp: Ok(Tcp {
                gbps,
                retransmits: Some(0),
                cpu: Some(TcpCpu {
                    iperf3: 150.0,
                    switch: 40.0,
                    softirqd: 10.0,
                }),
            }),
            udp: Ok(Udp {
                kpps,
                received: 990,
                sent: 1000,
                lost_percent: 1.0,
                offered_kpps: kpps * 1.01,
            }),
            udp_carried: Ok(Carried {
                best: Udp {
                    kpps: carried_kpps,
                    received: 1000,
                    sent: 1000,
                    lost_percent: 0.0,
                    offered_kpps: carried_kpps,
                },
                trials: 5,
                sender_limited: false,
            }),
            latency: Ok(Latency {
                p50_us: 20.0,
                p99_us: 40.0,
                p999_us: 80.0,
                min_us: 10.0,
                mean_us: 21.0,
                max_us: 100.0,
                samples: 1000,
                lost: 0,
            }),
            rfc2544: Err(NOT_SELECTED.into()),
            notes: Vec::new(),
        }))
    }

    fn report() -> Report {
        let row = |variant: Variant, outcome| Row {
            variant,
            label: variant.label().to_string(),
            outcome,
            teardown_errors: Vec::new(),
        };
        Report {
            scenario: "flat".into(),
            topology: "test".into(),
            duration_s: 5,
            rtt_rounds: 1000,
            host: HostInfo::default(),
            path: "h1 → h2".into(),
            rfc2544: None,
            blaster_kpps: None,
            stalls: None,
            rows: vec![
                row(Variant::Kernel, measured(10.0, 100.0, 100.0)),
                row(Variant::Vswitchd, measured(8.0, 95.0, 85.0)),
                row(
                    Variant::OvsNoTso,
                    Outcome::Skipped("openvswitch: not installed, skipped".into()),
                ),
                row(Variant::OvsTso, Outcome::Failed("setup: boom".into())),
            ],
        }
    }

    #[test]
    fn ratios_are_against_the_kernel_row() {
        let r = report();
        let json = r.to_json();
        let vs = &json["variants"][1];
        assert_eq!(vs["tcp"]["ratio_to_kernel"], json!(0.8));
        assert_eq!(vs["udp_64b"]["ratio_to_kernel"], json!(0.95));
        assert_eq!(vs["udp_64b_carried"]["ratio_to_kernel"], json!(0.85));
        // 150 + 40 + 10 = 200% of a CPU for 8 Gbit/s.
        assert_eq!(vs["tcp"]["cpu_percent"]["total"], json!(200.0));
        assert_eq!(vs["tcp"]["cpu_percent"]["per_gbps"], json!(25.0));
        assert_eq!(json["variants"][2]["status"], "skipped");
        assert_eq!(json["variants"][3]["status"], "failed");
    }

    #[test]
    fn the_table_shows_skips_failures_and_targets() {
        let table = report().table();
        assert!(
            table.contains("openvswitch: not installed, skipped"),
            "{table}"
        );
        assert!(table.contains("ovs userspace, TSO: setup: boom"), "{table}");
        assert!(table.contains("0.80"), "{table}");
        assert!(table.contains("CPU % per Gbit/s"), "{table}");
        // 200% of a CPU for 8 Gbit/s.
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("vswitchd")
                    && l.split('|').nth(3).map(str::trim) == Some("25")),
            "{table}"
        );
        assert!(
            table.contains("[met] TCP through vswitchd ≥ 0.7× the kernel bridge"),
            "{table}"
        );
        assert!(table.contains("[NOT met] 64-byte UDP"), "{table}");
    }

    #[test]
    fn the_udp_target_is_judged_on_the_carried_rate() {
        let mut r = report();
        // Full blast far behind, with loss; carried close to the kernel's: met.
        r.rows[1].outcome = measured(8.0, 50.0, 95.0);
        let t = r.targets();
        let udp = t.iter().find(|t| t.what.contains("64-byte UDP")).unwrap();
        assert!(udp.met, "{}", udp.value);
        assert!(udp.value.starts_with("0.95×"), "{}", udp.value);
    }

    /// An RFC 2544 result: carried `kpps` (under 1 % loss), p99 `p99_at_90` µs at 90 %.
    fn rfc(kpps: f64, p99_at_90: f64) -> Rfc2544 {
        use crate::e2e::blast::{OneWay, SeqSummary, Trial};
        use crate::e2e::rfc2544::AtLoad;
        let trial = |kpps: f64, p99: f64, lost: u64| Trial {
            asked_pps: kpps * 1e3,
            offered_pps: kpps * 1e3,
            seq: SeqSummary {
                sent: 1000,
                received: 1000 - lost,
                lost_middle: lost,
                ..SeqSummary::default()
            },
            latency: OneWay {
                p50_us: 20.0,
                p99_us: p99,
                p999_us: p99 * 2.0,
                max_us: p99 * 3.0,
                mean_us: 21.0,
            },
            read_latency: OneWay::default(),
            cpu: crate::e2e::blast::TrialCpu::default(),
            sink_drops: Some(0),
            late: Default::default(),
        };
        Rfc2544 {
            zero_loss: Some(trial(kpps * 0.9, 50.0, 0)),
            one_percent: Some(trial(kpps, 60.0, 5)),
            at_ceiling: false,
            loads: LOAD_PERCENTS
                .iter()
                .map(|&percent| AtLoad {
                    percent,
                    trial: trial(
                        kpps * f64::from(percent) / 100.0,
                        if percent == 90 { p99_at_90 } else { 99.0 },
                        0,
                    ),
                })
                .collect(),
            trials: vec![trial(600.0, 900.0, 400), trial(kpps, 60.0, 5)],
        }
    }

    fn with_rfc(r: &mut Report, kernel: Rfc2544, vswitchd: Rfc2544) {
        r.rfc2544 = Some(rfc2544::Config::default());
        r.blaster_kpps = Some(Ok(450.0));
        r.stalls = Some(Ok(vec![CpuStalls {
            cpu: 1,
            count: 2,
            total_ms: 16.0,
            longest_ms: 9.0,
            spun_s: 2.0,
        }]));
        for (row, x) in r.rows.iter_mut().zip([kernel, vswitchd]) {
            if let Outcome::Measured(m) = &mut row.outcome {
                m.rfc2544 = Ok(x);
            }
        }
    }

    #[test]
    fn the_rfc2544_table_and_targets_compare_with_the_kernel() {
        let mut r = report();
        with_rfc(&mut r, rfc(150.0, 40.0), rfc(135.0, 100.0));
        let table = r.table();
        assert!(table.contains("RFC 2544, blaster and sink"), "{table}");
        // The latency table: a line per variant and load, with the ratio at that load.
        let at_90 = table
            .lines()
            .find(|l| l.starts_with("vswitchd") && l.contains(" 90 % |"))
            .unwrap_or_default();
        // ... and the p99 to the sink's read after it.
        assert!(at_90.contains(" 2.50 | "), "{table}");
        // The CPU table: per datagram, with the machine's busy share.
        assert!(
            table.contains("Where the CPU goes in those trials"),
            "{table}"
        );
        assert!(table.contains("whole machine | machine busy %"), "{table}");
        assert!(table.contains("135.0"), "{table}");
        assert!(
            table.contains("offers 450.0 kpps, 3.0× the kernel bridge's"),
            "{table}"
        );
        // 135 / 150 = 0.90: met; p99 at 90 %: 100 / 40 = 2.5×: not met.
        assert!(
            table.contains("[met] 64-byte UDP through vswitchd ≥ 0.9× the kernel bridge, under 1% loss (RFC 2544"),
            "{table}"
        );
        assert!(table.contains("[NOT met] one-way p99"), "{table}");
        assert!(table.contains("2.50"), "{table}");
        let json = r.to_json();
        let vs = &json["variants"][1]["rfc2544"];
        assert_eq!(vs["under_1_percent_kpps"], json!(135.0));
        assert_eq!(vs["ratio_to_kernel"], json!(0.9));
        assert_eq!(vs["p99_at_90_percent_ratio_to_kernel"], json!(2.5));
        assert_eq!(vs["loads"][1]["percent"], json!(90));
        assert_eq!(vs["trials"][0]["lost_middle"], json!(400));
        assert_eq!(json["rfc2544"]["drain_s"], json!(2.0));
        // The machine's own stalls, beside the blaster's ceiling.
        assert!(table.contains("spinning on each CPU for 2.0 s"), "{table}");
        assert!(
            table.contains("CPU 1 lost 2 times, 16.0 ms in all (0.80 %), longest 9.0 ms"),
            "{table}"
        );
        assert_eq!(json["cpu_stalls"][0]["longest_ms"], json!(9.0));
    }

    #[test]
    fn an_rfc2544_error_is_an_error_of_the_run() {
        let mut r = report();
        with_rfc(&mut r, rfc(150.0, 40.0), rfc(135.0, 60.0));
        if let Outcome::Measured(m) = &mut r.rows[1].outcome {
            m.rfc2544 = Err("sink did not start".into());
        }
        assert!(r.has_errors());
        let table = r.table();
        assert!(
            table.contains("vswitchd: RFC 2544: sink did not start"),
            "{table}"
        );
        // Without the measurement there is no RFC 2544 table at all.
        assert!(!report().table().contains("RFC 2544, blaster"));
    }

    #[test]
    fn the_overlay_checks_its_own_target() {
        let mut r = report();
        r.scenario = "overlay".into();
        let t = r.targets();
        assert_eq!(t.len(), 1);
        assert!(
            t[0].what.contains("over VXLAN") && t[0].met,
            "{}",
            t[0].what
        );
        r.rows[1].label = "vswitchd overlay".into();
        assert!(r.table().contains("vswitchd overlay"));
    }

    #[test]
    fn rounds_are_summarised_by_their_median() {
        let r = report();
        let figures = r.ratio_figures();
        // The vswitchd row's TCP: 8 / 10 Gbit/s in `report()`.
        let tcp = figures
            .iter()
            .find(|f| f.label == "vswitchd" && f.what == "TCP")
            .expect("a TCP ratio for vswitchd");
        assert!((tcp.ratio - 0.8).abs() < 1e-9, "{figures:?}");
        assert!(figures.iter().all(|f| f.label != "kernel bridge"));
        let with = |ratio: f64| {
            vec![RatioFigure {
                ratio,
                ..tcp.clone()
            }]
        };
        let summary = rounds_summary(&[with(0.9), with(0.7), with(0.8), Vec::new()]);
        assert!(summary.contains("Over 4 rounds"), "{summary}");
        let line = summary
            .lines()
            .find(|l| l.contains(" TCP |"))
            .expect("a TCP line");
        assert!(line.contains("0.90 0.70 0.80 -"), "{summary}");
        assert!(line.trim_end().ends_with("0.80"), "{summary}");
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn no_kernel_row_means_no_ratio() {
        let mut r = report();
        r.rows.remove(0);
        assert_eq!(
            r.to_json()["variants"][0]["tcp"]["ratio_to_kernel"],
            Value::Null
        );
        assert!(r.has_errors());
    }
}
