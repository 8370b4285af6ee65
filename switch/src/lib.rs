//! vswitch datapath: everything a frame meets between two ports, and nothing of the control plane.
//!
//! The layers, bottom up:
//! - [`wire`]: views over Ethernet, IPv4, IPv6, TCP and UDP headers, and the Internet
//!   checksum; every header offset lives there. Never panic.
//! - [`offload`], [`gso`] and [`gro`]: the virtio-net header that travels with each frame, the
//!   software checksum and segmentation done at ports that cannot take super-frames, and the
//!   coalescing of segments into super-frames.
//! - [`fdb`]: the MAC table, keyed by (VLAN, MAC), with aging, static entries and limits.
//! - [`bridge`]: the pipeline as named stages: admit → learn → lookup → forward, flood or drop.
//!   Sans-IO: it takes the time and the bytes and returns a decision.
//! - [`trace`]: the record of what each stage decided, for one frame (off costs nothing), and
//!   what tracing and capturing need beside it: flow specs, frame summaries, pcap files.
//! - [`counters`]: per-port packet, byte and drop counters (atomics, read by the control plane).
//! - [`port`]: the `Port` trait and its backends (in-memory, TAP, AF_PACKET).
//! - `testing` (hidden): support for tests that need root, namespaces and veths.

pub mod bridge;
pub mod counters;
pub mod datapath;
pub mod event_loop;
pub mod fdb;
pub mod gro;
pub mod gso;
pub mod offload;
pub mod port;
#[doc(hidden)]
pub mod testing;
pub mod time;
pub mod trace;
pub mod wire;

pub use bridge::{Bridge, BridgeConfig, BridgePort, Decision, Lookup, PortMode, VlanSet};
pub use counters::{DropReason, PortCounters};
pub use fdb::{Fdb, FdbConfig, FdbEntry};
pub use offload::{Offloads, VirtioNetHdr};
pub use port::{Capabilities, Port, PortId};
pub use time::Instant;
pub use wire::{MacAddr, WireError};
