//! The learning bridge: the forwarding pipeline as named stages.
//!
//! ```text
//! frame ─▶ admit ─▶ learn ─▶ lookup ─▶ forward ─▶ output ports | flood list | drop(reason)
//!          │        │        │         ├ split horizon: never back out of the ingress port
//!          │        │        │         └ isolation: an isolated port never reaches another one
//!          │        │        └ (VLAN, dst MAC) in the MAC table; multicast and unknown flood
//!          │        └ (VLAN, src MAC) → ingress port; never multicast or zero sources
//!          └ length, tags, VLAN membership of the ingress port (access or trunk)
//! ```
//!
//! ARP suppression (between learn and lookup, [`Bridge::set_arp_entry`]): an ARP request for an
//! address the control plane told the bridge about (a cluster's remote stations) is answered by
//! the switch itself: the datapath turns the request into the reply in place
//! ([`crate::wire::arp::arp_reply_in_place`]) and sends it back out of the ingress port, so it never floods across
//! hosts. Requests for unknown addresses go on through the pipeline as before.
//!
//! Sans-IO (DESIGN.md principle 1): [`Bridge::decide`] takes the time, the ingress port and the
//! bytes, and returns a [`Decision`] without changing anything, which is what `vswitchctl trace`
//! runs; [`Bridge::process`] is `decide` followed by applying what the learn stage found. The
//! datapath calls `process` with [`NoTrace`], a trace calls `decide` with a [`Trace`]: one code
//! path.
//!
//! Isolated ports (ICC off, as the Linux bridge's `isolated` port flag): a frame entering an
//! isolated port may leave only through ports that are not isolated (a network's gateway); to
//! another isolated port it is dropped as [`DropReason::Isolated`], and a flood skips them. The
//! rule is recorded as its own stage, `isolate`, for frames entering an isolated port.
//!
//! VLANs (IEEE 802.1Q): an access port carries one VLAN untagged; a trunk port carries a set of
//! VLANs tagged, and optionally a native VLAN untagged. The frame's VLAN is fixed at admission;
//! tags are pushed or popped at egress by [`retag`].

use crate::counters::{DropReason, PortCounters};
use crate::fdb::{Fdb, FdbConfig, Learn};
use crate::offload::VirtioNetHdr;
use crate::port::{FrameRef, PortId};
use crate::time::Instant;
use crate::trace::{NoTrace, Observer, Stage, Trace};
use crate::wire::arp::arp_request;
use crate::wire::ethernet::{VlanTag, TAG, TAG_LEN};
use crate::wire::{L2Header, MacAddr, WireError};
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The 4094 usable VLAN ids as a bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    /// No VLAN.
    pub fn empty() -> VlanSet {
        VlanSet([0; 64])
    }

    /// VLANs 1–4094.
    pub fn all() -> VlanSet {
        let mut s = VlanSet::empty();
        for v in 1..=4094 {
            s.insert(v);
        }
        s
    }

    /// Adds a VLAN (ids outside 1–4094 are ignored).
    pub fn insert(&mut self, vid: u16) {
        if (1..=4094).contains(&vid) {
            self.0[vid as usize / 64] |= 1 << (vid % 64);
        }
    }

    /// True if the set holds `vid`.
    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        vid < 4096 && self.0[vid as usize / 64] & (1 << (vid % 64)) != 0
    }

    /// The VLANs in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=4094).filter(|v| self.contains(*v))
    }
}

impl FromIterator<u16> for VlanSet {
    fn from_iter<I: IntoIterator<Item = u16>>(it: I) -> Self {
        let mut s = VlanSet::empty();
        for v in it {
            s.insert(v);
        }
        s
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// How a port carries VLANs. (The trunk bitmap is 512 bytes inline: ports are few and the
/// bridge reads it on every flood, so no box.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMode {
    /// One VLAN, untagged on the wire.
    Access(u16),
    /// Several VLANs, tagged on the wire; untagged frames belong to `native`, if set.
    Trunk {
        native: Option<u16>,
        allowed: VlanSet,
    },
}

impl PortMode {
    /// The default: access port in VLAN 1.
    pub const DEFAULT: PortMode = PortMode::Access(1);

    /// True if frames of `vid` may leave or enter this port.
    #[inline]
    pub fn carries(&self, vid: u16) -> bool {
        match self {
            PortMode::Access(v) => *v == vid,
            PortMode::Trunk { native, allowed } => *native == Some(vid) || allowed.contains(vid),
        }
    }

    /// The tag a frame of `vid` wears when it leaves this port (`None`: untagged).
    #[inline]
    pub fn egress_tag(&self, vid: u16) -> Option<u16> {
        match self {
            PortMode::Access(_) => None,
            PortMode::Trunk { native, .. } if *native == Some(vid) => None,
            PortMode::Trunk { .. } => Some(vid),
        }
    }
}

impl fmt::Display for PortMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortMode::Access(v) => write!(f, "access vlan {v}"),
            PortMode::Trunk { native, allowed } => {
                write!(f, "trunk vlans {:?}", allowed)?;
                if let Some(n) = native {
                    write!(f, " native {n}")?;
                }
                Ok(())
            }
        }
    }
}

/// Settings of one bridge.
#[derive(Debug, Clone, Default)]
pub struct BridgeConfig {
    /// MAC table limits and aging.
    pub fdb: FdbConfig,
}

/// A port as the bridge knows it.
#[derive(Debug, Clone)]
pub struct BridgePort {
    /// Interface name, for traces and `fdb show`.
    pub name: String,
    /// Access or trunk.
    pub mode: PortMode,
    /// Longest frame admitted that is not a super-frame.
    pub max_frame_len: usize,
    /// False while the port's interface is gone or down: nothing is sent to it.
    pub up: bool,
    /// Counters shared with the control plane.
    pub counters: Arc<PortCounters>,
}

impl BridgePort {
    /// The port's MTU: the most a frame carries after its Ethernet header and tags
    /// (`max_frame_len` allows for two tags on top of it).
    pub fn mtu(&self) -> usize {
        self.max_frame_len
            .saturating_sub(crate::port::MAX_L2_HEADER_LEN)
    }
}

/// Where a frame's destination was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Known station behind this port.
    Hit(PortId),
    /// Unknown unicast destination: flood.
    Miss,
    /// Broadcast or multicast destination: flood.
    Multicast,
}

/// What the pipeline decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The frame's VLAN, fixed at admission (0 if it was dropped before).
    pub vlan: u16,
    /// The frame came in with a tag (which egress may need to pop).
    pub ingress_tagged: bool,
    /// What the learn stage found (None if the frame was dropped before learning).
    pub learn: Option<Learn>,
    /// What the lookup stage found (None if the frame was dropped before lookup).
    pub lookup: Option<Lookup>,
    /// `Ok(flooded)`: output to the ports in the caller's list; `Err`: dropped, and why.
    pub verdict: Result<bool, DropReason>,
    /// ARP suppression answered the frame (an ARP request): the caller turns it into the reply
    /// with this MAC ([`crate::wire::arp::arp_reply_in_place`]) and sends it back out of the ingress port, which
    /// is then the one port in its list.
    pub arp_reply: Option<MacAddr>,
}

impl Decision {
    fn dropped(vlan: u16, ingress_tagged: bool, reason: DropReason) -> Decision {
        Decision {
            vlan,
            ingress_tagged,
            learn: None,
            lookup: None,
            verdict: Err(reason),
            arp_reply: None,
        }
    }
}

/// The result of admission: the parsed header and the frame's VLAN.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    hdr: L2Header,
    vlan: u16,
    tagged: bool,
}

/// One learning bridge: its ports and its MAC table (one L2 broadcast domain per VLAN).
#[derive(Debug)]
pub struct Bridge {
    ports: Vec<Option<BridgePort>>,
    /// Per port slot: the port is isolated (kept beside `ports` so that a port's record stays
    /// as callers build it; a new port starts not isolated).
    isolated: Vec<bool>,
    fdb: Fdb,
    arp: ArpSuppression,
}

impl Bridge {
    /// A bridge with no ports.
    pub fn new(config: BridgeConfig) -> Bridge {
        Bridge {
            ports: Vec::new(),
            isolated: Vec::new(),
            fdb: Fdb::new(config.fdb),
            arp: ArpSuppression::default(),
        }
    }

    /// Attaches a port; returns its id (the lowest free one).
    pub fn add_port(&mut self, port: BridgePort) -> PortId {
        let slot = self.ports.iter().position(Option::is_none);
        let i = slot.unwrap_or(self.ports.len());
        if i == self.ports.len() {
            self.ports.push(None);
            self.isolated.push(false);
        }
        self.ports[i] = Some(port);
        self.isolated[i] = false;
        PortId(i as u16)
    }

    /// Marks a port isolated or not (ICC off); returns false for an unknown port.
    pub fn set_port_isolated(&mut self, id: PortId, isolated: bool) -> bool {
        if self.port(id).is_none() {
            return false;
        }
        self.isolated[id.index()] = isolated;
        true
    }

    /// Whether a port is isolated: frames between two isolated ports are dropped.
    #[inline]
    pub fn is_isolated(&self, id: PortId) -> bool {
        self.isolated.get(id.index()).copied().unwrap_or(false)
    }

    /// Detaches a port and forgets every MAC learned (or set) on it.
    pub fn remove_port(&mut self, id: PortId) -> Option<BridgePort> {
        let port = self.ports.get_mut(id.index())?.take()?;
        self.isolated[id.index()] = false;
        self.fdb.flush_port(id);
        Some(port)
    }

    /// A port by id.
    pub fn port(&self, id: PortId) -> Option<&BridgePort> {
        self.ports.get(id.index())?.as_ref()
    }

    /// A port by id, to change its mode or state.
    pub fn port_mut(&mut self, id: PortId) -> Option<&mut BridgePort> {
        self.ports.get_mut(id.index())?.as_mut()
    }

    /// Every port with its id.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &BridgePort)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((PortId(i as u16), p.as_ref()?)))
    }

    /// Marks a port up or down. A port going down loses its learned MACs.
    pub fn set_port_up(&mut self, id: PortId, up: bool) {
        if let Some(p) = self.port_mut(id) {
            p.up = up;
            if !up {
                self.fdb.flush_port(id);
            }
        }
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The MAC table, to add static entries or flush.
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Runs one frame through the pipeline and applies what it learned. Output ports are left in
    /// `out` (cleared first). The datapath's entry point.
    #[inline]
    pub fn process(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: FrameRef<'_>,
        out: &mut Vec<PortId>,
    ) -> Decision {
        let d = self.decide(now, in_port, frame, out, &mut NoTrace);
        self.apply(now, in_port, frame.data, &d);
        d
    }

    /// Like [`Bridge::process`], recording each stage into `trace` (for `vswitchd --trace`).
    pub fn process_traced(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: FrameRef<'_>,
        out: &mut Vec<PortId>,
        trace: &mut Trace,
    ) -> Decision {
        let d = self.decide(now, in_port, frame, out, trace);
        self.apply(now, in_port, frame.data, &d);
        d
    }

    /// Applies the learn stage's finding. Separate from [`Bridge::decide`] so a trace can run
    /// the pipeline without side effects.
    #[inline]
    pub fn apply(&mut self, now: Instant, in_port: PortId, frame: &[u8], d: &Decision) {
        if d.arp_reply.is_some() {
            self.arp.answered += 1;
        }
        let Some(learn) = d.learn else { return };
        match learn {
            // Seen at this instant already: nothing to write (and no table access).
            Learn::Current => {}
            Learn::Refused { .. } => {
                if let Some(p) = self.port(in_port) {
                    p.counters
                        .learn_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            _ => {
                // Admission already checked the length.
                let src = MacAddr::from_bytes(&frame[6..12]);
                self.fdb.apply_learn(now, d.vlan, src, in_port, learn);
            }
        }
    }

    /// Runs one frame through admit → learn → lookup → forward and says what should happen,
    /// changing nothing. Output ports go to `out` (cleared first).
    #[inline]
    pub fn decide<O: Observer>(
        &self,
        now: Instant,
        in_port: PortId,
        frame: FrameRef<'_>,
        out: &mut Vec<PortId>,
        obs: &mut O,
    ) -> Decision {
        out.clear();
        let admitted = match self.admit(in_port, frame, obs) {
            Ok(a) => a,
            Err(reason) => return Decision::dropped(0, false, reason),
        };
        let Admitted { hdr, vlan, tagged } = admitted;
        let learn = match self.learn(now, in_port, &hdr, vlan, obs) {
            Ok(l) => l,
            Err(reason) => return Decision::dropped(vlan, tagged, reason),
        };
        if let Some(mac) = self.suppress_arp(now, in_port, frame.data, &hdr, vlan, obs) {
            out.push(in_port);
            return Decision {
                vlan,
                ingress_tagged: tagged,
                learn: Some(learn),
                lookup: None,
                verdict: Ok(false),
                arp_reply: Some(mac),
            };
        }
        let lookup = self.lookup(now, &hdr, vlan, obs);
        let verdict = self.forward(in_port, vlan, lookup, out, obs);
        Decision {
            vlan,
            ingress_tagged: tagged,
            learn: Some(learn),
            lookup: Some(lookup),
            verdict,
            arp_reply: None,
        }
    }

    /// Stage 1: is this a frame we take on this port, and in which VLAN?
    #[inline]
    fn admit<O: Observer>(
        &self,
        in_port: PortId,
        frame: FrameRef<'_>,
        obs: &mut O,
    ) -> Result<Admitted, DropReason> {
        let result = self.admit_inner(in_port, frame);
        if O::ON {
            match &result {
                Ok(a) => obs.record(
                    Stage::Admit,
                    format_args!(
                        "ok: {} -> {}, vlan {}{}, {}",
                        a.hdr.src,
                        a.hdr.dst,
                        a.vlan,
                        if a.tagged { " (tagged)" } else { " (untagged)" },
                        a.hdr.ethertype
                    ),
                ),
                Err(r) => obs.record(Stage::Admit, format_args!("drop: {r}")),
            }
        }
        result
    }

    #[inline]
    fn admit_inner(&self, in_port: PortId, frame: FrameRef<'_>) -> Result<Admitted, DropReason> {
        let Some(port) = self.port(in_port) else {
            return Err(DropReason::PortDown);
        };
        if !port.up {
            return Err(DropReason::PortDown);
        }
        let hdr = L2Header::parse(frame.data).map_err(|e| match e {
            WireError::Runt(_) => DropReason::Runt,
            WireError::TruncatedTag | WireError::TooManyTags => DropReason::Malformed,
        })?;
        // Super-frames (a GSO virtio-net header) are big by design: segmented, each piece fits.
        if !frame.meta.is_gso() {
            if frame.data.len() > port.max_frame_len {
                return Err(DropReason::Oversize);
            }
            // More than the MTU carries: every egress port would refuse it; drop it once here.
            if frame.data.len() - hdr.payload_offset > port.mtu() {
                return Err(DropReason::TooBigForIngressPort);
            }
        }
        // Classify by the outermost tag; VLAN 0 is a priority tag, not a VLAN.
        let tag = hdr.outer.or(hdr.vlan);
        let vlan = match (&port.mode, tag) {
            (PortMode::Access(v), None) => *v,
            (PortMode::Access(v), Some(t)) if t.vid == 0 => *v,
            (PortMode::Access(_), Some(_)) => return Err(DropReason::VlanNotAllowed),
            (PortMode::Trunk { native, .. }, None) => native.ok_or(DropReason::VlanNotAllowed)?,
            (PortMode::Trunk { native, .. }, Some(t)) if t.vid == 0 => {
                native.ok_or(DropReason::VlanNotAllowed)?
            }
            (PortMode::Trunk { allowed, .. }, Some(t)) => {
                if !allowed.contains(t.vid) {
                    return Err(DropReason::VlanNotAllowed);
                }
                t.vid
            }
        };
        Ok(Admitted {
            hdr,
            vlan,
            tagged: tag.is_some(),
        })
    }

    /// Stage 2: what learning the source address does (decided, not yet applied).
    #[inline]
    fn learn<O: Observer>(
        &self,
        now: Instant,
        in_port: PortId,
        hdr: &L2Header,
        vlan: u16,
        obs: &mut O,
    ) -> Result<Learn, DropReason> {
        if !hdr.src.is_unicast() {
            if O::ON {
                obs.record(
                    Stage::Learn,
                    format_args!("drop: source {} is not a unicast address", hdr.src),
                );
            }
            return Err(DropReason::InvalidSource);
        }
        let learn = self.fdb.check_learn(now, vlan, hdr.src, in_port);
        if let Learn::Static { port } = learn {
            if port != in_port {
                // A station the control plane fixed on a port never moves: a frame claiming
                // its address elsewhere is spoofed (or the station was moved without telling us).
                if O::ON {
                    obs.record(
                        Stage::Learn,
                        format_args!(
                            "drop: {} is fixed on {}, not {}: {}",
                            hdr.src,
                            self.port_name(port),
                            self.port_name(in_port),
                            DropReason::MacMoveRefused
                        ),
                    );
                }
                return Err(DropReason::MacMoveRefused);
            }
        }
        if O::ON {
            let name = |p: PortId| self.port_name(p);
            match learn {
                Learn::New => obs.record(
                    Stage::Learn,
                    format_args!("new: {} vlan {} on {}", hdr.src, vlan, name(in_port)),
                ),
                Learn::Refresh | Learn::Current => obs.record(
                    Stage::Learn,
                    format_args!("refresh: {} already on {}", hdr.src, name(in_port)),
                ),
                Learn::Moved { from } => obs.record(
                    Stage::Learn,
                    format_args!(
                        "moved: {} from {} to {}",
                        hdr.src,
                        name(from),
                        name(in_port)
                    ),
                ),
                Learn::Static { port } => obs.record(
                    Stage::Learn,
                    format_args!("static: {} is fixed on {}", hdr.src, name(port)),
                ),
                Learn::Refused { per_port } => obs.record(
                    Stage::Learn,
                    format_args!(
                        "not learned: {} limit reached",
                        if per_port { "per-port" } else { "table" }
                    ),
                ),
            }
        }
        Ok(learn)
    }

    /// Stage 3: where is the destination?
    #[inline]
    fn lookup<O: Observer>(&self, now: Instant, hdr: &L2Header, vlan: u16, obs: &mut O) -> Lookup {
        let lookup = if hdr.dst.is_multicast() {
            Lookup::Multicast
        } else {
            match self.fdb.lookup(now, vlan, hdr.dst) {
                Some(p) => Lookup::Hit(p),
                None => Lookup::Miss,
            }
        };
        if O::ON {
            match lookup {
                Lookup::Hit(p) => obs.record(
                    Stage::Lookup,
                    format_args!("hit: {} vlan {} on {}", hdr.dst, vlan, self.port_name(p)),
                ),
                Lookup::Miss => obs.record(
                    Stage::Lookup,
                    format_args!("miss: {} vlan {} unknown", hdr.dst, vlan),
                ),
                Lookup::Multicast => obs.record(
                    Stage::Lookup,
                    format_args!(
                        "{}: {}",
                        if hdr.dst.is_broadcast() {
                            "broadcast"
                        } else {
                            "multicast"
                        },
                        hdr.dst
                    ),
                ),
            }
        }
        lookup
    }

    /// Stage 4: output to one port, flood the VLAN, or drop. Never back out of `in_port`.
    #[inline]
    fn forward<O: Observer>(
        &self,
        in_port: PortId,
        vlan: u16,
        lookup: Lookup,
        out: &mut Vec<PortId>,
        obs: &mut O,
    ) -> Result<bool, DropReason> {
        let isolated = self.is_isolated(in_port);
        let verdict = match lookup {
            Lookup::Hit(p) if p == in_port => Err(DropReason::SamePort),
            Lookup::Hit(p) if isolated && self.is_isolated(p) => {
                if O::ON {
                    obs.record(
                        Stage::Isolate,
                        format_args!(
                            "drop: {} and {} are both isolated ports (ICC off): {}",
                            self.port_name(in_port),
                            self.port_name(p),
                            DropReason::Isolated
                        ),
                    );
                }
                Err(DropReason::Isolated)
            }
            Lookup::Hit(p) => {
                if isolated && O::ON {
                    obs.record(
                        Stage::Isolate,
                        format_args!(
                            "pass: {} is isolated (ICC off), {} is not",
                            self.port_name(in_port),
                            self.port_name(p)
                        ),
                    );
                }
                match self.port(p) {
                    Some(port) if port.up && port.mode.carries(vlan) => {
                        out.push(p);
                        Ok(false)
                    }
                    Some(port) if !port.up => Err(DropReason::PortDown),
                    _ => Err(DropReason::VlanNotAllowed),
                }
            }
            Lookup::Miss | Lookup::Multicast => {
                let mut skipped = 0usize;
                for (id, port) in self.ports() {
                    if id != in_port && port.up && port.mode.carries(vlan) {
                        if isolated && self.is_isolated(id) {
                            skipped += 1;
                        } else {
                            out.push(id);
                        }
                    }
                }
                if isolated && O::ON {
                    obs.record(
                        Stage::Isolate,
                        format_args!(
                            "{} is isolated (ICC off): flood skips {skipped} isolated port(s)",
                            self.port_name(in_port)
                        ),
                    );
                }
                if !out.is_empty() {
                    Ok(true)
                } else if skipped > 0 {
                    Err(DropReason::Isolated)
                } else {
                    Err(DropReason::NoOutput)
                }
            }
        };
        if O::ON {
            match &verdict {
                Ok(flood) => {
                    let names: Vec<&str> = out.iter().map(|p| self.port_name(*p)).collect();
                    let what = if *flood { "flood" } else { "output" };
                    obs.record(Stage::Forward, format_args!("{what}: {}", names.join(", ")));
                }
                Err(r) => obs.record(Stage::Forward, format_args!("drop: {r}")),
            }
        }
        verdict
    }

    /// True when the frame's source MAC is a static station on another port of this bridge (in
    /// the VLAN `in_port` admits the frame to): the learn stage would drop the frame as
    /// `mac_move_refused`. For the VTEP, which learns remote MACs before the bridge sees the frame.
    pub fn refuses_source(&self, now: Instant, in_port: PortId, frame: FrameRef<'_>) -> bool {
        let Ok(a) = self.admit_inner(in_port, frame) else {
            return false;
        };
        matches!(
            self.learn(now, in_port, &a.hdr, a.vlan, &mut NoTrace),
            Err(DropReason::MacMoveRefused)
        )
    }

    /// A port's name, or `?N` for an unknown id.
    pub fn port_name(&self, id: PortId) -> &str {
        self.port(id).map(|p| p.name.as_str()).unwrap_or("?")
    }
}

/// The stations whose ARP requests the bridge answers itself, and how many it answered.
#[derive(Debug, Default)]
struct ArpSuppression {
    table: HashMap<Ipv4Addr, MacAddr>,
    answered: u64,
}

impl Bridge {
    /// ARP suppression: the bridge answers ARP requests for `ip` with `mac` itself.
    pub fn set_arp_entry(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.arp.table.insert(ip, mac);
    }

    /// Stops answering for `ip`; false if it was not in the table.
    pub fn remove_arp_entry(&mut self, ip: Ipv4Addr) -> bool {
        self.arp.table.remove(&ip).is_some()
    }

    /// The addresses the bridge answers ARP requests for, with their MACs (unordered).
    pub fn arp_entries(&self) -> impl Iterator<Item = (Ipv4Addr, MacAddr)> + '_ {
        self.arp.table.iter().map(|(ip, mac)| (*ip, *mac))
    }

    /// ARP requests answered by the bridge since it was made.
    pub fn arp_suppressed(&self) -> u64 {
        self.arp.answered
    }

    /// The ARP suppression stage: the MAC to answer with when the frame is an ARP request for
    /// an address in the table, asked from another port than the one its station sits behind
    /// (a request from the station's side goes on, as do gratuitous ARPs and probes).
    #[inline]
    fn suppress_arp<O: Observer>(
        &self,
        now: Instant,
        in_port: PortId,
        frame: &[u8],
        hdr: &L2Header,
        vlan: u16,
        obs: &mut O,
    ) -> Option<MacAddr> {
        if self.arp.table.is_empty() || hdr.ethertype != crate::wire::EtherType::Arp {
            return None;
        }
        let (sender, target) = arp_request(frame, hdr.payload_offset)?;
        if sender == target || sender.is_unspecified() {
            return None;
        }
        let Some(mac) = self.arp.table.get(&target).copied() else {
            if O::ON {
                obs.record(
                    Stage::Arp,
                    format_args!(
                        "miss: who-has {target} tell {sender}: not a known station, goes on"
                    ),
                );
            }
            return None;
        };
        if self.fdb.lookup(now, vlan, mac) == Some(in_port) {
            if O::ON {
                obs.record(
                    Stage::Arp,
                    format_args!(
                        "pass: {target} is at {mac} behind {}, the ingress port",
                        self.port_name(in_port)
                    ),
                );
            }
            return None;
        }
        if O::ON {
            obs.record(
                Stage::Arp,
                format_args!(
                    "suppressed: who-has {target} tell {sender}: {target} is-at {mac}, answered on {}",
                    self.port_name(in_port)
                ),
            );
        }
        Some(mac)
    }
}

/// Rewrites a frame's outermost tag for an egress port: `want` is the tag the frame must wear
/// (`None`: untagged). Returns the frame as it leaves, borrowing `frame` when nothing changes
/// and `scratch` otherwise; offsets in the offload metadata move with the tag.
pub fn retag<'a>(
    frame: FrameRef<'a>,
    ingress_tagged: bool,
    want: Option<u16>,
    scratch: &'a mut Vec<u8>,
) -> FrameRef<'a> {
    let data = frame.data;
    let shift = |meta: VirtioNetHdr, by: i32| -> VirtioNetHdr {
        let mv = |v: u16| if v == 0 { 0 } else { (v as i32 + by) as u16 };
        VirtioNetHdr {
            hdr_len: mv(meta.hdr_len),
            csum_start: mv(meta.csum_start),
            ..meta
        }
    };
    match (ingress_tagged, want) {
        (false, None) => frame,
        (true, Some(vid)) => {
            let Some(tag) = data.get(TAG).and_then(VlanTag::parse) else {
                return frame;
            };
            if tag.vid == vid {
                return frame;
            }
            scratch.clear();
            scratch.extend_from_slice(data);
            scratch[TAG].copy_from_slice(&VlanTag { vid, ..tag }.to_bytes());
            FrameRef {
                meta: frame.meta,
                data: scratch,
            }
        }
        (true, None) => {
            scratch.clear();
            scratch.extend_from_slice(&data[..TAG.start]);
            scratch.extend_from_slice(&data[TAG.end..]);
            FrameRef {
                meta: shift(frame.meta, -(TAG_LEN as i32)),
                data: scratch,
            }
        }
        (false, Some(vid)) => {
            scratch.clear();
            scratch.extend_from_slice(&data[..TAG.start]);
            let tag = VlanTag {
                tpid: crate::wire::ethernet::TPID_8021Q,
                pcp: 0,
                dei: false,
                vid,
            };
            scratch.extend_from_slice(&tag.to_bytes());
            scratch.extend_from_slice(&data[TAG.start..]);
            FrameRef {
                meta: shift(frame.meta, TAG_LEN as i32),
                data: scratch,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::Datapath;
    use crate::port::memory;
    use crate::wire::arp::arp_reply_in_place;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(60, 0);
        f
    }

    fn port(name: &str) -> BridgePort {
        BridgePort {
            name: name.into(),
            mode: PortMode::DEFAULT,
            max_frame_len: 1522,
            up: true,
            counters: Arc::default(),
        }
    }

    fn plain(data: &[u8]) -> FrameRef<'_> {
        FrameRef {
            meta: VirtioNetHdr::NONE,
            data,
        }
    }

    /// An ARP request from `src` (MAC `n`) at `spa` asking for `tpa`, broadcast, untagged.
    fn arp_request_frame(src: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = MacAddr::BROADCAST.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&spa);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa);
        f.resize(60, 0);
        f
    }

    #[test]
    fn a_known_address_is_answered_back_on_the_ingress_port_and_counted() {
        let mut b = Bridge::new(BridgeConfig::default());
        let local = b.add_port(port("veth0"));
        let vxlan = b.add_port(port("vxlan42"));
        let now = Instant::ZERO;
        let remote = mac(9);
        b.fdb_mut().add_static(now, 1, remote, vxlan).unwrap();
        b.set_arp_entry(Ipv4Addr::new(10, 0, 0, 9), remote);
        let req = arp_request_frame(mac(1), [10, 0, 0, 1], [10, 0, 0, 9]);
        let mut out = Vec::new();
        let mut trace = Trace::new();
        let d = b.decide(now, local, plain(&req), &mut out, &mut trace);
        assert_eq!(d.arp_reply, Some(remote));
        assert_eq!(out, vec![local]);
        assert!(trace.to_string().contains("arp: suppressed"), "{trace}");
        b.process(now, local, plain(&req), &mut out);
        assert_eq!(b.arp_suppressed(), 1);

        let mut reply = req.clone();
        assert!(arp_reply_in_place(&mut reply, remote));
        assert_eq!(&reply[0..6], &mac(1).0);
        assert_eq!(&reply[6..12], &remote.0);
        assert_eq!(&reply[20..22], &[0, 2]);
        assert_eq!(&reply[22..28], &remote.0);
        assert_eq!(&reply[28..32], &[10, 0, 0, 9]);
        assert_eq!(&reply[32..38], &mac(1).0);
        assert_eq!(&reply[38..42], &[10, 0, 0, 1]);
        // A reply is no request: left alone.
        let mut again = reply.clone();
        assert!(!arp_reply_in_place(&mut again, remote));
        assert_eq!(again, reply);

        // Unknown address: floods as before.
        let other = arp_request_frame(mac(1), [10, 0, 0, 1], [10, 0, 0, 7]);
        let d = b.process(now, local, plain(&other), &mut out);
        assert_eq!(d.arp_reply, None);
        assert_eq!(d.verdict, Ok(true));
        // From the station's own side: goes on too.
        let d = b.process(now, vxlan, plain(&req), &mut out);
        assert_eq!(d.arp_reply, None);
        // Gratuitous ARP: goes on.
        let g = arp_request_frame(mac(1), [10, 0, 0, 9], [10, 0, 0, 9]);
        assert_eq!(b.process(now, local, plain(&g), &mut out).arp_reply, None);
        assert!(b.remove_arp_entry(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(b.process(now, local, plain(&req), &mut out).arp_reply, None);
        assert_eq!(b.arp_suppressed(), 1);
    }

    #[test]
    fn a_static_station_cannot_move_and_frames_claiming_it_elsewhere_drop() {
        let mut b = Bridge::new(BridgeConfig::default());
        let (p0, p1, p2) = (
            b.add_port(port("p0")),
            b.add_port(port("p1")),
            b.add_port(port("p2")),
        );
        let now = Instant::from_secs(1);
        b.fdb_mut().add_static(now, 1, mac(1), p0).unwrap();
        let spoof = frame(MacAddr::BROADCAST, mac(1));
        let mut out = Vec::new();

        let mut trace = Trace::new();
        let d = b.decide(now, p1, plain(&spoof), &mut out, &mut trace);
        assert_eq!(d.verdict, Err(DropReason::MacMoveRefused));
        assert!(out.is_empty());
        let learn = trace.result(Stage::Learn).unwrap();
        assert!(
            learn.contains("mac_move_refused") && learn.contains("p0"),
            "{learn}"
        );
        assert!(b.refuses_source(now, p1, plain(&spoof)));

        let d = b.process(now, p1, plain(&spoof), &mut out);
        assert_eq!(d.verdict, Err(DropReason::MacMoveRefused));
        let e = b.fdb().get(now, 1, mac(1)).unwrap();
        assert_eq!((e.port, e.is_static), (p0, true), "the entry did not move");

        // From its own port the station speaks as usual.
        assert!(!b.refuses_source(now, p0, plain(&spoof)));
        let d = b.process(now, p0, plain(&spoof), &mut out);
        assert_eq!(d.verdict, Ok(true));
        assert_eq!(out, [p1, p2]);

        // A learned station still moves: the rule is for static entries only.
        b.process(now, p1, plain(&frame(MacAddr::BROADCAST, mac(2))), &mut out);
        let d = b.process(now, p2, plain(&frame(MacAddr::BROADCAST, mac(2))), &mut out);
        assert_eq!(d.learn, Some(Learn::Moved { from: p1 }));
        assert!(!b.refuses_source(now, p1, plain(&frame(MacAddr::BROADCAST, mac(2)))));
    }

    #[test]
    fn a_refused_move_is_counted_on_the_ingress_port() {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let (a, a_peer) = memory::wire("a", memory::plain_caps());
        let (s, s_peer) = memory::wire("s", memory::plain_caps());
        let ha = dp
            .add_port(net, Box::new(a), PortMode::DEFAULT)
            .ok()
            .unwrap();
        let hs = dp
            .add_port(net, Box::new(s), PortMode::DEFAULT)
            .ok()
            .unwrap();
        let now = Instant::from_secs(1);
        let (_, local_s) = dp.port_location(hs).unwrap();
        let bridge = dp.bridge_mut(net).unwrap();
        bridge
            .fdb_mut()
            .add_static(now, 1, mac(1), local_s)
            .unwrap();

        a_peer.inject(&frame(MacAddr::BROADCAST, mac(1)));
        dp.poll_all(now);
        let c = dp.counters(ha).unwrap().snapshot();
        assert_eq!(c.drops["mac_move_refused"], 1);
        assert_eq!(c.total_drops(), 1);
        assert!(s_peer.drain().is_empty(), "the spoofed frame went nowhere");
        assert!(dp.refuses_source(now, ha, plain(&frame(MacAddr::BROADCAST, mac(1)))));
        assert!(!dp.refuses_source(now, hs, plain(&frame(MacAddr::BROADCAST, mac(1)))));
    }

    #[test]
    fn isolated_ports_reach_the_gateway_but_not_each_other() {
        let mut b = Bridge::new(BridgeConfig::default());
        let (gw, s1, s2) = (
            b.add_port(port("gw")),
            b.add_port(port("s1")),
            b.add_port(port("s2")),
        );
        assert!(b.set_port_isolated(s1, true));
        assert!(b.set_port_isolated(s2, true));
        assert!(!b.set_port_isolated(PortId(9), true), "unknown port");
        let now = Instant::from_secs(1);
        let mut out = Vec::new();
        // Every station speaks once, so the table knows them.
        for (p, m) in [(gw, 10), (s1, 1), (s2, 2)] {
            b.process(now, p, plain(&frame(MacAddr::BROADCAST, mac(m))), &mut out);
        }

        // s1 → s2: both isolated, dropped with its own reason and an explicit stage.
        let mut trace = Trace::new();
        let d = b.decide(now, s1, plain(&frame(mac(2), mac(1))), &mut out, &mut trace);
        assert_eq!(d.verdict, Err(DropReason::Isolated));
        assert!(out.is_empty());
        let rule = trace.result(Stage::Isolate).unwrap();
        assert!(rule.starts_with("drop:") && rule.contains("s2"), "{rule}");

        // s1 → gateway passes; the stage says why.
        let mut trace = Trace::new();
        let d = b.decide(
            now,
            s1,
            plain(&frame(mac(10), mac(1))),
            &mut out,
            &mut trace,
        );
        assert_eq!(d.verdict, Ok(false));
        assert_eq!(out, [gw]);
        assert!(trace.result(Stage::Isolate).unwrap().starts_with("pass:"));

        // A broadcast from s1 floods to the gateway only.
        let d = b.decide(
            now,
            s1,
            plain(&frame(MacAddr::BROADCAST, mac(1))),
            &mut out,
            &mut NoTrace,
        );
        assert_eq!(d.verdict, Ok(true));
        assert_eq!(out, [gw]);

        // The gateway (not isolated) reaches both, and floods to both.
        let d = b.decide(
            now,
            gw,
            plain(&frame(mac(2), mac(10))),
            &mut out,
            &mut NoTrace,
        );
        assert_eq!((d.verdict, out.as_slice()), (Ok(false), &[s2][..]));
        let mut trace = Trace::new();
        let d = b.decide(
            now,
            gw,
            plain(&frame(MacAddr::BROADCAST, mac(10))),
            &mut out,
            &mut trace,
        );
        assert_eq!((d.verdict, out.as_slice()), (Ok(true), &[s1, s2][..]));
        assert_eq!(
            trace.result(Stage::Isolate),
            None,
            "no rule for a port that is not isolated"
        );

        // With the gateway gone, an isolated port's flood has nowhere to go: isolated, counted.
        b.remove_port(gw);
        let d = b.decide(
            now,
            s1,
            plain(&frame(MacAddr::BROADCAST, mac(1))),
            &mut out,
            &mut NoTrace,
        );
        assert_eq!(d.verdict, Err(DropReason::Isolated));

        // A new port in a freed slot starts not isolated; unmarking works.
        let again = b.add_port(port("gw2"));
        assert!(!b.is_isolated(again));
        b.set_port_isolated(s2, false);
        let d = b.decide(
            now,
            s1,
            plain(&frame(mac(2), mac(1))),
            &mut out,
            &mut NoTrace,
        );
        assert_eq!((d.verdict, out.as_slice()), (Ok(false), &[s2][..]));
    }

    #[test]
    fn an_isolated_drop_is_counted_on_the_ingress_port() {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let (a, a_peer) = memory::wire("a", memory::plain_caps());
        let (c, c_peer) = memory::wire("c", memory::plain_caps());
        let ha = dp
            .add_port(net, Box::new(a), PortMode::DEFAULT)
            .ok()
            .unwrap();
        let hc = dp
            .add_port(net, Box::new(c), PortMode::DEFAULT)
            .ok()
            .unwrap();
        for h in [ha, hc] {
            let (_, local) = dp.port_location(h).unwrap();
            assert!(dp.bridge_mut(net).unwrap().set_port_isolated(local, true));
        }
        let now = Instant::from_secs(1);
        a_peer.inject(&frame(MacAddr::BROADCAST, mac(1)));
        dp.poll_all(now);
        let counters = dp.counters(ha).unwrap().snapshot();
        assert_eq!(counters.drops["isolated"], 1);
        assert!(
            c_peer.drain().is_empty(),
            "nothing reached the other isolated port"
        );
    }

    #[test]
    fn a_frame_over_the_ingress_mtu_is_refused_at_admission() {
        let mut b = Bridge::new(BridgeConfig::default());
        let (p0, _p1) = (b.add_port(port("p0")), b.add_port(port("p1")));
        let now = Instant::from_secs(1);
        let mut out = Vec::new();
        let mut f = frame(MacAddr::BROADCAST, mac(1));
        f.resize(14 + 1500, 0);
        assert_eq!(
            b.decide(now, p0, plain(&f), &mut out, &mut NoTrace).verdict,
            Ok(true)
        );
        f.push(0);
        let mut trace = Trace::new();
        let d = b.decide(now, p0, plain(&f), &mut out, &mut trace);
        assert_eq!(d.verdict, Err(DropReason::TooBigForIngressPort));
        assert_eq!(
            trace.result(Stage::Admit),
            Some("drop: too_big_for_ingress_port")
        );
    }
}
