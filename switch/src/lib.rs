//! vswitch datapath: everything a frame meets between two ports, and nothing of the control plane.
//!
//! The layers, bottom up:
//! - [`wire`]: views over Ethernet bytes (addresses, VLAN tags, EtherType); never panic.
//! - [`offload`] and [`gso`]: the virtio-net header that travels with each frame, and the
//!   software checksum and segmentation done at ports that cannot take super-frames.
//! - [`fdb`]: the MAC table, keyed by (VLAN, MAC), with aging, static entries and limits.
//! - [`bridge`]: the pipeline as named stages: admit → learn → lookup → forward, flood or drop.
//!   Sans-IO: it takes the time and the bytes and returns a decision.
//! - [`trace`]: the record of what each stage decided, for one frame (off costs nothing).
//! - [`counters`]: per-port packet, byte and drop counters (atomics, read by the control plane).
//! - [`port`]: the `Port` trait and its backends (in-memory, TAP, AF_PACKET).
//! - `testing` (hidden): support for tests that need root, namespaces and veths.

pub mod bridge;
pub mod counters;
pub mod datapath;
pub mod event_loop;
pub mod fdb;
pub mod flow;
pub mod gro;
pub mod gso;
pub mod offload;
pub mod pcap;
pub mod port;
pub mod summary;
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
