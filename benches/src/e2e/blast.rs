//! The UDP blaster and sink of the RFC 2544 measurement: a paced sender (`sendmmsg`) of numbered,
//! time-stamped 64-byte-frame datagrams, a receiver (`recvmmsg`) that accounts for every one of
//! them (lost in the middle or at the tail, duplicated, reordered) and records each one's one-way
//! latency, and one trial of the two between a deployment's hosts.
//!
//! Both ends run on this machine, as threads entered into the hosts' namespaces, so the send
//! time stamp and the receive time are read from the same clock (`CLOCK_MONOTONIC`).
//!
//! Payload (the [`UDP_PAYLOAD`] bytes of a 64-byte frame), big-endian:
//! `[0, 8)` sequence number, `[8, 16)` send time in ns, `[16, 18)` the trial's tag. A datagram with
//! another tag (a frame of an earlier trial still queued somewhere) is counted as stray, never as
//! one of this trial's.

use super::measure::UDP_PAYLOAD;
use super::netns::{join, spawn_in};
use super::scenario::Deployment;
use super::{check_interrupt, interrupted, Error, IoContext, Result};
use hdrhistogram::Histogram;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Most datagrams handed to one `sendmmsg` or taken from one `recvmmsg`.
pub const MAX_BATCH: usize = 64;
/// The sender sends one batch per this many nanoseconds of schedule (fewer at low rates: at
/// least one datagram per batch), so a batch is a short burst and the pacing stays fine-grained.
pub const BATCH_WINDOW_NS: f64 = 50_000.0;
/// Socket buffers at both ends (`SO_SNDBUF`/`SO_RCVBUF`, forced past `rmem_max` as root): the
/// same 4 MiB as the iperf3 tests' `-w 4M`, for every switch.
pub const SOCKET_BUFFER: usize = 4 << 20;
/// How often the sink looks at its stop time while nothing arrives.
const SINK_POLL: Duration = Duration::from_millis(10);
/// Highest latency the histogram holds (ns); anything slower is recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Offset of the send time stamp in the payload.
const TS_AT: usize = 8;
/// Offset of the trial tag in the payload.
const TAG_AT: usize = 16;

/// One datagram's payload, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Its sequence number.
    pub seq: u64,
    /// When the sender handed it to the kernel, ns of `CLOCK_MONOTONIC`.
    pub sent_ns: u64,
    /// The trial it belongs to.
    pub tag: u16,
}

/// Writes `stamp` into a payload.
pub fn encode(buf: &mut [u8; UDP_PAYLOAD], stamp: Stamp) {
    buf[..TS_AT].copy_from_slice(&stamp.seq.to_be_bytes());
    buf[TS_AT..TAG_AT].copy_from_slice(&stamp.sent_ns.to_be_bytes());
    buf[TAG_AT..].copy_from_slice(&stamp.tag.to_be_bytes());
}

/// Reads a payload; `None` unless it is exactly [`UDP_PAYLOAD`] bytes.
pub fn decode(buf: &[u8]) -> Option<Stamp> {
    let buf: &[u8; UDP_PAYLOAD] = buf.try_into().ok()?;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Some(Stamp {
        seq: u64_at(0),
        sent_ns: u64_at(TS_AT),
        tag: u16::from_be_bytes([buf[TAG_AT], buf[TAG_AT + 1]]),
    })
}

/// `CLOCK_MONOTONIC` in ns (the same clock in every namespace of the machine).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in ns: the clock of the kernel's receive time stamps (`SO_TIMESTAMPNS`).
fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// This thread's CPU time so far, in ns (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes the timespec we own; the clocks used here always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// A kernel receive time stamp (`CLOCK_REALTIME`) on the `CLOCK_MONOTONIC` time line, given
/// `offset` = realtime − monotonic read just before: the two clocks run at the same rate (NTP
/// slews both), so within a trial the offset stays put to well under a microsecond.
pub fn arrival_on_monotonic(stamp_realtime_ns: u64, offset: i128) -> u64 {
    let mono = i128::from(stamp_realtime_ns) - offset;
    u64::try_from(mono.max(0)).unwrap_or(u64::MAX)
}

/// The sender's timetable: `total` datagrams at `rate` per second, in batches of equal size
/// (the last may be shorter), batch `k` due `k × batch / rate` seconds after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Datagrams per second asked for.
    pub rate: f64,
    /// Datagrams in all.
    pub total: u64,
    /// Datagrams per batch.
    pub batch: u64,
}

impl Schedule {
    /// The schedule of `total` datagrams at `rate`/s: batches of what [`BATCH_WINDOW_NS`] holds
    /// at that rate, between 1 and [`MAX_BATCH`].
    pub fn new(rate: f64, total: u64) -> Schedule {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let per_window = (rate * BATCH_WINDOW_NS / 1e9).round();
        let batch = per_window.clamp(1.0, MAX_BATCH as f64) as u64;
        Schedule { rate, total, batch }
    }

    /// How many batches.
    pub fn batches(&self) -> u64 {
        self.total.div_ceil(self.batch)
    }

    /// Datagrams in batch `k` (0 past the end).
    pub fn batch_len(&self, k: u64) -> u64 {
        let first = k.saturating_mul(self.batch);
        self.total.saturating_sub(first).min(self.batch)
    }

    /// When batch `k` is due, in ns after the start.
    pub fn due_ns(&self, k: u64) -> u64 {
        let first = k.saturating_mul(self.batch) as f64;
        (first * 1e9 / self.rate).round() as u64
    }
}

/// What a datagram was, to the sequence accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// One of the trial's, seen for the first time, in order.
    New,
    /// One of the trial's, seen for the first time, after a higher one.
    Reordered,
    /// One of the trial's, seen before.
    Duplicate,
    /// Not one of the trial's sequence numbers.
    Stray,
}

/// The accounting of one trial's sequence numbers `first, first + 1, …, first + sent − 1`
/// (wrapping: `first` may be anywhere in the 64-bit space), allocated once before the trial.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    first: u64,
    sent: u64,
    seen: Vec<u64>,
    received: u64,
    duplicates: u64,
    reordered: u64,
    stray: u64,
    /// The highest index (sequence number − `first`) received so far.
    highest: Option<u64>,
}

/// The sequence accounting at the end of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqSummary {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct datagrams received.
    pub received: u64,
    /// Sent, not received, and below the highest received: lost in the middle.
    pub lost_middle: u64,
    /// Sent after the highest received: lost at the tail (or still queued when the drain
    /// period ended).
    pub lost_tail: u64,
    /// Datagrams received more than once (each extra copy counts).
    pub duplicates: u64,
    /// Datagrams that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Datagrams that were not the trial's.
    pub stray: u64,
}

impl SeqSummary {
    /// Every datagram lost.
    pub fn lost(&self) -> u64 {
        self.lost_middle + self.lost_tail
    }

    /// Lost, as a fraction of sent (0 when nothing was sent).
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost() as f64 / self.sent as f64
        }
    }
}

impl SeqTracker {
    /// Accounting for `sent` datagrams numbered from `first`.
    pub fn new(first: u64, sent: u64) -> SeqTracker {
        let words = usize::try_from(sent.div_ceil(64)).unwrap_or(usize::MAX);
        SeqTracker {
            first,
            sent,
            seen: vec![0; words],
            received: 0,
            duplicates: 0,
            reordered: 0,
            stray: 0,
            highest: None,
        }
    }

    /// Accounts for one arrival.
    pub fn record(&mut self, seq: u64) -> Arrival {
        let index = seq.wrapping_sub(self.first);
        if index >= self.sent {
            self.stray += 1;
            return Arrival::Stray;
        }
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        let Some(w) = self.seen.get_mut(word) else {
            self.stray += 1;
            return Arrival::Stray;
        };
        if *w & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        *w |= bit;
        self.received += 1;
        match self.highest {
            Some(h) if index < h => {
                self.reordered += 1;
                Arrival::Reordered
            }
            _ => {
                self.highest = Some(index);
                Arrival::New
            }
        }
    }

    /// Whether every datagram has arrived.
    pub fn complete(&self) -> bool {
        self.received == self.sent
    }

    /// The accounting so far.
    pub fn summary(&self) -> SeqSummary {
        let lost = self.sent - self.received;
        let lost_tail = match self.highest {
            Some(h) => self.sent - 1 - h,
            None => self.sent,
        };
        SeqSummary {
            sent: self.sent,
            received: self.received,
            lost_middle: lost - lost_tail,
            lost_tail,
            duplicates: self.duplicates,
            reordered: self.reordered,
            stray: self.stray,
        }
    }
}

/// One-way latencies of a trial's datagrams, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OneWay {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl OneWay {
    fn of(hist: &Histogram<u64>) -> OneWay {
        if hist.is_empty() {
            return OneWay::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        OneWay {
            p50_us: us(hist.value_at_quantile(0.50)),
            p99_us: us(hist.value_at_quantile(0.99)),
            p999_us: us(hist.value_at_quantile(0.999)),
            max_us: us(hist.max()),
            mean_us: hist.mean() / 1e3,
        }
    }
}

/// One trial: what to send.
#[derive(Debug, Clone, Copy)]
pub struct TrialSpec {
    /// Datagrams per second asked of the sender.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// How long the sink keeps receiving after the last datagram was sent (RFC 2544 § 26.1:
    /// 2 s), unless every datagram has arrived before.
    pub drain: Duration,
    /// The trial's tag (distinct per trial).
    pub tag: u16,
}

/// One trial: what happened.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Datagrams per second asked for.
    pub asked_pps: f64,
    /// Datagrams per second the sender managed, from its first send to the end of its last.
    pub offered_pps: f64,
    /// The sequence accounting.
    pub seq: SeqSummary,
    /// One-way latency of the datagrams received (first copies only), from the sender's stamp
    /// to the datagram's arrival at the sink's interface: the kernel's receive time stamp,
    /// taken as the switch hands the frame to the sink's veth (RFC 1242: latency ends when the
    /// frame is seen on the output port), so the sink's own wake-ups are not in it.
    pub latency: OneWay,
    /// The same datagrams' latency to the moment the sink read them (`recvmmsg` returned):
    /// adds the wait in the sink's socket queue for the sink thread to run.
    pub read_latency: OneWay,
    /// Where the CPU went during the trial.
    pub cpu: TrialCpu,
    /// Datagrams the sink's own socket dropped (its receive buffer was full), counted in the
    /// loss above; `None` if the kernel's table could not be read.
    pub sink_drops: Option<u64>,
    /// When the datagrams that took [`LATE_NS`] or more were sent.
    pub late: LateTimeline,
}

/// CPU time spent during a trial, in seconds, and the wall time it was spent in: the blaster
/// and sink threads (their own clocks, from their first to their last call), the switch's
/// processes (`Deployment::busy`, from /proc) and ksoftirqd, and the whole machine (/proc/stat).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrialCpu {
    /// Seconds from the blaster's start to the last datagram's arrival: the time the work was
    /// done in (the drain after it is idle).
    pub wall_s: f64,
    /// The blaster thread (its UDP sends, and whatever the kernel does inside them: for the
    /// kernel bridge, the whole forwarding path).
    pub blaster_s: f64,
    /// The sink thread.
    pub sink_s: f64,
    /// The switch's daemon; `None` if it has none or it is not tracked.
    pub switch_s: Option<f64>,
    /// ksoftirqd threads (softirq work deferred out of the syscalls).
    pub softirqd_s: f64,
    /// Every CPU of the machine, busy (not idle, not iowait).
    pub machine_busy_s: f64,
    /// CPUs of the machine.
    pub cpus: usize,
}

impl TrialCpu {
    /// Percent of one CPU over the trial.
    pub fn percent(&self, seconds: f64) -> f64 {
        100.0 * seconds / self.wall_s.max(f64::EPSILON)
    }

    /// Microseconds of CPU per datagram received.
    pub fn per_datagram_us(seconds: f64, received: u64) -> f64 {
        seconds * 1e6 / received.max(1) as f64
    }
}

/// The CPU counters a trial's figures are differences of.
struct CpuSnapshot {
    /// CPU seconds of each of the switch's processes, if tracked.
    switch: Option<Vec<f64>>,
    /// CPU seconds of each ksoftirqd thread.
    softirqd: Vec<f64>,
    /// The machine's busy and total jiffies.
    machine: Option<(u64, u64)>,
    /// When (ns of `CLOCK_MONOTONIC`).
    at_ns: u64,
}

impl CpuSnapshot {
    fn take(switch: Option<&[u32]>, softirqd: &[u32]) -> CpuSnapshot {
        CpuSnapshot {
            switch: switch.map(super::measure::cpu_snapshot),
            softirqd: super::measure::cpu_snapshot(softirqd),
            machine: machine_jiffies(),
            at_ns: monotonic_ns(),
        }
    }
}

/// Busy and total jiffies of all CPUs together, from /proc/stat's first line
/// (`cpu user nice system idle iowait irq softirq steal ...`).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

/// (busy, total) of a /proc/stat `cpu` line: everything but idle and iowait is busy; guest
/// time is already in user.
pub fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut cols = line.split_whitespace();
    if cols.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = cols
        .take(8)
        .map(|c| c.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4], total))
}

impl Trial {
    /// Whether the sender fell short of the rate asked (by more than 5 %).
    pub fn sender_short(&self) -> bool {
        self.offered_pps < 0.95 * self.asked_pps
    }
}

/// Sends at `spec.rate` from the client host to a sink in the server host and accounts for
/// every datagram.
pub fn trial(d: &Deployment, spec: TrialSpec) -> Result<Trial> {
    check_interrupt()?;
    let total = (spec.rate * spec.duration.as_secs_f64()).round().max(1.0) as u64;
    let schedule = Schedule::new(spec.rate, total);
    // A different first sequence number per trial, wrapping past u64::MAX on the way.
    let first = u64::MAX - total / 2 - u64::from(spec.tag);
    let stop_at = Arc::new(AtomicU64::new(u64::MAX));

    let softirqd = super::measure::softirqd_pids();
    let switch = d.busy.clone().filter(|p| !p.is_empty());
    let before = CpuSnapshot::take(switch.as_deref(), &softirqd);
    let (tx, rx) = mpsc::channel();
    let bind = d.server.addr;
    let sink_stop = stop_at.clone();
    let sink = spawn_in(&d.server.netns, "rfc2544-sink", move || {
        let sock = udp_socket(bind, libc::SO_RCVBUFFORCE)?;
        sock.set_read_timeout(Some(SINK_POLL))
            .context(|| "setting the sink's read timeout".into())?;
        let port = sock.local_addr().context(|| "getsockname".into())?.port();
        let _ = tx.send(port);
        let counted = receive(&sock, first, total, spec.tag, &sink_stop)?;
        // The sink thread is in the server's namespace: its own view of the UDP table.
        let drops = std::fs::read_to_string("/proc/thread-self/net/udp")
            .ok()
            .and_then(|t| socket_drops(&t, bind, port));
        Ok((counted, drops))
    })?;
    let port = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(p) => p,
        Err(_) => {
            stop_at.store(0, Ordering::Relaxed);
            join(sink)?;
            return Err(Error::Unexpected("the sink did not start".into()));
        }
    };
    let target = SocketAddrV4::new(d.connect_to.unwrap_or(d.server.addr), port);
    let from = d.client.addr;
    let sender = spawn_in(&d.client.netns, "rfc2544-blast", move || {
        let cpu = thread_cpu_ns();
        let pps = send(from, target, first, schedule, spec.tag, u64::MAX)?;
        Ok((pps, thread_cpu_ns().saturating_sub(cpu)))
    })
    .and_then(join);
    let drain_ns = u64::try_from(spec.drain.as_nanos()).unwrap_or(u64::MAX);
    // On success the sink stops a drain period after the last send; on failure at once.
    let stop = match &sender {
        Ok(_) => monotonic_ns().saturating_add(drain_ns),
        Err(_) => 0,
    };
    stop_at.store(stop, Ordering::Relaxed);
    let received = join(sink);
    let after = CpuSnapshot::take(switch.as_deref(), &softirqd);
    let (sent, blaster_ns) = sender?;
    let (sink, sink_drops) = received?;
    let seconds = |b: &[f64], a: &[f64]| a.iter().zip(b).map(|(a, b)| (a - b).max(0.0)).sum();
    let cpu = TrialCpu {
        wall_s: sink
            .last_ns
            .unwrap_or(after.at_ns)
            .saturating_sub(before.at_ns) as f64
            / 1e9,
        blaster_s: blaster_ns as f64 / 1e9,
        sink_s: sink.cpu_ns as f64 / 1e9,
        switch_s: match (&before.switch, &after.switch) {
            (Some(b), Some(a)) => Some(seconds(b, a)),
            _ => None,
        },
        softirqd_s: seconds(&before.softirqd, &after.softirqd),
        // USER_HZ, the unit of /proc/stat, is 100 on every Linux ABI.
        machine_busy_s: match (before.machine, after.machine) {
            (Some(b), Some(a)) => a.0.saturating_sub(b.0) as f64 / 100.0,
            _ => 0.0,
        },
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(Trial {
        asked_pps: spec.rate,
        offered_pps: sent,
        seq: sink.seq,
        latency: sink.arrival,
        read_latency: sink.read,
        cpu,
        sink_drops,
        late: sink.late,
    })
}

/// The `drops` count of the UDP socket bound to `addr`:`port` in a `/proc/net/udp` table
/// (columns: `sl local_address rem_address st ... drops`, addresses as hex `IP:PORT`, the IP
/// in the kernel's byte order).
fn socket_drops(table: &str, addr: Ipv4Addr, port: u16) -> Option<u64> {
    let local = format!("{:08X}:{port:04X}", u32::from_ne_bytes(addr.octets()));
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.nth(1)? == local).then(|| line.split_whitespace().last()?.parse().ok())?
    })
}

/// The blaster alone, with no switch and no receiver: as fast as it can for `duration`, from a
/// namespace of its own (`{prefix}-blast`, removed afterwards) into a veth whose peer drops
/// every frame on arrival (addressed to a MAC that is not its own: a static neighbour entry).
/// Returns the rate it reached, datagrams per second: the most it can offer any switch behind
/// a veth on this machine.
pub fn ceiling(prefix: &str, duration: Duration) -> Result<f64> {
    use super::netns::Netns;
    use super::proc::run;
    use std::process::Command;
    let ns = Netns::create(&format!("{prefix}-blast"))?;
    let ip = |args: &[&str]| run(Command::new("ip").args(["-n", ns.name()]).args(args)).map(drop);
    ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])?;
    ip(&["addr", "add", "10.76.0.1/24", "dev", "v0"])?;
    ip(&["link", "set", "v0", "up"])?;
    ip(&["link", "set", "v1", "up"])?;
    ip(&[
        "neigh",
        "add",
        "10.76.0.2",
        "lladdr",
        "02:00:00:76:00:02",
        "dev",
        "v0",
        "nud",
        "permanent",
    ])?;
    // Far more than any sender reaches: the schedule is always behind, so it never sleeps.
    let rate = 10e6;
    let total = (rate * duration.as_secs_f64()) as u64;
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 76, 0, 2), 9);
    let stop_at = monotonic_ns().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(0));
    let handle = spawn_in(ns.name(), "rfc2544-ceiling", move || {
        send(
            Ipv4Addr::new(10, 76, 0, 1),
            to,
            0,
            Schedule::new(rate, total),
            0,
            stop_at,
        )
    })?;
    join(handle)
}

/// A UDP socket bound to `addr` (any port) with [`SOCKET_BUFFER`] forced as `option`
/// (`SO_SNDBUFFORCE` or `SO_RCVBUFFORCE`).
fn udp_socket(addr: Ipv4Addr, option: libc::c_int) -> Result<UdpSocket> {
    let sock = UdpSocket::bind((addr, 0)).context(|| format!("binding {addr}"))?;
    let size = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt(2) on a socket we own, with a c_int option value of the right length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(&size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context(|| format!("setting a {SOCKET_BUFFER}-byte socket buffer"));
    }
    Ok(sock)
}

/// Whether a send may be tried again (the kernel had no room for a moment, or an ICMP error
/// from an earlier trial was reported on this socket).
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED)
    )
}

/// Sleeps until `CLOCK_MONOTONIC` reads `ns`.
fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_nanosleep(2) with an absolute time; it only reads the timespec. An early
    // return (EINTR) only sends the batch a little early.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// The blaster: sends the schedule's datagrams from `from` to `to`, each batch stamped with the
/// time it is handed to the kernel, stopping early at `stop_at` (ns of `CLOCK_MONOTONIC`).
/// Returns the rate it achieved (datagrams per second).
fn send(
    from: Ipv4Addr,
    to: SocketAddrV4,
    first: u64,
    schedule: Schedule,
    tag: u16,
    stop_at: u64,
) -> Result<f64> {
    let sock = udp_socket(from, libc::SO_SNDBUFFORCE)?;
    // SAFETY: prctl(2) PR_SET_TIMERSLACK on this thread: wake-ups within 1 ns of the schedule.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    // Connected: the route is looked up once, not per datagram.
    sock.connect(to).context(|| format!("connecting to {to}"))?;
    let mut payloads = [[0u8; UDP_PAYLOAD]; MAX_BATCH];
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is a valid value.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for ((iov, msg), payload) in iovs
        .iter_mut()
        .zip(msgs.iter_mut())
        .zip(payloads.iter_mut())
    {
        iov.iov_base = payload.as_mut_ptr().cast();
        iov.iov_len = UDP_PAYLOAD;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let start = monotonic_ns();
    let mut seq = first;
    let mut sent = 0u64;
    for k in 0..schedule.batches() {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        if k % 64 == 0 && monotonic_ns() >= stop_at {
            break;
        }
        let due = start.saturating_add(schedule.due_ns(k));
        if monotonic_ns() < due {
            sleep_until(due);
        }
        let n = schedule.batch_len(k) as usize;
        let now = monotonic_ns();
        for p in payloads.iter_mut().take(n) {
            encode(
                p,
                Stamp {
                    seq,
                    sent_ns: now,
                    tag,
                },
            );
            seq = seq.wrapping_add(1);
        }
        let mut done = 0;
        while done < n {
            // SAFETY: msgs[done..n] point at iovecs and payloads, all alive and unmoved for the
            // whole loop; the kernel only reads them (and writes msg_len).
            let rc = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if transient(&e) {
                    check_interrupt()?;
                    std::thread::yield_now();
                    continue;
                }
                return Err(e).context(|| format!("sendmmsg to {to}"));
            }
            done += rc as usize;
        }
        sent += n as u64;
    }
    let secs = monotonic_ns().saturating_sub(start) as f64 / 1e9;
    Ok(if secs > 0.0 {
        sent as f64 / secs
    } else {
        schedule.rate
    })
}

/// What the sink saw.
struct Sunk {
    seq: SeqSummary,
    /// Latency to the kernel's receive time stamp.
    arrival: OneWay,
    /// Latency to the read.
    read: OneWay,
    /// The sink thread's CPU time.
    cpu_ns: u64,
    /// When the last datagram arrived (ns of `CLOCK_MONOTONIC`).
    last_ns: Option<u64>,
    /// Datagrams that arrived [`LATE_NS`] or more after they were sent, by when they were sent.
    late: LateTimeline,
}

/// A datagram this long on the way is late: [`LateTimeline`] says when such ones were sent.
pub const LATE_NS: u64 = 1_000_000;
/// The width of a [`LateTimeline`] bucket.
pub const LATE_BUCKET_NS: u64 = 100_000_000;
/// Buckets a [`LateTimeline`] holds (later sends count in the last).
const LATE_BUCKETS: usize = 100;

/// How many late datagrams were sent in each [`LATE_BUCKET_NS`] of a trial, from the sink's
/// start: whether a trial's tail is spread evenly (a queue) or bunched (a pause).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LateTimeline {
    /// When the first bucket starts (ns of `CLOCK_MONOTONIC`, the sink's start).
    pub base_ns: u64,
    /// Late datagrams per bucket (empty if none was late).
    pub buckets: Vec<u32>,
}

impl LateTimeline {
    fn record(&mut self, sent_ns: u64) {
        if self.buckets.is_empty() {
            self.buckets.resize(LATE_BUCKETS, 0);
        }
        let k = (sent_ns.saturating_sub(self.base_ns) / LATE_BUCKET_NS) as usize;
        self.buckets[k.min(LATE_BUCKETS - 1)] += 1;
    }

    /// The buckets that saw a late datagram: `(start of the bucket in ms, count)`.
    pub fn nonzero(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let width_ms = LATE_BUCKET_NS / 1_000_000;
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(move |(k, n)| (k as u64 * width_ms, *n))
    }
}

/// Room for one `SCM_TIMESTAMPNS` control message (a `timespec`), 8-byte aligned.
const CMSG_ROOM: usize = 64;

/// The sink: receives until every datagram has arrived or `stop_at` (ns of `CLOCK_MONOTONIC`,
/// set once the sender is done) has passed. Each datagram's arrival is the kernel's receive
/// time stamp (`SO_TIMESTAMPNS`); one without a stamp counts as arriving when read.
fn receive(
    sock: &UdpSocket,
    first: u64,
    total: u64,
    tag: u16,
    stop_at: &AtomicU64,
) -> Result<Sunk> {
    let cpu_start = thread_cpu_ns();
    let mut late = LateTimeline {
        base_ns: monotonic_ns(),
        buckets: Vec::new(),
    };
    stamp_arrivals(sock)?;
    let mut tracker = SeqTracker::new(first, total);
    let new_hist = || {
        Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .map_err(|e| Error::Unexpected(format!("histogram: {e}")))
    };
    let (mut arrival, mut read) = (new_hist()?, new_hist()?);
    let mut last_ns = None;
    const BUF: usize = 64;
    let mut bufs = [[0u8; BUF]; MAX_BATCH];
    #[repr(align(8))]
    struct Cmsg([u8; CMSG_ROOM]);
    let mut cmsgs: Vec<Cmsg> = (0..MAX_BATCH).map(|_| Cmsg([0; CMSG_ROOM])).collect();
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is a valid value.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (((iov, msg), buf), cmsg) in iovs
        .iter_mut()
        .zip(msgs.iter_mut())
        .zip(bufs.iter_mut())
        .zip(cmsgs.iter_mut())
    {
        iov.iov_base = buf.as_mut_ptr().cast();
        iov.iov_len = BUF;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_hdr.msg_control = cmsg.0.as_mut_ptr().cast();
    }
    while !tracker.complete() && monotonic_ns() < stop_at.load(Ordering::Relaxed) {
        check_interrupt()?;
        // The kernel overwrites each control length with what it wrote.
        for msg in msgs.iter_mut() {
            msg.msg_hdr.msg_controllen = CMSG_ROOM as _;
        }
        // SAFETY: msgs point at iovecs over `bufs` and at the control buffers in `cmsgs`, all
        // alive and unmoved; the kernel writes at most iov_len bytes into each buffer, at most
        // msg_controllen into each control buffer, and msg_len/msg_flags in the headers. The
        // socket's read timeout bounds the wait for the first datagram.
        let rc = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                MAX_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                continue;
            }
            return Err(e).context(|| "recvmmsg".into());
        }
        let now = monotonic_ns();
        let offset = i128::from(realtime_ns()) - i128::from(now);
        for (msg, buf) in msgs.iter().zip(&bufs).take(rc as usize) {
            let len = (msg.msg_len as usize).min(BUF);
            match decode(&buf[..len]) {
                Some(s) if s.tag == tag => {
                    if matches!(tracker.record(s.seq), Arrival::New | Arrival::Reordered) {
                        let at = kernel_stamp(&msg.msg_hdr)
                            .map_or(now, |t| arrival_on_monotonic(t, offset).min(now));
                        let took = at.saturating_sub(s.sent_ns).max(1);
                        arrival.saturating_record(took);
                        if took >= LATE_NS {
                            late.record(s.sent_ns);
                        }
                        last_ns = Some(at);
                        read.saturating_record(now.saturating_sub(s.sent_ns).max(1));
                    }
                }
                _ => tracker.stray += 1,
            }
        }
    }
    Ok(Sunk {
        seq: tracker.summary(),
        arrival: OneWay::of(&arrival),
        read: OneWay::of(&read),
        cpu_ns: thread_cpu_ns().saturating_sub(cpu_start),
        last_ns,
        late,
    })
}

/// Asks the kernel to stamp every datagram `sock` receives with its arrival time
/// (`SO_TIMESTAMPNS`: taken as the frame enters the receiving host's stack, here as the switch
/// hands it to the sink's veth).
fn stamp_arrivals(sock: &UdpSocket) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) on a socket we own, with a c_int option value of the right length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(|| "SO_TIMESTAMPNS".into());
    }
    Ok(())
}

/// The `SCM_TIMESTAMPNS` time stamp (ns of `CLOCK_REALTIME`) among a received message's
/// control messages.
fn kernel_stamp(hdr: &libc::msghdr) -> Option<u64> {
    // SAFETY: `hdr` is a msghdr recvmmsg filled in: msg_control points at our buffer and
    // msg_controllen says how much of it the kernel wrote; the CMSG_* macros stay within that.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(
                    (ts.tv_sec as u64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add(ts.tv_nsec as u64),
                );
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_arrival_stamp_is_read_and_put_on_the_monotonic_time_line() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        stamp_arrivals(&sink).unwrap();
        let src = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mono_before, real_before) = (monotonic_ns(), realtime_ns());
        src.send_to(b"x", sink.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let mut cmsg = [0u64; CMSG_ROOM / 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cmsg.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_ROOM as _;
        // SAFETY: recvmsg(2) into the buffers `hdr` points at, all alive.
        let n = unsafe { libc::recvmsg(sink.as_raw_fd(), &mut hdr, 0) };
        assert_eq!(n, 1);
        let (mono_after, real_after) = (monotonic_ns(), realtime_ns());
        let stamp = kernel_stamp(&hdr).expect("an SCM_TIMESTAMPNS message");
        assert!((real_before..=real_after).contains(&stamp));
        let offset = i128::from(real_after) - i128::from(mono_after);
        let at = arrival_on_monotonic(stamp, offset);
        // Within the window, give or take the two clocks' reads.
        assert!(at + 1_000_000 >= mono_before && at <= mono_after + 1_000_000);
        // No control message, no stamp.
        hdr.msg_controllen = 0;
        assert_eq!(kernel_stamp(&hdr), None);
    }

    #[test]
    fn an_arrival_before_the_epoch_of_monotonic_is_clamped() {
        assert_eq!(arrival_on_monotonic(5, 10), 0);
        assert_eq!(arrival_on_monotonic(1_000, 400), 600);
    }

    #[test]
    fn busy_time_is_everything_but_idle_and_iowait() {
        // user nice system idle iowait irq softirq steal
        let line = "cpu  100 5 50 1000 20 3 7 0 0 0";
        assert_eq!(parse_cpu_line(line), Some((165, 1185)));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5"), None);
        assert_eq!(parse_cpu_line("cpu 1 2"), None);
    }

    #[test]
    fn cpu_per_datagram_and_percent() {
        let c = TrialCpu {
            wall_s: 2.0,
            ..TrialCpu::default()
        };
        assert_eq!(c.percent(1.0), 50.0);
        assert_eq!(TrialCpu::per_datagram_us(0.5, 100_000), 5.0);
        assert_eq!(TrialCpu::per_datagram_us(0.5, 0), 500_000.0);
    }

    #[test]
    fn the_sink_socket_drops_are_read_from_the_udp_table() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             \x20 12: 01004D0A:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 0\n\
             \x20 13: 02004D0A:9C40 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1235 2 0000000000000000 4466\n";
        let ip = Ipv4Addr::new(10, 77, 0, 2);
        if cfg!(target_endian = "little") {
            assert_eq!(socket_drops(table, ip, 0x9C40), Some(4466));
            assert_eq!(
                socket_drops(table, Ipv4Addr::new(10, 77, 0, 1), 0x9C41),
                Some(0)
            );
        }
        assert_eq!(socket_drops(table, ip, 0x9C42), None);
        assert_eq!(socket_drops("", ip, 0x9C40), None);
    }

    #[test]
    fn a_payload_round_trips_and_fits_a_64_byte_frame() {
        let s = Stamp {
            seq: u64::MAX - 3,
            sent_ns: 123_456_789_012,
            tag: 0xBEEF,
        };
        let mut buf = [0u8; UDP_PAYLOAD];
        encode(&mut buf, s);
        assert_eq!(decode(&buf), Some(s));
        assert_eq!(decode(&buf[..UDP_PAYLOAD - 1]), None);
        assert_eq!(decode(&[0u8; UDP_PAYLOAD + 1]), None);
    }

    #[test]
    fn late_datagrams_are_told_by_when_they_were_sent() {
        let base = 5_000_000_000;
        let mut late = LateTimeline {
            base_ns: base,
            buckets: Vec::new(),
        };
        assert_eq!(late.nonzero().count(), 0);
        // Two in the bucket at 1.2 s, one in the first, one sent before the sink started
        // (counted in the first), one far past the last bucket (counted in the last).
        for at in [1_200_000_000, 1_299_999_999, 0, 50_000_000] {
            late.record(base + at);
        }
        late.record(base - 1);
        late.record(base + 60_000_000_000);
        assert_eq!(
            late.nonzero().collect::<Vec<_>>(),
            [(0, 3), (1200, 2), ((LATE_BUCKETS as u64 - 1) * 100, 1)]
        );
    }

    #[test]
    fn in_order_arrivals_lose_nothing() {
        let mut t = SeqTracker::new(10, 5);
        for s in 10..15 {
            assert_eq!(t.record(s), Arrival::New);
        }
        assert!(t.complete());
        let s = t.summary();
        assert_eq!((s.sent, s.received, s.lost()), (5, 5, 0));
        assert_eq!(s.loss_ratio(), 0.0);
    }

    #[test]
    fn loss_in_the_middle_and_at_the_tail_are_told_apart() {
        let mut t = SeqTracker::new(0, 10);
        for s in [0, 1, 3, 4, 6] {
            t.record(s);
        }
        let s = t.summary();
        // 2 and 5 are gaps below the highest (6); 7, 8, 9 never came after it.
        assert_eq!((s.lost_middle, s.lost_tail, s.received), (2, 3, 5));
        assert!((s.loss_ratio() - 0.5).abs() < 1e-12);
        assert!(!t.complete());
    }

    #[test]
    fn nothing_received_is_all_tail() {
        let s = SeqTracker::new(7, 4).summary();
        assert_eq!((s.lost_middle, s.lost_tail), (0, 4));
    }

    #[test]
    fn duplicates_reorders_and_strays_are_counted_once_each() {
        let mut t = SeqTracker::new(100, 6);
        assert_eq!(t.record(100), Arrival::New);
        assert_eq!(t.record(103), Arrival::New);
        assert_eq!(t.record(101), Arrival::Reordered);
        assert_eq!(t.record(103), Arrival::Duplicate);
        assert_eq!(t.record(101), Arrival::Duplicate);
        assert_eq!(t.record(99), Arrival::Stray);
        assert_eq!(t.record(106), Arrival::Stray);
        assert_eq!(t.record(105), Arrival::New);
        let s = t.summary();
        assert_eq!(
            (s.received, s.duplicates, s.reordered, s.stray),
            (4, 2, 1, 2)
        );
        // 102 and 104 are gaps below 105; nothing after it.
        assert_eq!((s.lost_middle, s.lost_tail), (2, 0));
    }

    #[test]
    fn sequence_numbers_wrap_past_u64_max() {
        let first = u64::MAX - 2;
        let mut t = SeqTracker::new(first, 6);
        // first, first+1, first+2 = u64::MAX, then 0, 1, 2.
        assert_eq!(t.record(u64::MAX), Arrival::New);
        assert_eq!(t.record(1), Arrival::New);
        assert_eq!(t.record(first), Arrival::Reordered);
        assert_eq!(t.record(3), Arrival::Stray);
        assert_eq!(t.record(first - 1), Arrival::Stray);
        let s = t.summary();
        // Missing: first+1 (middle), 0 (middle), 2 (tail).
        assert_eq!((s.received, s.lost_middle, s.lost_tail), (3, 2, 1));
    }

    #[test]
    fn the_schedule_paces_batches_evenly() {
        // 400 kpps: 20 per 50 µs window, one batch every 50 µs.
        let s = Schedule::new(400_000.0, 1000);
        assert_eq!(s.batch, 20);
        assert_eq!(s.batches(), 50);
        assert_eq!(s.due_ns(0), 0);
        assert_eq!(s.due_ns(1), 50_000);
        assert_eq!(s.due_ns(49), 49 * 50_000);
        assert_eq!((0..s.batches()).map(|k| s.batch_len(k)).sum::<u64>(), 1000);
    }

    #[test]
    fn the_schedule_keeps_the_rate_with_a_short_last_batch() {
        let s = Schedule::new(100_000.0, 12);
        assert_eq!(s.batch, 5);
        assert_eq!(s.batches(), 3);
        assert_eq!(
            [
                s.batch_len(0),
                s.batch_len(1),
                s.batch_len(2),
                s.batch_len(3)
            ],
            [5, 5, 2, 0]
        );
        // Batch k carries datagrams from k×5: due at k×5 / 100 kpps = k×50 µs.
        assert_eq!(s.due_ns(2), 100_000);
    }

    #[test]
    fn the_schedule_bounds_its_batches() {
        // Slow: one datagram per batch, 1 ms apart.
        let slow = Schedule::new(1_000.0, 3);
        assert_eq!((slow.batch, slow.due_ns(2)), (1, 2_000_000));
        // Very fast: never more than MAX_BATCH at once.
        let fast = Schedule::new(1e9, 1_000);
        assert_eq!(fast.batch, MAX_BATCH as u64);
        // Nonsense rates do not divide by zero.
        assert_eq!(Schedule::new(0.0, 2).rate, 1.0);
        assert_eq!(Schedule::new(f64::NAN, 2).batch, 1);
    }
}
