//! The three measurements, each run once per variant between the deployment's two hosts:
//! - TCP throughput: one iperf3 stream (`iperf3 -c … -t SECS -J`), the receiver's bit rate,
//!   and the CPU it took: both iperf3 ends (their `cpu_utilization_percent`), the switch's
//!   daemons and the ksoftirqd threads (`/proc/PID/stat` before and after);
//! - 64-byte UDP at full blast: `iperf3 -u -b 0 -l 18`, packets the receiver got per second and
//!   the loss;
//! - 64-byte UDP carried: the highest offered rate the switch delivers with under 1% loss,
//!   found by a search over offered rates (RFC 2544's throughput, with a 1% loss tolerance);
//! - latency: a UDP ping-pong between two threads that entered the hosts' namespaces, every round
//!   trip recorded in an HDR histogram.

use super::netns::{join, spawn_in};
use super::proc::{in_netns, succeeds, wait_until, Daemon};
use super::scenario::Deployment;
use super::{check_interrupt, interrupted, Error, IoContext, Result};
use hdrhistogram::Histogram;
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// UDP payload of the packet-rate test: 18 bytes + 8 UDP + 20 IPv4 + 14 Ethernet = a 60-byte
/// frame, the Ethernet minimum, which is 64 bytes on a wire with its 4-byte FCS (the RFC 2544
/// "64-byte frame"). veths carry no FCS, so the switch sees 60 bytes.
pub const UDP_PAYLOAD: usize = 18;
/// The frame size that payload makes, FCS included.
pub const UDP_FRAME_WITH_FCS: usize = UDP_PAYLOAD + 8 + 20 + 14 + 4;
/// Socket buffers iperf3 asks for in the UDP tests (`-w`, both ends; the kernel caps it at
/// `net.core.rmem_max`). A switch in user space delivers in bursts (one batch per wake-up); at
/// the default 208 KB a receiving application that is not scheduled for a moment loses a burst
/// in its own socket, which says nothing about the switch. Every variant gets the same buffers.
pub const UDP_SOCKET_BUFFER: &str = "4M";
/// Loss under which an offered rate counts as carried.
pub const LOSS_TOLERANCE_PERCENT: f64 = 1.0;
/// Trials of the carried-rate search after the full-blast run.
pub const SEARCH_TRIALS: u32 = 5;
/// The iperf3 port (each server has its own namespace, so it never collides).
pub const IPERF_PORT: u16 = 5201;
/// Unrecorded round trips before the recorded ones (ARP, MAC learning, caches).
pub const WARMUP_ROUNDS: u32 = 500;
/// How long one ping-pong round trip may take before it counts as lost.
const RTT_TIMEOUT: Duration = Duration::from_millis(200);
/// Lost round trips in a row that end the latency test with an error.
const MAX_LOST_IN_A_ROW: u32 = 25;

/// TCP throughput.
#[derive(Debug, Clone)]
pub struct Tcp {
    /// What the receiver got, Gbit/s.
    pub gbps: f64,
    /// Sender retransmissions.
    pub retransmits: Option<u64>,
    /// The CPU the test took, when the deployment tracks its switch's processes.
    pub cpu: Option<TcpCpu>,
}

/// CPU during the TCP test, in percent of one CPU over the test (100 = one CPU busy).
#[derive(Debug, Clone, Copy)]
pub struct TcpCpu {
    /// Both iperf3 ends (user + system; the kernel's work in their context is in it).
    pub iperf3: f64,
    /// The switch's daemons (none for the kernel).
    pub switch: f64,
    /// The ksoftirqd threads (network work the kernel deferred out of the processes).
    pub softirqd: f64,
}

impl TcpCpu {
    /// All of it.
    pub fn total(&self) -> f64 {
        self.iperf3 + self.switch + self.softirqd
    }
}

/// CPU seconds (user + system) `pid` has used, from `/proc/PID/stat`; `None` once it is gone.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf(3) only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

/// The ksoftirqd threads' ids.
pub fn softirqd_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// The CPU seconds of each of `pids` (0 for one that is gone).
pub fn cpu_snapshot(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .map(|&p| cpu_seconds(p).unwrap_or(0.0))
        .collect()
}

/// Percent of one CPU `before` → `after` make over `secs` seconds.
fn cpu_percent(before: &[f64], after: &[f64], secs: f64) -> f64 {
    // A fold from +0.0: an empty sum of f64 is -0.0.
    let used = after
        .iter()
        .zip(before)
        .fold(0.0, |sum, (a, b)| sum + (a - b).max(0.0));
    100.0 * used / secs.max(f64::EPSILON)
}

/// 64-byte UDP packet rate.
#[derive(Debug, Clone)]
pub struct Udp {
    /// Packets the receiver got per second, in thousands.
    pub kpps: f64,
    /// Packets the receiver got.
    pub received: u64,
    /// Packets the sender sent (by the receiver's sequence numbers).
    pub sent: u64,
    /// `lost / sent`, in percent, as the receiver counts it.
    pub lost_percent: f64,
    /// Packets the sender sent per second, in thousands: the offered rate.
    pub offered_kpps: f64,
}

/// The highest 64-byte UDP rate carried with under [`LOSS_TOLERANCE_PERCENT`] loss.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The trial that carried the most: what the receiver got, its offered rate and loss.
    pub best: Udp,
    /// Trials run at a set rate (0 when the full-blast run already lost less than the
    /// tolerance: the sender is the limit and the switch carries all it offers).
    pub trials: u32,
    /// The search never found the switch's limit: every trial it ran at a set rate lost less
    /// than the tolerance, and iperf3, pacing itself, offered less than it was asked (the
    /// sender shares the CPUs with the switch and the receiver). The figure is then a floor.
    pub sender_limited: bool,
}

/// UDP round-trip times, in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Fastest.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Round trips recorded.
    pub samples: u64,
    /// Round trips that timed out.
    pub lost: u64,
}

/// Waits until the client host pings the server host (the switch is forwarding).
pub fn wait_reachable(d: &Deployment, timeout: Duration) -> Result<()> {
    let target = d.connect_to.unwrap_or(d.server.addr);
    let what = format!("{target} to answer ping from {}", d.client.netns);
    let addr = target.to_string();
    wait_until(&what, timeout, || {
        succeeds(in_netns(&d.client.netns, "ping").args(["-c", "1", "-W", "1", "-q", &addr]))
    })
}

/// One TCP stream for `secs` seconds.
/// `congestion` names the sender's congestion control (`iperf3 -C`); `None` keeps the
/// namespace's default (`net.ipv4.tcp_congestion_control`).
pub fn tcp(d: &Deployment, secs: u32, congestion: Option<&str>) -> Result<Tcp> {
    let args: Vec<&str> = congestion.map_or(Vec::new(), |c| vec!["-C", c]);
    let softirqd = softirqd_pids();
    let switch = d.busy.clone().unwrap_or_default();
    let before = (cpu_snapshot(&switch), cpu_snapshot(&softirqd));
    let (client, _server) = iperf3(d, "tcp", secs, &args)?;
    let after = (cpu_snapshot(&switch), cpu_snapshot(&softirqd));
    let gbps = number(&client, &["end", "sum_received", "bits_per_second"])? / 1e9;
    let retransmits = number(&client, &["end", "sum_sent", "retransmits"])
        .ok()
        .map(|r| r as u64);
    let cpu = match (&d.busy, tcp_cpu_of_iperf3(&client)) {
        (Some(_), Some(iperf3)) => {
            // The daemons and ksoftirqd work during the test only (idle around it).
            let test_secs =
                number(&client, &["end", "sum_received", "seconds"]).unwrap_or(f64::from(secs));
            Some(TcpCpu {
                iperf3,
                switch: cpu_percent(&before.0, &after.0, test_secs),
                softirqd: cpu_percent(&before.1, &after.1, test_secs),
            })
        }
        _ => None,
    };
    Ok(Tcp {
        gbps,
        retransmits,
        cpu,
    })
}

/// Both ends' CPU as the iperf3 client reports it (`end.cpu_utilization_percent`: its own
/// `host_total` and the server's `remote_total`, percent of one CPU).
fn tcp_cpu_of_iperf3(client: &Value) -> Option<f64> {
    let host = number(client, &["end", "cpu_utilization_percent", "host_total"]).ok()?;
    let remote = number(client, &["end", "cpu_utilization_percent", "remote_total"]).ok()?;
    Some(host + remote)
}

/// Unlimited-rate UDP with [`UDP_PAYLOAD`]-byte datagrams for `secs` seconds.
pub fn udp(d: &Deployment, secs: u32) -> Result<Udp> {
    udp_at(d, "udp", secs, None)
}

/// The highest rate carried with under [`LOSS_TOLERANCE_PERCENT`] loss, by bisection between
/// nothing and what the sender offered at full blast ([`SEARCH_TRIALS`] trials of `secs` each).
/// The first trial asks for the rate delivered at full blast.
pub fn udp_carried(d: &Deployment, secs: u32, full_blast: &Udp) -> Result<Carried> {
    let mut trial = 0;
    search_carried(full_blast, |ask| {
        check_interrupt()?;
        trial += 1;
        let got = udp_at(d, &format!("udp-search{trial}"), secs, Some(ask))?;
        eprintln!(
            "e2e:   offered {:.1} kpps (asked {ask:.1}): received {:.1} kpps, {:.2}% loss",
            got.offered_kpps, got.kpps, got.lost_percent
        );
        Ok(got)
    })
}

/// The bisection of [`udp_carried`], with `run(kpps)` doing one trial at that asked rate.
fn search_carried(full_blast: &Udp, mut run: impl FnMut(f64) -> Result<Udp>) -> Result<Carried> {
    if full_blast.lost_percent < LOSS_TOLERANCE_PERCENT {
        return Ok(Carried {
            best: full_blast.clone(),
            trials: 0,
            sender_limited: false,
        });
    }
    let (mut low, mut high) = (0.0, full_blast.offered_kpps);
    let mut ask = full_blast.kpps;
    let mut best: Option<Udp> = None;
    let mut any_lossy = false;
    let mut short_of_ask = true;
    for _ in 0..SEARCH_TRIALS {
        let got = run(ask)?;
        short_of_ask &= got.offered_kpps < 0.95 * ask;
        if got.lost_percent < LOSS_TOLERANCE_PERCENT {
            low = ask;
            if best.as_ref().is_none_or(|b| got.kpps > b.kpps) {
                best = Some(got);
            }
        } else {
            any_lossy = true;
            high = ask;
        }
        ask = (low + high) / 2.0;
    }
    let best = best.ok_or_else(|| {
        Error::Unexpected(format!(
            "no offered rate down to {ask:.1} kpps was carried with under \
             {LOSS_TOLERANCE_PERCENT}% loss"
        ))
    })?;
    Ok(Carried {
        best,
        trials: SEARCH_TRIALS,
        sender_limited: !any_lossy && short_of_ask,
    })
}

/// One UDP run: unlimited, or `kpps` thousand datagrams per second asked of the sender.
///
/// The receiver's `packets` is the count the sequence numbers say were sent, `lost_packets` the
/// gaps among them: received is the difference.
fn udp_at(d: &Deployment, tag: &str, secs: u32, kpps: Option<f64>) -> Result<Udp> {
    let len = UDP_PAYLOAD.to_string();
    // iperf3's -b counts payload bits.
    let rate = kpps.map_or("0".to_string(), |k| {
        format!("{}", (k * 1e3 * UDP_PAYLOAD as f64 * 8.0).round() as u64)
    });
    let args = ["-u", "-b", &rate, "-l", &len, "-w", UDP_SOCKET_BUFFER];
    let (client, server) = iperf3(d, tag, secs, &args)?;
    // The receiver's own report; the copy the client got back is the fallback.
    let sum = match server.pointer("/end/sum") {
        Some(s) if s.get("packets").is_some() => s,
        _ => client
            .pointer("/end/sum_received")
            .ok_or_else(|| Error::Unexpected("iperf3: no receiver summary in its JSON".into()))?,
    };
    let sent = number(sum, &["packets"])? as u64;
    let lost = number(sum, &["lost_packets"])? as u64;
    let seconds = number(sum, &["seconds"])?;
    let received = sent.saturating_sub(lost);
    Ok(Udp {
        kpps: received as f64 / seconds / 1e3,
        received,
        sent,
        lost_percent: number(sum, &["lost_percent"])?,
        offered_kpps: sent as f64 / seconds / 1e3,
    })
}

/// Runs an iperf3 server in the server host (one test, then it exits) and a client in the
/// client host; returns both JSON reports.
fn iperf3(d: &Deployment, tag: &str, secs: u32, extra: &[&str]) -> Result<(Value, Value)> {
    let dir = &d.workdir;
    let port = IPERF_PORT.to_string();
    let addr = d.server.addr.to_string();

    let mut cmd = in_netns(&d.server.netns, "iperf3");
    cmd.args(["-s", "-1", "-J", "-B", &addr, "-p", &port]);
    let server_json = dir.join(format!("iperf3-{tag}-server.json"));
    let mut server = Daemon::spawn_split(
        "iperf3 server",
        cmd,
        &server_json,
        &dir.join(format!("iperf3-{tag}-server.log")),
    )?;
    wait_until(
        "the iperf3 server to listen",
        Duration::from_secs(10),
        || {
            server.check_running()?;
            Ok(tcp_listening(server.pid(), IPERF_PORT))
        },
    )?;

    let target = d.connect_to.unwrap_or(d.server.addr).to_string();
    let mut cmd = in_netns(&d.client.netns, "iperf3");
    cmd.args(["-c", &target, "-p", &port, "-t", &secs.to_string(), "-J"])
        .args(extra);
    let client_json = dir.join(format!("iperf3-{tag}-client.json"));
    let mut client = Daemon::spawn_split(
        "iperf3 client",
        cmd,
        &client_json,
        &dir.join(format!("iperf3-{tag}-client.log")),
    )?;
    let finished = client.wait_exit(Duration::from_secs(u64::from(secs) + 30));
    check_interrupt()?;
    // iperf3 -J reports its errors in the JSON, so look there first.
    let client_report = read_json(&client_json);
    if let Ok(report) = &client_report {
        if let Some(e) = report.get("error").and_then(Value::as_str) {
            return Err(Error::Unexpected(format!("iperf3 client: {e}")));
        }
    }
    finished?;
    let client_report = client_report?;

    server.wait_exit(Duration::from_secs(10))?;
    let server_report = read_json(&server_json).unwrap_or(Value::Null);
    Ok((client_report, server_report))
}

/// Whether process `pid`'s namespace has a TCP socket listening on `port` (its
/// `/proc/PID/net/tcp{,6}` are the tables of the namespace it is in).
fn tcp_listening(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|t| {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default();
        table_has_listener(&table, port)
    })
}

/// Whether a `/proc/net/tcp`-format table has a socket in state LISTEN (`0A`) on `port`.
fn table_has_listener(table: &str, port: u16) -> bool {
    const LISTEN: &str = "0A";
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3
            && f[3] == LISTEN
            && f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Unexpected(format!("{} is not JSON: {e}", path.display())))
}

fn number(v: &Value, path: &[&str]) -> Result<f64> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            Error::Unexpected(format!("iperf3 JSON has no number at {}", path.join(".")))
        })
}

/// Sets a flag when dropped: stops the echo server however the client side ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `rounds` UDP round trips of [`UDP_PAYLOAD`]-byte datagrams from the client host to an echo
/// server in the server host, one at a time, after [`WARMUP_ROUNDS`] unrecorded ones.
pub fn latency(d: &Deployment, rounds: u32) -> Result<Latency> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let bind = d.server.addr;
    let server_stop = stop.clone();
    let server = spawn_in(&d.server.netns, "echo-server", move || {
        let sock = UdpSocket::bind((bind, 0)).context(|| format!("binding {bind}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .context(|| "setting a read timeout".into())?;
        let _ = tx.send(sock.local_addr().context(|| "getsockname".into())?);
        echo(&sock, &server_stop)
    })?;
    let stopper = StopOnDrop(stop);
    let server_addr = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(a) => a,
        Err(_) => {
            drop(stopper);
            join(server)?;
            return Err(Error::Unexpected("the echo server did not start".into()));
        }
    };
    let client = spawn_in(&d.client.netns, "ping-pong", move || {
        ping_pong(server_addr, rounds)
    })?;
    let result = join(client);
    drop(stopper);
    let served = join(server);
    let latency = result?;
    served?;
    Ok(latency)
}

/// Sends every datagram back where it came from until `stop`.
fn echo(sock: &UdpSocket, stop: &AtomicBool) -> Result<()> {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && !interrupted() {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                sock.send_to(&buf[..n], from)
                    .context(|| format!("echoing to {from}"))?;
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e).context(|| "echo server receive".into()),
        }
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// The client side: one datagram out, wait for it back (matched by sequence number), record.
fn ping_pong(server: SocketAddr, rounds: u32) -> Result<Latency> {
    let sock = UdpSocket::bind(("0.0.0.0", 0)).context(|| "binding the client socket".into())?;
    sock.connect(server)
        .context(|| format!("connecting to {server}"))?;
    sock.set_read_timeout(Some(RTT_TIMEOUT))
        .context(|| "setting a read timeout".into())?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| Error::Unexpected(format!("histogram: {e}")))?;
    let mut msg = [0u8; UDP_PAYLOAD];
    let mut buf = [0u8; 2048];
    let (mut lost, mut lost_in_a_row) = (0u64, 0u32);
    for seq in 0..u64::from(WARMUP_ROUNDS + rounds) {
        check_interrupt()?;
        msg[..8].copy_from_slice(&seq.to_be_bytes());
        let sent = Instant::now();
        sock.send(&msg).context(|| format!("sending to {server}"))?;
        let rtt = loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[..8] == msg[..8] => break Some(sent.elapsed()),
                Ok(_) => continue, // a late answer to an earlier round
                Err(e) if is_timeout(&e) => break None,
                Err(e) => return Err(e).context(|| format!("receiving from {server}")),
            }
        };
        let recorded = seq >= u64::from(WARMUP_ROUNDS);
        match rtt {
            Some(rtt) => {
                lost_in_a_row = 0;
                if recorded {
                    let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
                    hist.saturating_record(ns);
                }
            }
            None => {
                lost += u64::from(recorded);
                lost_in_a_row += 1;
                if lost_in_a_row >= MAX_LOST_IN_A_ROW {
                    return Err(Error::Unexpected(format!(
                        "{MAX_LOST_IN_A_ROW} round trips in a row to {server} got no answer"
                    )));
                }
            }
        }
    }
    let us = |ns: u64| ns as f64 / 1e3;
    Ok(Latency {
        p50_us: us(hist.value_at_quantile(0.50)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        min_us: us(hist.min()),
        mean_us: hist.mean() / 1e3,
        max_us: us(hist.max()),
        samples: hist.len(),
        lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_per_process_and_summed_over_the_test() {
        // This process has used some CPU; a process that does not exist has none.
        let me = cpu_seconds(std::process::id()).expect("our own /proc/PID/stat");
        assert!(me >= 0.0);
        assert_eq!(cpu_seconds(u32::MAX), None);
        // Two processes, 1.5 s and 0.5 s in 4 s: 50% of one CPU; a clock that went back counts 0.
        assert_eq!(cpu_percent(&[1.0, 2.0], &[2.5, 2.5], 4.0), 50.0);
        assert_eq!(cpu_percent(&[3.0], &[1.0], 4.0), 0.0);
        assert!(cpu_percent(&[], &[], 4.0).is_sign_positive());
        let client = serde_json::json!({
            "end": {"cpu_utilization_percent": {"host_total": 80.5, "remote_total": 40.0}}
        });
        assert_eq!(tcp_cpu_of_iperf3(&client), Some(120.5));
        assert_eq!(tcp_cpu_of_iperf3(&serde_json::json!({})), None);
    }

    /// A run at `offered` kpps of which `kpps` arrived.
    fn run_of(offered: f64, kpps: f64) -> Udp {
        Udp {
            kpps,
            received: kpps as u64,
            sent: offered as u64,
            lost_percent: (offered - kpps) / offered * 100.0,
            offered_kpps: offered,
        }
    }

    /// A switch that carries up to `capacity` kpps behind a sender that offers what it is asked.
    fn switch_of(capacity: f64) -> impl FnMut(f64) -> Result<Udp> {
        move |ask| Ok(run_of(ask, ask.min(capacity)))
    }

    #[test]
    fn a_loss_free_full_blast_is_the_carried_rate() {
        let full = run_of(100.0, 100.0);
        let c = search_carried(&full, |_| panic!("no trial needed")).unwrap();
        assert_eq!((c.best.kpps, c.trials, c.sender_limited), (100.0, 0, false));
    }

    #[test]
    fn the_search_closes_in_on_the_switch_capacity() {
        // Offered 200, 120 arrived; the switch carries 90 without loss.
        let full = run_of(200.0, 120.0);
        let c = search_carried(&full, switch_of(90.0)).unwrap();
        assert_eq!(c.trials, SEARCH_TRIALS);
        assert!(!c.sender_limited);
        assert!(c.best.lost_percent < LOSS_TOLERANCE_PERCENT);
        // 120 lost, 60 carried, 90 carried, 105 lost, 97.5 lost: 90 is the best seen.
        assert!((c.best.kpps - 90.0).abs() < 1e-9, "{:?}", c.best);
    }

    #[test]
    fn a_sender_that_cannot_keep_up_makes_the_figure_a_floor() {
        let full = run_of(200.0, 120.0);
        // Paced, the sender never offers more than 80, and all of it arrives.
        let c = search_carried(&full, |ask| Ok(run_of(ask.min(80.0), ask.min(80.0)))).unwrap();
        assert!(c.sender_limited);
        assert_eq!(c.best.kpps, 80.0);
    }

    #[test]
    fn nothing_carried_is_an_error() {
        let full = run_of(200.0, 120.0);
        let r = search_carried(&full, |ask| Ok(run_of(ask, ask * 0.5)));
        assert!(r.is_err());
    }

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 02004D0A:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 01004D0A:A2C4 02004D0A:1451 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
";

    #[test]
    fn finds_a_listener_by_port_and_state() {
        assert!(table_has_listener(TABLE, 5201));
        // Port 0xA2C4 is there, but as an established connection.
        assert!(!table_has_listener(TABLE, 0xA2C4));
        assert!(!table_has_listener("", 5201));
    }

    #[test]
    fn the_udp_payload_makes_a_64_byte_frame() {
        assert_eq!(UDP_FRAME_WITH_FCS, 64);
    }
}
