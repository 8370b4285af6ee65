//! `vswitchctl trace` and `vswitchctl capture`: every decision the switch makes, and the frames
//! a port sees, written as a pcap file.

use clap::Args;
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use tools::api::{self, CapturedFrame, Request};

/// `trace …`
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["frame", "flow", "live"]))]
pub struct TraceArgs {
    /// The port the frame comes in on (for --frame and --flow).
    #[arg(
        long = "in-port",
        value_name = "PORT",
        required_unless_present = "live"
    )]
    in_port: Option<String>,
    /// The frame as hex bytes (spaces and colons allowed).
    #[arg(long, value_name = "HEX")]
    frame: Option<String>,
    /// A flow spec to build the frame from, e.g. dl_src=…,dl_dst=…,ip,nw_src=…,tcp,tp_dst=80.
    #[arg(long, value_name = "SPEC")]
    flow: Option<String>,
    /// Trace real frames as they pass, until --count or Ctrl-C.
    #[arg(long)]
    live: bool,
    /// With --live: only frames in or out of this port.
    #[arg(long, value_name = "PORT", requires = "live")]
    port: Option<String>,
    /// With --live: stop after N frames.
    #[arg(long, value_name = "N", requires = "live")]
    count: Option<u64>,
}

impl TraceArgs {
    /// True for a streaming trace.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The request for the daemon.
    pub fn request(&self) -> Request {
        if self.live {
            Request::TraceLive {
                port: self.port.clone(),
                count: self.count,
            }
        } else {
            Request::Trace {
                in_port: self.in_port.clone().unwrap_or_default(),
                frame: self.frame.clone(),
                flow: self.flow.clone(),
            }
        }
    }

    /// Human output of a one-shot trace.
    pub fn render(&self, result: &Value) -> String {
        render_trace(result)
    }
}

/// A trace record (one-shot or live) as a person reads it.
pub fn render_trace(r: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    out.push_str(&format!("in_port: {}\n", s(&r["in_port"])));
    if let Some(sum) = r.get("summary").and_then(Value::as_str) {
        out.push_str(&format!("frame:   {sum}\n"));
    }
    if let Some(stages) = r["stages"].as_array() {
        for st in stages {
            out.push_str(&format!("  {:<8} {}\n", s(&st["stage"]), s(&st["result"])));
        }
    }
    match r["drop"].as_str() {
        Some(reason) => out.push_str(&format!("result:  drop ({reason})\n")),
        None => {
            let acts: Vec<String> = r["actions"]
                .as_array()
                .map(|a| a.iter().map(action_text).collect())
                .unwrap_or_default();
            out.push_str(&format!("result:  {}\n", acts.join(", ")));
        }
    }
    out
}

fn action_text(a: &Value) -> String {
    let port = a["output"].as_str().unwrap_or("?");
    let mut t = format!("output:{port}");
    if let Some(r) = a["remote"].as_str() {
        t.push_str(&format!(" (remote {r}, vni {})", a["vni"]));
    }
    if let Some(v) = a.get("vlan").and_then(Value::as_u64) {
        t.push_str(&format!(" (vlan {v})"));
    }
    t
}

/// Runs a live trace, printing each record as it comes (JSON lines with `--json`).
pub fn live(socket: &Path, req: &Request, json: bool) -> io::Result<api::Response> {
    let stdout = io::stdout();
    api::stream(socket, req, |v| {
        let mut out = stdout.lock();
        let text = if json {
            format!("{v}\n")
        } else {
            render_trace(v) + "\n"
        };
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_ok()
    })
}

/// `capture PORT -w FILE [--count N]`
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The port whose frames (received and sent) are captured.
    #[arg(value_name = "PORT")]
    port: String,
    /// The pcap file to write (nanosecond timestamps; tshark and Wireshark read it).
    #[arg(short = 'w', value_name = "FILE")]
    file: PathBuf,
    /// Stop after N frames (else at Ctrl-C).
    #[arg(long, short = 'c', value_name = "N")]
    count: Option<u64>,
}

impl CaptureArgs {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        Request::Capture {
            port: self.port.clone(),
            count: self.count,
        }
    }

    /// The pcap file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Streams the frames into the pcap file; returns how many were written. The file is made
    /// only once the daemon has accepted the capture. Ending before `--count` frames (the port
    /// went away) is an error.
    pub fn run(&self, socket: &Path) -> io::Result<(api::Response, u64)> {
        let create = || -> io::Result<switch::trace::pcap::PcapWriter<BufWriter<File>>> {
            let file = File::create(&self.file).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", self.file.display()))
            })?;
            switch::trace::pcap::PcapWriter::new(BufWriter::new(file))
        };
        let mut pcap = None;
        let mut n = 0u64;
        let mut failure: Option<io::Error> = None;
        let resp = api::stream(socket, &self.request(), |v| {
            let Ok(f) = serde_json::from_value::<CapturedFrame>(v.clone()) else {
                return true;
            };
            let Ok(bytes) = switch::trace::flow::parse_hex_frame(&f.frame) else {
                return true;
            };
            let written = match pcap.as_mut() {
                Some(w) => Ok(w),
                None => create().map(|w| pcap.insert(w)),
            }
            .and_then(|w| {
                w.write_packet(f.ts_ns, &bytes, bytes.len())?;
                w.flush()
            });
            if let Err(e) = written {
                failure = Some(e);
                return false;
            }
            n += 1;
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if resp.ok {
            match pcap.as_mut() {
                Some(w) => w.flush()?,
                None => create()?.flush()?,
            }
            if let Some(want) = self.count.filter(|c| n < *c) {
                return Err(io::Error::other(format!(
                    "the capture ended after {n} of {want} frames (was the port removed?); {n} written to {}",
                    self.file.display()
                )));
            }
        }
        Ok((resp, n))
    }
}
