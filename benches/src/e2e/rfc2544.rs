//! RFC 2544 throughput and latency under load with the blaster and sink of [`super::blast`]:
//! the highest offered rate of 64-byte frames carried with 0 % loss and with under 1 % loss,
//! found by bisection over trials (RFC 2544 § 26.1: a trial, then a drain period before the
//! count), and the one-way latency percentiles at 50 %, 90 % and 100 % of the rate carried with
//! under 1 % loss (RFC 2544 § 26.2 measures latency at the throughput rate; the lower loads show
//! whether a switch queues before it is full).
//!
//! Every datagram sent counts: one not received by the end of the drain period is lost, whether
//! it went missing in the middle or was still queued at the end.

use super::blast::{self, LateTimeline, Trial, TrialSpec, LATE_BUCKET_NS, LATE_NS};
use super::scenario::Deployment;
use super::{check_interrupt, Result};
use std::time::Duration;

/// Loss under which a rate counts as carried, for the "< 1 %" figure.
pub const LOSS_TOLERANCE: f64 = 0.01;
/// The loads of the latency measurement, in percent of the rate carried with under 1 % loss.
pub const LOAD_PERCENTS: [u32; 3] = [50, 90, 100];

/// How the measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Sending time of one trial.
    pub trial: Duration,
    /// Wait after the last datagram of a trial before counting (RFC 2544 § 26.1: 2 s).
    pub drain: Duration,
    /// The highest rate tried, datagrams per second (the search's first trial).
    pub max_pps: f64,
    /// The lowest rate tried.
    pub min_pps: f64,
    /// Most trials of the search for the under-1 % rate.
    pub steps: u32,
    /// Most further trials of the search for the 0 % rate (it starts from the first search's
    /// trials).
    pub zero_steps: u32,
    /// The search stops once the bracket is narrower than this fraction of its top.
    pub resolution: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            trial: Duration::from_secs(3),
            drain: Duration::from_secs(2),
            max_pps: 600_000.0,
            min_pps: 5_000.0,
            steps: 8,
            zero_steps: 4,
            resolution: 0.02,
        }
    }
}

/// The outcome of a bisection.
#[derive(Debug, Clone)]
pub struct Search<T> {
    /// The highest rate that passed, and its trial.
    pub best: Option<(f64, T)>,
    /// Trials run by this search, in order, with the rate each was asked for.
    pub tried: Vec<(f64, T)>,
    /// The highest rate passed, or a rate passed that the sender could not reach: the switch's
    /// limit is above what was offered.
    pub all_pass: bool,
    /// The lowest rate failed: the switch carries less than anything tried.
    pub all_fail: bool,
}

/// The highest rate in `[min, max]` whose trial passes, by bisection, assuming a rate passes
/// whenever a higher one does (the assumption RFC 2544's search makes). `achieved(t)` is the
/// rate a trial really offered (a sender may fall short of the rate asked): the bracket is kept
/// in achieved rates, and a pass more than 5 % short of its rate with no failure above it
/// ends the search (nothing higher can be offered; the figure is a floor). `known` are trials
/// already run (rate asked, result), which narrow the start; a known failure below a known
/// pass is taken as noise and ignored. Runs at most `steps` trials and stops once the bracket is within
/// `resolution` × its top; the first trial is at `max` unless `known` settles it.
#[allow(clippy::too_many_arguments)]
pub fn bisect<T: Clone>(
    min: f64,
    max: f64,
    steps: u32,
    resolution: f64,
    known: &[(f64, T)],
    pass: impl Fn(&T) -> bool,
    achieved: impl Fn(&T) -> f64,
    mut run: impl FnMut(f64) -> Result<T>,
) -> Result<Search<T>> {
    // The best pass (achieved rate, trial, whether the sender fell short of the rate asked).
    let mut best: Option<(f64, T, bool)> = None;
    let mut fails: Vec<f64> = Vec::new();
    let note = |asked: f64, t: &T, best: &mut Option<(f64, T, bool)>, fails: &mut Vec<f64>| {
        let rate = achieved(t).min(asked);
        if !pass(t) {
            fails.push(rate);
        } else if best.as_ref().is_none_or(|(r, ..)| rate > *r) {
            *best = Some((rate, t.clone(), rate < 0.95 * asked));
        }
    };
    for (asked, t) in known {
        note(*asked, t, &mut best, &mut fails);
    }
    let mut tried = Vec::new();
    let mut sender_limited = false;
    loop {
        let lo = best.as_ref().map(|(r, ..)| *r);
        let hi = fails
            .iter()
            .copied()
            .filter(|f| lo.is_none_or(|l| *f > l))
            .fold(None, |m: Option<f64>, f| Some(m.map_or(f, |m| m.min(f))));
        let next = match (lo, hi) {
            (Some(l), _) if l >= max => break,
            // The best pass fell short of its rate and nothing above it failed: the sender,
            // not the switch, is the limit.
            (Some(_), None) if best.as_ref().is_some_and(|b| b.2) => {
                sender_limited = true;
                break;
            }
            (_, None) => max,
            (None, Some(h)) if h <= min => break,
            (None, Some(h)) => (h / 2.0).max(min),
            (Some(l), Some(h)) if h - l <= resolution * h => break,
            (Some(l), Some(h)) => (l + h) / 2.0,
        };
        if tried.len() >= steps as usize {
            break;
        }
        let t = run(next)?;
        note(next, &t, &mut best, &mut fails);
        tried.push((next, t));
    }
    let best = best.map(|(r, t, _)| (r, t));
    let all_pass = sender_limited || best.as_ref().is_some_and(|(r, _)| *r >= max);
    let all_fail = best.is_none() && fails.iter().any(|f| *f <= min);
    Ok(Search {
        best,
        tried,
        all_pass,
        all_fail,
    })
}

/// Latency at one load.
#[derive(Debug, Clone)]
pub struct AtLoad {
    /// Percent of the rate carried with under 1 % loss.
    pub percent: u32,
    /// The trial.
    pub trial: Trial,
}

/// The whole RFC 2544 measurement of one switch.
#[derive(Debug, Clone)]
pub struct Rfc2544 {
    /// The best trial with 0 % loss, if any.
    pub zero_loss: Option<Trial>,
    /// The best trial with under 1 % loss, if any.
    pub one_percent: Option<Trial>,
    /// The under-1 % search passed at the highest rate tried, or at the most the sender could
    /// offer: a floor, the switch may carry more.
    pub at_ceiling: bool,
    /// Latency at [`LOAD_PERCENTS`] of the under-1 % rate.
    pub loads: Vec<AtLoad>,
    /// Every trial of the searches, in order.
    pub trials: Vec<Trial>,
}

impl Rfc2544 {
    /// The under-1 % rate, kpps offered (what RFC 2544 calls throughput).
    pub fn carried_kpps(&self) -> Option<f64> {
        self.one_percent.as_ref().map(|t| t.offered_pps / 1e3)
    }

    /// The 0 % rate, kpps offered.
    pub fn zero_loss_kpps(&self) -> Option<f64> {
        self.zero_loss.as_ref().map(|t| t.offered_pps / 1e3)
    }

    /// The latency trial at `percent` of the carried rate.
    pub fn at(&self, percent: u32) -> Option<&Trial> {
        self.loads
            .iter()
            .find(|l| l.percent == percent)
            .map(|l| &l.trial)
    }
}

/// The throughput searches (under 1 %, then 0 % starting from the first's trials), then the
/// latency trials, between the deployment's two hosts. `log` gets one line per trial.
pub fn measure(d: &Deployment, cfg: &Config, log: &mut dyn FnMut(&str)) -> Result<Rfc2544> {
    let mut tag: u16 = 0;
    let mut run = |rate: f64, log: &mut dyn FnMut(&str)| -> Result<Trial> {
        check_interrupt()?;
        tag = tag.wrapping_add(1);
        let t = blast::trial(
            d,
            TrialSpec {
                rate,
                duration: cfg.trial,
                drain: cfg.drain,
                tag,
            },
        )?;
        log(&describe(&t));
        Ok(t)
    };
    let lossy = |t: &Trial| t.seq.loss_ratio() < LOSS_TOLERANCE;
    let one = bisect(
        cfg.min_pps,
        cfg.max_pps,
        cfg.steps,
        cfg.resolution,
        &[],
        lossy,
        |t: &Trial| t.offered_pps,
        |r| run(r, log),
    )?;
    let zero = bisect(
        cfg.min_pps,
        cfg.max_pps,
        cfg.zero_steps,
        cfg.resolution,
        &one.tried,
        |t: &Trial| t.seq.lost() == 0,
        |t: &Trial| t.offered_pps,
        |r| run(r, log),
    )?;
    let mut trials: Vec<Trial> = one.tried.iter().map(|(_, t)| t.clone()).collect();
    trials.extend(zero.tried.iter().map(|(_, t)| t.clone()));
    let zero_loss = zero.best.map(|(_, t)| t);
    // A 0 % trial passes under 1 % too: on a noisy machine the 0 % search may pass a rate the
    // first search saw fail.
    let one_percent = higher(one.best.map(|(_, t)| t), zero_loss.clone());
    let mut loads = Vec::new();
    if let Some(carried) = &one_percent {
        for percent in LOAD_PERCENTS {
            let rate = carried.offered_pps * f64::from(percent) / 100.0;
            log(&format!("latency at {percent} % ({:.1} kpps)", rate / 1e3));
            loads.push(AtLoad {
                percent,
                trial: run(rate, log)?,
            });
        }
    }
    Ok(Rfc2544 {
        zero_loss,
        one_percent,
        at_ceiling: one.all_pass,
        loads,
        trials,
    })
}

/// Of two passing trials, the one that offered more.
fn higher(a: Option<Trial>, b: Option<Trial>) -> Option<Trial> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.offered_pps > a.offered_pps { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// One progress line for a trial.
pub fn describe(t: &Trial) -> String {
    let s = &t.seq;
    format!(
        "asked {:.1} kpps, offered {:.1}: {} sent, {} received, lost {} ({:.2} %: {} middle, {} \
         tail; {} at the sink's socket), {} dup, {} reordered; one-way p50 {:.1} / p99 {:.1} / p99.9 {:.1} / max {:.1} µs",
        t.asked_pps / 1e3,
        t.offered_pps / 1e3,
        s.sent,
        s.received,
        s.lost(),
        s.loss_ratio() * 100.0,
        s.lost_middle,
        s.lost_tail,
        t.sink_drops.map_or("?".into(), |d| d.to_string()),
        s.duplicates,
        s.reordered,
        t.latency.p50_us,
        t.latency.p99_us,
        t.latency.p999_us,
        t.latency.max_us,
    ) + &late_line(&t.late)
}

/// `; late (≥ 1 ms) by send time, per 100 ms from 45085.260243 s of CLOCK_MONOTONIC: 300 ms
/// 767, 1400 ms 1271` (nothing when none was late).
fn late_line(late: &LateTimeline) -> String {
    let buckets: Vec<String> = late
        .nonzero()
        .map(|(ms, n)| format!("{ms} ms {n}"))
        .collect();
    if buckets.is_empty() {
        return String::new();
    }
    format!(
        "; late (≥ {} ms) by send time, per {} ms from {:.6} s of CLOCK_MONOTONIC: {}",
        LATE_NS / 1_000_000,
        LATE_BUCKET_NS / 1_000_000,
        late.base_ns as f64 / 1e9,
        buckets.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::Error;

    /// A trial's result in the tests: (rate offered, loss ratio).
    type Res = (f64, f64);

    /// A switch that carries `capacity` without loss and drops what is above it, behind a
    /// sender that offers what it is asked, up to `sender`.
    fn switch(capacity: f64, sender: f64) -> impl FnMut(f64) -> Result<Res> {
        move |rate| {
            let offered = rate.min(sender);
            Ok((offered, ((offered - capacity) / offered).max(0.0)))
        }
    }

    fn under(tol: f64) -> impl Fn(&Res) -> bool {
        move |r| r.1 < tol
    }

    fn offered(r: &Res) -> f64 {
        r.0
    }

    fn search(
        max: f64,
        steps: u32,
        resolution: f64,
        known: &[(f64, Res)],
        tol: f64,
        run: impl FnMut(f64) -> Result<Res>,
    ) -> Search<Res> {
        bisect(1.0, max, steps, resolution, known, under(tol), offered, run).unwrap()
    }

    #[test]
    fn the_under_1_percent_rate_is_never_below_the_0_percent_rate() {
        let t = |kpps: f64| Trial {
            asked_pps: kpps * 1e3,
            offered_pps: kpps * 1e3,
            seq: blast::SeqSummary::default(),
            latency: blast::OneWay::default(),
            read_latency: blast::OneWay::default(),
            cpu: blast::TrialCpu::default(),
            sink_drops: None,
            late: Default::default(),
        };
        let rate = |x: Option<Trial>| x.map(|t| t.offered_pps);
        assert_eq!(
            rate(higher(Some(t(102.3)), Some(t(111.3)))),
            Some(111_300.0)
        );
        assert_eq!(
            rate(higher(Some(t(120.0)), Some(t(111.3)))),
            Some(120_000.0)
        );
        assert_eq!(rate(higher(None, Some(t(50.0)))), Some(50_000.0));
        assert_eq!(rate(higher(Some(t(60.0)), None)), Some(60_000.0));
        assert_eq!(rate(higher(None, None)), None);
    }

    #[test]
    fn bisection_converges_on_the_capacity() {
        let s = search(1000.0, 30, 0.01, &[], 1e-9, switch(300.0, f64::MAX));
        let (best, _) = s.best.unwrap();
        assert!((297.0..=300.0).contains(&best), "{best}");
        assert!(!s.all_pass && !s.all_fail);
        // It stopped on resolution, long before the step bound.
        assert!(s.tried.len() < 15, "{}", s.tried.len());
        // The first trial is at the top.
        assert_eq!(s.tried[0].0, 1000.0);
    }

    #[test]
    fn bisection_respects_its_step_bound() {
        let mut calls = 0;
        let mut sw = switch(300.0, f64::MAX);
        let s = search(1000.0, 4, 0.0, &[], 1e-9, |r| {
            calls += 1;
            sw(r)
        });
        assert_eq!((calls, s.tried.len()), (4, 4));
        // 1000 fails, 500 fails, 250 passes, 375 fails: best 250.
        let rates: Vec<f64> = s.tried.iter().map(|(r, _)| *r).collect();
        assert_eq!(rates, [1000.0, 500.0, 250.0, 375.0]);
        assert_eq!(s.best.unwrap().0, 250.0);
    }

    #[test]
    fn bisection_stops_at_once_when_everything_passes() {
        let s = search(1000.0, 10, 0.01, &[], 0.01, switch(5000.0, f64::MAX));
        assert_eq!(s.tried.len(), 1);
        assert!(s.all_pass && !s.all_fail);
        assert_eq!(s.best.unwrap().0, 1000.0);
    }

    #[test]
    fn bisection_stops_when_the_sender_is_the_limit() {
        // Asked 1000, the sender offered 200 and the switch lost nothing: 200 is a floor and
        // asking again cannot show more.
        let s = search(1000.0, 10, 0.01, &[], 0.01, switch(500.0, 200.0));
        assert_eq!(s.tried.len(), 1);
        assert!(s.all_pass);
        assert_eq!(s.best.unwrap().0, 200.0);
    }

    #[test]
    fn a_short_pass_below_a_failure_goes_on_bisecting() {
        // 1000 failed; asked 500, the sender offered 400 and nothing was lost: the limit is
        // between 400 and 1000, so the search goes on at 700.
        let known = [(1000.0, (1000.0, 0.5)), (500.0, (400.0, 0.0))];
        let mut asked = Vec::new();
        let mut sw = switch(600.0, f64::MAX);
        let s = search(1000.0, 1, 0.0, &known, 0.01, |r| {
            asked.push(r);
            sw(r)
        });
        assert_eq!(asked, [700.0]);
        assert!(!s.all_pass);
    }

    #[test]
    fn a_short_sender_that_fails_brackets_at_what_it_offered() {
        // Asked 1000, offered 400, lost: the failure is at 400, so the next ask is 200.
        let mut asked = Vec::new();
        let mut sw = switch(300.0, 400.0);
        let s = search(1000.0, 2, 0.0, &[], 0.01, |r| {
            asked.push(r);
            sw(r)
        });
        assert_eq!(asked, [1000.0, 200.0]);
        assert!(!s.all_pass);
    }

    #[test]
    fn bisection_reports_when_nothing_passes() {
        let s = bisect(10.0, 1000.0, 20, 0.01, &[], under(0.01), offered, |r| {
            Ok((r, 1.0))
        })
        .unwrap();
        assert!(s.best.is_none() && s.all_fail && !s.all_pass);
        // 1000, 500, 250, 125, 62.5, 31.25, 15.625, then the floor 10: eight trials.
        assert_eq!(s.tried.len(), 8);
        assert_eq!(s.tried.last().unwrap().0, 10.0);
    }

    #[test]
    fn bisection_tolerates_a_loss_threshold() {
        // 1 % loss allowed: a switch of capacity 300 passes up to 300 / 0.99.
        let s = search(1000.0, 40, 0.001, &[], 0.01, switch(300.0, f64::MAX));
        let (best, (_, loss)) = s.best.unwrap();
        assert!(best > 300.0 && best < 303.1, "{best}");
        assert!(loss < 0.01);
    }

    #[test]
    fn bisection_starts_from_known_trials_and_ignores_noise_below_a_pass() {
        // Known: 1000 failed, 200 passed, 100 failed (noise: below a pass, ignored).
        let known = [
            (1000.0, (1000.0, 0.5)),
            (200.0, (200.0, 0.0)),
            (100.0, (100.0, 0.2)),
        ];
        let mut asked = Vec::new();
        let mut sw = switch(300.0, f64::MAX);
        let s = search(1000.0, 1, 0.0, &known, 1e-9, |r| {
            asked.push(r);
            sw(r)
        });
        // Bracket [200, 1000]: the one step asks 600; nothing re-runs 1000.
        assert_eq!(asked, [600.0]);
        assert_eq!(s.best.unwrap().0, 200.0);
        assert!(!s.all_fail);
    }

    #[test]
    fn bisection_needs_no_trial_when_known_trials_settle_it() {
        let no_trial = |_| -> Result<Res> { panic!("no trial needed") };
        let s = search(1000.0, 5, 0.01, &[(1000.0, (1000.0, 0.0))], 0.01, no_trial);
        assert!(s.all_pass && s.tried.is_empty());
        let close = [(100.0, (100.0, 0.0)), (101.0, (101.0, 0.5))];
        let s = search(1000.0, 5, 0.02, &close, 0.01, no_trial);
        assert_eq!(s.best.unwrap().0, 100.0);
    }

    #[test]
    fn bisection_is_monotone_in_what_it_asks() {
        // Every rate asked after a pass is above it, every one after a failure below it.
        let s = search(1000.0, 12, 0.0, &[], 1e-9, switch(437.0, f64::MAX));
        for (i, (r, (_, loss))) in s.tried.iter().enumerate() {
            for (later, _) in &s.tried[i + 1..] {
                if *loss == 0.0 {
                    assert!(later > r, "{later} after a pass at {r}");
                } else {
                    assert!(later < r, "{later} after a failure at {r}");
                }
            }
        }
    }

    #[test]
    fn a_failing_trial_ends_the_search_with_its_error() {
        let e = bisect(
            1.0,
            10.0,
            5,
            0.0,
            &[],
            under(0.01),
            offered,
            |_| -> Result<Res> { Err(Error::Unexpected("boom".into())) },
        );
        assert!(matches!(e, Err(Error::Unexpected(m)) if m == "boom"));
    }
}
