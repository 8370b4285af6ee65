//! Traces: the record of what each pipeline stage decided for one frame.
//!
//! The pipeline is generic over an [`Observer`]. The datapath passes [`NoTrace`], whose `ON` is
//! `false`, so every recording site compiles away; `vswitchctl trace` and `vswitchd --trace` pass
//! a [`Trace`], which keeps one [`StageRecord`] per stage. Both run the same code.
//!
//! Beside the records, what a person needs to trace and capture frames:
//! - [`flow`]: `ofproto/trace`-style flow specs (and hex frames) turned into the frame to trace;
//! - [`summary`]: one frame described layer by layer, for trace and capture output;
//! - [`pcap`]: the pcap file a capture is written to.

pub mod flow;
pub mod pcap;
pub mod summary;

use std::fmt;

/// The named stages of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Validate the frame and classify its VLAN.
    Admit,
    /// Learn (or refresh) the source address.
    Learn,
    /// Find the destination in the MAC table.
    Lookup,
    /// Isolated ports (ICC off): an isolated port reaches only ports that are not isolated.
    /// Recorded only for frames entering an isolated port.
    Isolate,
    /// Decide the output: one port, a flood list, or a drop.
    Forward,
    /// Overlay: VXLAN encapsulation or decapsulation.
    Vxlan,
    /// ARP suppression: an ARP request answered by the switch for a known station.
    Arp,
}

impl Stage {
    /// The stage's name as printed.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Admit => "admit",
            Stage::Learn => "learn",
            Stage::Lookup => "lookup",
            Stage::Isolate => "isolate",
            Stage::Forward => "forward",
            Stage::Vxlan => "vxlan",
            Stage::Arp => "arp",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one stage decided, in words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StageRecord {
    pub stage: Stage,
    pub result: String,
}

/// Receives stage results from the pipeline.
pub trait Observer {
    /// False for observers that record nothing: lets the compiler remove the recording.
    const ON: bool;
    /// Called once per stage when `ON`.
    fn record(&mut self, stage: Stage, result: fmt::Arguments<'_>);
}

/// Records nothing, costs nothing: the fast path's observer.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl Observer for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn record(&mut self, _: Stage, _: fmt::Arguments<'_>) {}
}

/// Keeps every stage's result.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trace {
    pub stages: Vec<StageRecord>,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Trace {
        Trace::default()
    }

    /// The result recorded for `stage`, if the frame got that far.
    pub fn result(&self, stage: Stage) -> Option<&str> {
        self.stages
            .iter()
            .find(|r| r.stage == stage)
            .map(|r| r.result.as_str())
    }
}

impl Observer for Trace {
    const ON: bool = true;
    fn record(&mut self, stage: Stage, result: fmt::Arguments<'_>) {
        self.stages.push(StageRecord {
            stage,
            result: result.to_string(),
        });
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{}: {}", r.stage, r.result)?;
        }
        Ok(())
    }
}
