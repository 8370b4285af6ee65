//! In-memory ports: a pair of queues standing in for a wire.
//!
//! The switch side is a [`MemoryPort`]; the other side, a [`MemoryPeer`], is held by a test host
//! or a benchmark, which injects frames and collects what the switch sends. No root needed.

use super::{Capabilities, FrameRef, Packet, Port};
use crate::offload::{Offloads, VirtioNetHdr};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Wire {
    /// Frames travelling towards the switch.
    to_switch: VecDeque<(VirtioNetHdr, Vec<u8>)>,
    /// Frames the switch sent.
    from_switch: VecDeque<(VirtioNetHdr, Vec<u8>)>,
    /// Most frames `from_switch` holds before `send` reports the port full.
    limit: usize,
}

/// The switch's end of an in-memory wire.
#[derive(Debug)]
pub struct MemoryPort {
    name: String,
    caps: Capabilities,
    wire: Arc<Mutex<Wire>>,
}

/// The far end of an in-memory wire (a test host).
#[derive(Debug, Clone)]
pub struct MemoryPeer {
    wire: Arc<Mutex<Wire>>,
}

/// Makes a wire: the port to attach to a bridge, and the peer to drive it with.
pub fn wire(name: &str, caps: Capabilities) -> (MemoryPort, MemoryPeer) {
    let wire = Arc::new(Mutex::new(Wire {
        limit: 4096,
        ..Wire::default()
    }));
    (
        MemoryPort {
            name: name.to_string(),
            caps,
            wire: wire.clone(),
        },
        MemoryPeer { wire },
    )
}

/// Capabilities of a plain 1500-byte port with no offloads.
pub fn plain_caps() -> Capabilities {
    Capabilities {
        mtu: 1500,
        offloads: Offloads::NONE,
        max_burst: 64,
    }
}

impl MemoryPeer {
    /// Puts a plain frame on the wire towards the switch.
    pub fn inject(&self, frame: &[u8]) {
        self.inject_with(VirtioNetHdr::NONE, frame)
    }

    /// Puts a frame with offload metadata on the wire towards the switch.
    pub fn inject_with(&self, meta: VirtioNetHdr, frame: &[u8]) {
        self.wire
            .lock()
            .unwrap()
            .to_switch
            .push_back((meta, frame.to_vec()));
    }

    /// Takes the oldest frame the switch sent, if any.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.take_with().map(|(_, f)| f)
    }

    /// Takes the oldest frame the switch sent, with its metadata.
    pub fn take_with(&self) -> Option<(VirtioNetHdr, Vec<u8>)> {
        self.wire.lock().unwrap().from_switch.pop_front()
    }

    /// Takes every frame the switch sent.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut w = self.wire.lock().unwrap();
        w.from_switch.drain(..).map(|(_, f)| f).collect()
    }

    /// Frames the switch sent that nobody took yet.
    pub fn pending(&self) -> usize {
        self.wire.lock().unwrap().from_switch.len()
    }

    /// Frames injected that the switch has not read yet.
    pub fn unread(&self) -> usize {
        self.wire.lock().unwrap().to_switch.len()
    }

    /// Sets how many sent frames the wire holds before the port reports itself full.
    pub fn set_limit(&self, limit: usize) {
        self.wire.lock().unwrap().limit = limit;
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
        let mut w = self.wire.lock().unwrap();
        let mut n = 0;
        while n < pkts.len() {
            let Some((meta, frame)) = w.to_switch.pop_front() else {
                break;
            };
            pkts[n].set(&frame);
            pkts[n].meta = meta;
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize> {
        let mut w = self.wire.lock().unwrap();
        let room = w.limit.saturating_sub(w.from_switch.len());
        let n = frames.len().min(room);
        for f in &frames[..n] {
            w.from_switch.push_back((f.meta, f.data.to_vec()));
        }
        Ok(n)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}
