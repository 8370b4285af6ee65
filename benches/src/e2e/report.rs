//! The results: a table for people (stdout) and the same figures as JSON (`--json FILE`).
//! Ratios are taken against the kernel bridge measured in the same run.

use super::measure::{
    Carried, Latency, Tcp, Udp, LOSS_TOLERANCE_PERCENT, SEARCH_TRIALS, UDP_FRAME_WITH_FCS,
    UDP_PAYLOAD, UDP_SOCKET_BUFFER, WARMUP_ROUNDS,
};
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

    /// Whether something went wrong (a skip is not an error).
    pub fn has_error(&self) -> bool {
        !self.teardown_errors.is_empty()
            || match &self.outcome {
                Outcome::Skipped(_) => false,
                Outcome::Failed(_) => true,
                Outcome::Measured(m) => {
                    failed(&m.tcp) || failed(&m.udp) || failed(&m.udp_carried) || failed(&m.latency)
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
        let mut lines: Vec<Vec<String>> = Vec::new();
        let mut spans: Vec<(String, String)> = Vec::new();
        let mut errors = Vec::new();
        for row in &self.rows {
            let label = row.label.clone();
            let m = match &row.outcome {
                Outcome::Skipped(why) => {
                    spans.push((label, why.clone()));
                    lines.push(Vec::new());
                    continue;
                }
                Outcome::Failed(e) => {
                    spans.push((label.clone(), "failed (see below)".into()));
                    lines.push(Vec::new());
                    errors.push(format!("{label}: {e}"));
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
            lines.push(vec![
                label,
                tcp,
                fmt_ratio(self.tcp_ratio(row)),
                cpu,
                udp,
                loss,
                carried,
                fmt_ratio(self.carried_ratio(row)),
                rtt,
            ]);
            for e in &row.teardown_errors {
                errors.push(format!("{}: teardown: {e}", row.label));
            }
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for l in &lines {
            for (w, c) in widths.iter_mut().zip(l) {
                *w = (*w).max(c.chars().count());
            }
        }
        for (label, _) in &spans {
            widths[0] = widths[0].max(label.chars().count());
        }
        let fmt_line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    s.push_str(" | ");
                }
                let pad = w.saturating_sub(c.chars().count());
                if i == 0 {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                }
            }
            s.trim_end().to_string()
        };
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let _ = writeln!(out, "{}", fmt_line(&header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", fmt_line(&rule).replace(" | ", "-+-"));
        let mut spans = spans.into_iter();
        for l in &lines {
            if l.is_empty() {
                let (label, msg) = spans.next().unwrap_or_default();
                let pad = widths[0].saturating_sub(label.chars().count());
                let _ = writeln!(out, "{label}{} | {msg}", " ".repeat(pad));
            } else {
                let _ = writeln!(out, "{}", fmt_line(l));
            }
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
        if let (Some(r), Some(c)) = (self.carried_ratio(vs), vs.carried()) {
            t.push(Target {
                what: "64-byte UDP through vswitchd ≥ 0.9× the kernel bridge, under 1% loss".into(),
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

/// A DESIGN.md performance target and whether this run met it.
struct Target {
    what: String,
    value: String,
    met: bool,
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
