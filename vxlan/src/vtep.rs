//! The VTEP's logic, sans-IO: which peers an inner frame goes to, what an arriving datagram
//! carries, and what is learned from it. No socket, no clock: time is passed in.
//!
//! Per VNI (one overlay network, RFC 7348 § 5 "VXLAN Network Identifier") a [`Vtep`] keeps:
//! - a **flood list** of peers: the other VTEPs of the network. RFC 7348 § 4.2 maps broadcast,
//!   multicast and unknown unicast to an IP multicast group; like Linux's vxlan driver with
//!   `bridge fdb append 00:00:00:00:00:00 dst PEER` and Docker's overlay driver, we send one copy
//!   to each peer instead (head-end replication), so the underlay needs no multicast.
//! - a **remote MAC table**: inner MAC → peer. RFC 7348 § 4.1: a VTEP learns "the mapping of
//!   inner source MAC to outer source IP address" from what it decapsulates. Learned entries age
//!   out (default 300 s, like the Linux bridge); static entries (the control plane's, like
//!   Docker's peer entries) never age and are never overwritten by learning: a datagram from
//!   another peer claiming one is dropped (`mac_move_refused`), and so is one claiming a
//!   station fixed on a local port ([`Vtep::decap_guarded`] asks the bridge). A limit per VNI
//!   (default 8192) bounds what a flood of random source MACs can take; past it, new stations
//!   are not learned (their frames still flood).
//!
//! Only peers are trusted: a datagram from an address outside the VNI's peer list is refused and
//! teaches nothing (RFC 7348 § 7 on rogue endpoints), and every remote entry names a peer, so
//! removing a peer forgets its stations and no frame goes to it afterwards.
//!
//! VTEPs "MUST NOT fragment VXLAN packets" (RFC 7348 § 4.3): [`Vtep::fits`] says whether an inner
//! frame fits in one underlay packet, and the caller drops (and counts) the frames that do not.
//!
//! The UDP source port is "calculated using a hash of fields from the inner packet"
//! (RFC 7348 § 5): [`source_port`] hashes the inner flow into 49152–65535, so one flow keeps one
//! port (no reordering) and different flows spread over the underlay's ECMP paths and RSS queues.

use crate::header::{self, HEADER_LEN, MAX_VNI};
use crate::{DecapError, Error, RejectReason};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use switch::fdb::KeyHasher;

/// Tables keyed by MAC or VNI: the switch's fast hasher (keys are bounded by the limits).
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;
use std::net::IpAddr;
use std::time::Duration;
use switch::trace::{NoTrace, Observer, Stage};
use switch::wire::{ipv4, ipv6, udp, EtherType, L2Header};
use switch::{DropReason, Instant, MacAddr};

/// Length of an untagged Ethernet header: the least an inner frame must hold.
const ETHERNET_HEADER_LEN: usize = 14;
/// First port of the range source ports are hashed into (RFC 7348 § 5, RFC 6335 dynamic ports).
pub const SOURCE_PORT_MIN: u16 = 49152;
/// Last port of that range.
pub const SOURCE_PORT_MAX: u16 = 65535;

/// Settings of a VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtepConfig {
    /// The UDP port peers listen on (RFC 7348 § 5: 4789).
    pub port: u16,
    /// MTU of the underlay interface: the largest outer IP packet.
    pub underlay_mtu: usize,
    /// How long a learned remote MAC lives without being seen.
    pub aging: Duration,
    /// Most remote MACs per VNI, static ones included.
    pub max_entries_per_vni: usize,
}

impl Default for VtepConfig {
    fn default() -> Self {
        VtepConfig {
            port: header::DEFAULT_PORT,
            underlay_mtu: 1500,
            aging: Duration::from_secs(300),
            max_entries_per_vni: 8192,
        }
    }
}

/// How an inner frame is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapKind {
    /// The destination MAC is known: one copy to the peer behind it.
    Unicast,
    /// Broadcast, multicast or unknown unicast: one copy to every peer (head-end replication).
    Flood,
}

/// A remote MAC as `fdb show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The station's MAC address.
    pub mac: MacAddr,
    /// The peer it sits behind.
    pub peer: IpAddr,
    /// Time since it was last seen (zero for a static entry, which does not age).
    pub age: Duration,
    /// Added by the control plane: never ages, never moves by learning.
    pub is_static: bool,
}

/// One remote MAC in the table.
#[derive(Debug, Clone, Copy)]
struct Remote {
    peer: IpAddr,
    last_seen: Instant,
    is_static: bool,
}

/// What the VTEP knows about one VNI.
#[derive(Debug, Clone, Default)]
struct Network {
    /// The flood list, in the order peers were added.
    peers: Vec<IpAddr>,
    /// Remote MAC → peer.
    remotes: FastMap<MacAddr, Remote>,
}

impl Network {
    fn is_peer(&self, ip: IpAddr) -> bool {
        self.peers.contains(&ip)
    }

    /// The peer behind `mac`, unless the entry has aged out.
    fn lookup(&self, now: Instant, aging: Duration, mac: MacAddr) -> Option<IpAddr> {
        let r = self.remotes.get(&mac)?;
        (r.is_static || now.saturating_since(r.last_seen) < aging).then_some(r.peer)
    }
}

/// The VTEP: VNIs, their peers and remote MACs, and the encap/decap decisions.
#[derive(Debug, Clone)]
pub struct Vtep {
    config: VtepConfig,
    networks: FastMap<u32, Network>,
    rejected: [u64; RejectReason::COUNT],
    learn_refused: u64,
}

impl Vtep {
    /// A VTEP with no VNI.
    pub fn new(config: VtepConfig) -> Vtep {
        Vtep {
            config,
            networks: FastMap::default(),
            rejected: [0; RejectReason::COUNT],
            learn_refused: 0,
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &VtepConfig {
        &self.config
    }

    // -----------------------------------------------------------------------------------------
    // Control plane: VNIs, peers, static entries
    // -----------------------------------------------------------------------------------------

    /// Adds a VNI with no peer; adding one that exists changes nothing.
    pub fn add_vni(&mut self, vni: u32) -> Result<(), Error> {
        if vni > MAX_VNI {
            return Err(Error::InvalidVni(vni));
        }
        self.networks.entry(vni).or_default();
        Ok(())
    }

    /// Removes a VNI with its peers and remote MACs; false if it did not exist.
    pub fn remove_vni(&mut self, vni: u32) -> bool {
        self.networks.remove(&vni).is_some()
    }

    /// True when the VNI is configured.
    pub fn has_vni(&self, vni: u32) -> bool {
        self.networks.contains_key(&vni)
    }

    /// The configured VNIs, in no particular order.
    pub fn vnis(&self) -> impl Iterator<Item = u32> + '_ {
        self.networks.keys().copied()
    }

    /// Adds a peer to the VNI's flood list; false if it was already there.
    pub fn add_peer(&mut self, vni: u32, ip: IpAddr) -> Result<bool, Error> {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
            return Err(Error::InvalidPeer(ip));
        }
        let net = self.network_mut(vni)?;
        if net.is_peer(ip) {
            return Ok(false);
        }
        net.peers.push(ip);
        Ok(true)
    }

    /// Removes a peer and forgets every remote MAC behind it, static ones too; false if it
    /// was not a peer.
    pub fn remove_peer(&mut self, vni: u32, ip: IpAddr) -> Result<bool, Error> {
        let ip = ip.to_canonical();
        let net = self.network_mut(vni)?;
        let before = net.peers.len();
        net.peers.retain(|p| *p != ip);
        net.remotes.retain(|_, r| r.peer != ip);
        Ok(net.peers.len() != before)
    }

    /// The VNI's flood list (empty for an unknown VNI).
    pub fn peers(&self, vni: u32) -> &[IpAddr] {
        self.networks.get(&vni).map_or(&[], |n| &n.peers)
    }

    /// Adds (or replaces) a static entry: `mac` sits behind `ip`, which must be a peer.
    pub fn add_static(&mut self, vni: u32, mac: MacAddr, ip: IpAddr) -> Result<(), Error> {
        let ip = ip.to_canonical();
        let max = self.config.max_entries_per_vni;
        if !mac.is_unicast() {
            return Err(Error::InvalidMac(mac));
        }
        let net = self.network_mut(vni)?;
        if !net.is_peer(ip) {
            return Err(Error::NotAPeer(ip, vni));
        }
        if !net.remotes.contains_key(&mac) && net.remotes.len() >= max {
            return Err(Error::TableFull(vni, max));
        }
        let entry = Remote {
            peer: ip,
            last_seen: Instant::ZERO,
            is_static: true,
        };
        net.remotes.insert(mac, entry);
        Ok(())
    }

    /// Removes a remote MAC, static or learned; false if it was not there.
    pub fn remove_entry(&mut self, vni: u32, mac: MacAddr) -> Result<bool, Error> {
        Ok(self.network_mut(vni)?.remotes.remove(&mac).is_some())
    }

    /// Forgets every learned remote MAC of the VNI (static ones stay); returns how many.
    pub fn flush_learned(&mut self, vni: u32) -> Result<usize, Error> {
        let net = self.network_mut(vni)?;
        let before = net.remotes.len();
        net.remotes.retain(|_, r| r.is_static);
        Ok(before - net.remotes.len())
    }

    /// Drops learned entries older than the aging time, in every VNI; returns how many.
    pub fn age(&mut self, now: Instant) -> usize {
        let aging = self.config.aging;
        let mut removed = 0;
        for net in self.networks.values_mut() {
            let before = net.remotes.len();
            net.remotes
                .retain(|_, r| r.is_static || now.saturating_since(r.last_seen) < aging);
            removed += before - net.remotes.len();
        }
        removed
    }

    /// The VNI's live remote MACs, for `fdb show` (unordered; aged-out entries left out).
    pub fn remote_entries(&self, vni: u32, now: Instant) -> impl Iterator<Item = RemoteEntry> + '_ {
        let aging = self.config.aging;
        self.networks
            .get(&vni)
            .into_iter()
            .flat_map(|net| net.remotes.iter())
            .filter(move |(_, r)| r.is_static || now.saturating_since(r.last_seen) < aging)
            .map(move |(mac, r)| RemoteEntry {
                mac: *mac,
                peer: r.peer,
                age: if r.is_static {
                    Duration::ZERO
                } else {
                    now.saturating_since(r.last_seen)
                },
                is_static: r.is_static,
            })
    }

    /// The peer behind `mac` in the VNI, if known and not aged out.
    pub fn lookup(&self, now: Instant, vni: u32, mac: MacAddr) -> Option<IpAddr> {
        self.networks.get(&vni)?.lookup(now, self.config.aging, mac)
    }

    fn network_mut(&mut self, vni: u32) -> Result<&mut Network, Error> {
        self.networks.get_mut(&vni).ok_or(Error::UnknownVni(vni))
    }

    // -----------------------------------------------------------------------------------------
    // Datapath: encap and decap decisions
    // -----------------------------------------------------------------------------------------

    /// Where an inner frame goes: fills `out` with the peers to send one copy to each.
    ///
    /// A known unicast destination goes to its peer; broadcast, multicast and unknown unicast go
    /// to every peer of the VNI (RFC 7348 § 4.2, by head-end replication). Errors: an unknown VNI
    /// is `OverlayRejected`, a frame without an Ethernet header `Runt`, a VNI without peers
    /// `NoPeer`.
    pub fn targets(
        &self,
        now: Instant,
        vni: u32,
        inner_frame: &[u8],
        out: &mut Vec<IpAddr>,
    ) -> Result<EncapKind, DropReason> {
        out.clear();
        let net = self.networks.get(&vni).ok_or(DropReason::OverlayRejected)?;
        if inner_frame.len() < ETHERNET_HEADER_LEN {
            return Err(DropReason::Runt);
        }
        if net.peers.is_empty() {
            return Err(DropReason::NoPeer);
        }
        let dst = MacAddr::from_bytes(inner_frame);
        if !dst.is_multicast() {
            if let Some(peer) = net.lookup(now, self.config.aging, dst) {
                out.push(peer);
                return Ok(EncapKind::Unicast);
            }
        }
        out.extend_from_slice(&net.peers);
        Ok(EncapKind::Flood)
    }

    /// Unwraps a received UDP payload from `from`: returns the VNI and the inner frame, and
    /// learns the inner source MAC as sitting behind `from` (RFC 7348 § 4.1).
    ///
    /// Refused, and counted per [`RejectReason`]: a truncated header, a clear I flag, an unknown
    /// VNI, a sender outside the VNI's peer list (nothing is learned from it), an inner frame
    /// shorter than an Ethernet header. The port counts each as `OverlayRejected`. Refused
    /// without a reject reason: an inner source MAC that is a static entry behind another peer
    /// ([`Error::MacMoveRefused`], counted as `mac_move_refused`).
    pub fn decap<'a>(
        &mut self,
        now: Instant,
        from: IpAddr,
        udp_payload: &'a [u8],
    ) -> Result<(u32, &'a [u8]), DecapError> {
        self.decap_guarded(now, from, udp_payload, |_, _| false, &mut NoTrace)
    }

    /// [`Vtep::decap`], asking `is_local(vni, inner_frame)` before a source MAC is learned anew
    /// or moved: true means the MAC is a station fixed on a local port (the bridge's static
    /// entry), so the datagram is a spoof: refused with [`Error::MacMoveRefused`], and nothing is
    /// learned (issue: a peer's address and a local sandbox's MAC must not hijack the sandbox).
    /// The outcome is recorded in `obs` as the frame's VXLAN stage (decap from which peer).
    pub fn decap_guarded<'a, O: Observer>(
        &mut self,
        now: Instant,
        from: IpAddr,
        udp_payload: &'a [u8],
        is_local: impl FnOnce(u32, &[u8]) -> bool,
        obs: &mut O,
    ) -> Result<(u32, &'a [u8]), DecapError> {
        let from = from.to_canonical();
        let result = self.check(from, udp_payload).and_then(|(vni, inner)| {
            // `check` saw a whole Ethernet header.
            let src = switch::wire::Frame::new_unchecked(inner).src();
            let learned = self.learn(now, vni, src, from, || is_local(vni, inner))?;
            if O::ON {
                let what = if learned { "learned" } else { "not learned:" };
                obs.record(
                    Stage::Vxlan,
                    format_args!("decap vni {vni} from {from}; {what} {src} behind {from}"),
                );
            }
            Ok((vni, inner))
        });
        if let Err(e) = &result {
            if let Some(reason) = e.reject_reason() {
                self.rejected[reason as usize] += 1;
            }
            if O::ON {
                obs.record(Stage::Vxlan, format_args!("drop: {e}"));
            }
        }
        result
    }

    /// The checks of [`Vtep::decap`], in order, without side effects.
    fn check<'a>(&self, from: IpAddr, udp_payload: &'a [u8]) -> Result<(u32, &'a [u8]), Error> {
        let packet = header::Packet::new_checked(udp_payload)?;
        let vni = header::Repr::parse(&packet)?.vni;
        let net = self.networks.get(&vni).ok_or(Error::UnknownVni(vni))?;
        if !net.is_peer(from) {
            return Err(Error::NotAPeer(from, vni));
        }
        let inner = &udp_payload[HEADER_LEN..];
        if inner.len() < ETHERNET_HEADER_LEN {
            return Err(Error::RuntInner(inner.len()));
        }
        Ok((vni, inner))
    }

    /// Learns a unicast source MAC behind a peer, unless a static entry names it or the VNI's
    /// table is full. A static entry behind another peer, or a MAC `is_local` says is fixed on
    /// a local port (asked only when the MAC would be learned anew or move), refuses the frame.
    /// `Ok(true)`: the MAC is known behind `from` now.
    fn learn(
        &mut self,
        now: Instant,
        vni: u32,
        mac: MacAddr,
        from: IpAddr,
        is_local: impl FnOnce() -> bool,
    ) -> Result<bool, Error> {
        if !mac.is_unicast() {
            return Ok(false);
        }
        let max = self.config.max_entries_per_vni;
        let Some(net) = self.networks.get_mut(&vni) else {
            return Ok(false);
        };
        let full = net.remotes.len() >= max;
        match net.remotes.get_mut(&mac) {
            Some(r) if r.is_static && r.peer != from => {
                return Err(Error::MacMoveRefused(vni, mac))
            }
            Some(r) if r.is_static => {}
            Some(r) if r.peer == from => r.last_seen = now,
            _ if is_local() => return Err(Error::MacMoveRefused(vni, mac)),
            Some(r) => {
                r.peer = from;
                r.last_seen = now;
            }
            None if full => {
                self.learn_refused += 1;
                return Ok(false);
            }
            None => {
                let entry = Remote {
                    peer: from,
                    last_seen: now,
                    is_static: false,
                };
                net.remotes.insert(mac, entry);
            }
        }
        Ok(true)
    }

    /// Datagrams refused for `reason` so far.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize]
    }

    /// Source MACs not learned because a VNI's table was full.
    pub fn learn_refused(&self) -> u64 {
        self.learn_refused
    }

    // -----------------------------------------------------------------------------------------
    // MTU
    // -----------------------------------------------------------------------------------------

    /// The largest inner frame that fits one underlay packet: `underlay_mtu - 50 + 14`.
    pub fn max_inner_len(&self) -> usize {
        (self.config.underlay_mtu + ETHERNET_HEADER_LEN).saturating_sub(header::OVERHEAD_V4)
    }

    /// True when an inner frame of `inner_len` bytes fits the underlay unfragmented
    /// (RFC 7348 § 4.3). Segment super-frames first and check each segment.
    pub fn fits(&self, inner_len: usize) -> bool {
        inner_len <= self.max_inner_len()
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

// ---------------------------------------------------------------------------------------------
// Source port
// ---------------------------------------------------------------------------------------------

/// The UDP source port for an inner frame (RFC 7348 § 5): a hash of its flow in 49152–65535.
///
/// Hashed: the Ethernet addresses and EtherType; for IPv4 and IPv6, the addresses and protocol;
/// for TCP and UDP (not in later IPv4 fragments), the ports. Any bytes give a port.
pub fn source_port(inner_frame: &[u8]) -> u16 {
    let mut h = FlowHash::new();
    match L2Header::parse(inner_frame) {
        Ok(l2) => {
            h.write(&l2.dst.0);
            h.write(&l2.src.0);
            h.write(&u16::from(l2.ethertype).to_be_bytes());
            let l3 = &inner_frame[l2.payload_offset..];
            match l2.ethertype {
                EtherType::Ipv4 => hash_ipv4(&mut h, l3),
                EtherType::Ipv6 => hash_ipv6(&mut h, l3),
                _ => {}
            }
        }
        // Not even a whole Ethernet header: whatever there is.
        Err(_) => h.write(&inner_frame[..inner_frame.len().min(ETHERNET_HEADER_LEN)]),
    }
    let span = u64::from(SOURCE_PORT_MAX - SOURCE_PORT_MIN) + 1;
    SOURCE_PORT_MIN + (h.finish() % span) as u16
}

/// Adds an IPv4 header's addresses, protocol and, for TCP/UDP, ports (RFC 791 § 3.1).
fn hash_ipv4(h: &mut FlowHash, ip: &[u8]) {
    // The fixed header alone decides addresses and protocol, whatever the IHL says.
    let Some(fixed) = ip.get(..ipv4::HEADER_LEN).map(ipv4::Packet::new_unchecked) else {
        return;
    };
    if fixed.version() != 4 {
        return;
    }
    h.write(&fixed.src_addr().octets());
    h.write(&fixed.dst_addr().octets());
    h.write(&[fixed.protocol()]);
    // Only the first fragment carries the ports; leave them out of every fragment so that
    // all of a datagram's fragments take one path. The ports follow a whole header.
    if fixed.is_fragment() {
        return;
    }
    if let Ok(whole) = ipv4::Packet::new_checked(ip) {
        hash_ports(h, whole.protocol(), whole.payload());
    }
}

/// Adds an IPv6 header's addresses, next header and, for TCP/UDP right after it, ports
/// (RFC 8200 § 3). Extension headers are not walked.
fn hash_ipv6(h: &mut FlowHash, ip: &[u8]) {
    let Ok(ip) = ipv6::Packet::new_checked(ip) else {
        return;
    };
    h.write(&ip.src_addr().octets());
    h.write(&ip.dst_addr().octets());
    h.write(&[ip.next_header()]);
    hash_ports(h, ip.next_header(), ip.payload());
}

fn hash_ports(h: &mut FlowHash, protocol: u8, l4: &[u8]) {
    if let Some((src, dst)) = udp::transport_ports(protocol, l4) {
        h.write(&src.to_be_bytes());
        h.write(&dst.to_be_bytes());
    }
}

/// FNV-1a over the flow's bytes, with a final mix so that every output bit depends on every
/// input bit. Fixed, with no random seed: a flow maps to the same port after a restart.
struct FlowHash(u64);

impl FlowHash {
    fn new() -> FlowHash {
        FlowHash(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// MurmurHash3's 64-bit finaliser.
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encap::encap_into;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use switch::wire::{IPPROTO_TCP, IPPROTO_UDP};

    const VNI: u32 = 42;
    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    /// A 60-byte frame from `src` to `dst` (EtherType IPv4, zero payload).
    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    /// `frame` wrapped in a VXLAN header for `vni`.
    fn datagram(vni: u32, dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut d = Vec::new();
        encap_into(&mut d, vni, &frame(dst, src));
        d
    }

    /// A VTEP with VNI 42 and peers 10.0.0.2, 10.0.0.3, 10.0.0.4.
    fn vtep() -> Vtep {
        let mut v = Vtep::new(VtepConfig::default());
        v.add_vni(VNI).unwrap();
        for p in ["10.0.0.2", "10.0.0.3", "10.0.0.4"] {
            assert!(v.add_peer(VNI, ip(p)).unwrap());
        }
        v
    }

    fn targets(
        v: &Vtep,
        now: Instant,
        dst: MacAddr,
    ) -> Result<(EncapKind, Vec<IpAddr>), DropReason> {
        let mut out = vec![ip("192.0.2.99")]; // must be cleared
        let kind = v.targets(now, VNI, &frame(dst, A), &mut out)?;
        Ok((kind, out))
    }

    #[test]
    fn broadcast_and_unknown_unicast_go_to_every_peer() {
        let v = vtep();
        let all = vec![ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")];
        assert_eq!(
            targets(&v, t(0), MacAddr::BROADCAST),
            Ok((EncapKind::Flood, all.clone()))
        );
        let multicast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(
            targets(&v, t(0), multicast),
            Ok((EncapKind::Flood, all.clone()))
        );
        assert_eq!(targets(&v, t(0), B), Ok((EncapKind::Flood, all)));
    }

    #[test]
    fn learned_unicast_goes_to_one_peer() {
        let mut v = vtep();
        let d = datagram(VNI, A, B);
        let (vni, inner) = v.decap(t(10), ip("10.0.0.3"), &d).unwrap();
        assert_eq!((vni, inner), (VNI, &d[8..]));
        assert_eq!(v.lookup(t(10), VNI, B), Some(ip("10.0.0.3")));
        assert_eq!(
            targets(&v, t(11), B),
            Ok((EncapKind::Unicast, vec![ip("10.0.0.3")]))
        );
        // The station moves to another peer.
        v.decap(t(12), ip("10.0.0.4"), &d).unwrap();
        assert_eq!(
            targets(&v, t(13), B),
            Ok((EncapKind::Unicast, vec![ip("10.0.0.4")]))
        );
    }

    #[test]
    fn learned_entries_age_back_to_flood() {
        let mut v = vtep();
        v.decap(t(100), ip("10.0.0.2"), &datagram(VNI, A, B))
            .unwrap();
        let aged = t(100) + v.config().aging;
        let just_before = t(399);
        assert_eq!(targets(&v, just_before, B).unwrap().0, EncapKind::Unicast);
        assert_eq!(v.remote_entries(VNI, just_before).count(), 1);
        assert_eq!(targets(&v, aged, B).unwrap().0, EncapKind::Flood);
        assert_eq!(v.remote_entries(VNI, aged).count(), 0);
        // Seen again: refreshed.
        v.decap(t(350), ip("10.0.0.2"), &datagram(VNI, A, B))
            .unwrap();
        assert_eq!(targets(&v, aged, B).unwrap().0, EncapKind::Unicast);
        assert_eq!(v.age(t(1000)), 1);
        assert_eq!(v.lookup(t(1000), VNI, B), None);
    }

    #[test]
    fn static_entries_never_age_and_are_not_moved_by_learning() {
        let mut v = vtep();
        v.add_static(VNI, B, ip("10.0.0.2")).unwrap();
        assert_eq!(
            targets(&v, t(1_000_000), B),
            Ok((EncapKind::Unicast, vec![ip("10.0.0.2")]))
        );
        // A datagram from another peer claiming B is refused and teaches nothing.
        assert_eq!(
            v.decap(t(5), ip("10.0.0.3"), &datagram(VNI, A, B)),
            Err(Error::MacMoveRefused(VNI, B))
        );
        assert_eq!(v.lookup(t(5), VNI, B), Some(ip("10.0.0.2")));
        // From its own peer it passes.
        assert!(v.decap(t(5), ip("10.0.0.2"), &datagram(VNI, A, B)).is_ok());
        assert_eq!(v.age(t(1_000_000)), 0);
        let e: Vec<_> = v.remote_entries(VNI, t(7)).collect();
        assert_eq!(
            e,
            [RemoteEntry {
                mac: B,
                peer: ip("10.0.0.2"),
                age: Duration::ZERO,
                is_static: true
            }]
        );
        assert_eq!(v.flush_learned(VNI), Ok(0));
        assert_eq!(v.remove_entry(VNI, B), Ok(true));
        assert_eq!(v.lookup(t(8), VNI, B), None);
    }

    #[test]
    fn a_local_station_is_never_learned_behind_a_peer() {
        let mut v = vtep();
        // The bridge says B is fixed on a local port: a peer's datagram claiming B is a spoof.
        let asked = std::cell::Cell::new(0);
        let b_is_local = |vni: u32, inner: &[u8]| {
            asked.set(asked.get() + 1);
            vni == VNI && inner[6..12] == B.0
        };
        assert_eq!(
            v.decap_guarded(
                t(1),
                ip("10.0.0.2"),
                &datagram(VNI, A, B),
                b_is_local,
                &mut NoTrace
            ),
            Err(Error::MacMoveRefused(VNI, B))
        );
        assert_eq!(v.lookup(t(1), VNI, B), None, "nothing learned");
        assert_eq!(RejectReason::ALL.map(|r| v.rejected(r)), [0; 5]);
        // Other stations are learned as usual, and asked about once: a refresh asks nothing.
        for _ in 0..3 {
            let d = datagram(VNI, B, A);
            assert!(v
                .decap_guarded(t(1), ip("10.0.0.2"), &d, b_is_local, &mut NoTrace)
                .is_ok());
        }
        assert_eq!(v.lookup(t(1), VNI, A), Some(ip("10.0.0.2")));
        assert_eq!(asked.get(), 2);
        // A station learned before it was fixed locally cannot move to another peer either.
        assert_eq!(
            v.decap_guarded(
                t(2),
                ip("10.0.0.3"),
                &datagram(VNI, B, A),
                |_, _| true,
                &mut NoTrace
            ),
            Err(Error::MacMoveRefused(VNI, A))
        );
        assert_eq!(v.lookup(t(2), VNI, A), Some(ip("10.0.0.2")));
    }

    #[test]
    fn a_traced_decap_records_its_stage() {
        let mut v = vtep();
        let mut trace = switch::trace::Trace::new();
        let d = datagram(VNI, A, B);
        let got = v.decap_guarded(t(1), ip("10.0.0.2"), &d, |_, _| false, &mut trace);
        assert!(got.is_ok());
        assert_eq!(
            trace.result(Stage::Vxlan),
            Some(format!("decap vni {VNI} from 10.0.0.2; learned {B} behind 10.0.0.2").as_str())
        );
        let mut trace = switch::trace::Trace::new();
        let got = v.decap_guarded(t(1), ip("10.9.9.9"), &d, |_, _| false, &mut trace);
        assert!(got.is_err());
        let stage = trace.result(Stage::Vxlan).unwrap();
        assert!(stage.starts_with("drop: 10.9.9.9 is not a peer"), "{stage}");
    }

    #[test]
    fn static_entries_are_checked() {
        let mut v = vtep();
        assert_eq!(
            v.add_static(VNI, B, ip("10.9.9.9")),
            Err(Error::NotAPeer(ip("10.9.9.9"), VNI))
        );
        assert_eq!(
            v.add_static(VNI, MacAddr::BROADCAST, ip("10.0.0.2")),
            Err(Error::InvalidMac(MacAddr::BROADCAST))
        );
        assert_eq!(
            v.add_static(7, B, ip("10.0.0.2")),
            Err(Error::UnknownVni(7))
        );
    }

    #[test]
    fn removing_a_peer_forgets_its_macs_and_stops_traffic_to_it() {
        let mut v = vtep();
        v.decap(t(0), ip("10.0.0.3"), &datagram(VNI, A, B)).unwrap();
        v.add_static(VNI, C, ip("10.0.0.3")).unwrap();
        v.decap(t(0), ip("10.0.0.2"), &datagram(VNI, B, A)).unwrap();
        assert_eq!(v.remove_peer(VNI, ip("10.0.0.3")), Ok(true));
        assert_eq!(v.remove_peer(VNI, ip("10.0.0.3")), Ok(false));
        assert_eq!(v.peers(VNI), [ip("10.0.0.2"), ip("10.0.0.4")]);
        assert_eq!(v.lookup(t(1), VNI, B), None);
        assert_eq!(v.lookup(t(1), VNI, C), None);
        assert_eq!(v.lookup(t(1), VNI, A), Some(ip("10.0.0.2")));
        for dst in [B, C, MacAddr::BROADCAST] {
            let (_, out) = targets(&v, t(1), dst).unwrap();
            assert!(
                !out.contains(&ip("10.0.0.3")),
                "{dst} still goes to the removed peer"
            );
        }
        // And what it sends now is refused.
        assert_eq!(
            v.decap(t(2), ip("10.0.0.3"), &datagram(VNI, A, B)),
            Err(Error::NotAPeer(ip("10.0.0.3"), VNI))
        );
    }

    #[test]
    fn no_peer_and_unknown_vni() {
        let mut v = Vtep::new(VtepConfig::default());
        let mut out = Vec::new();
        let f = frame(MacAddr::BROADCAST, A);
        assert_eq!(
            v.targets(t(0), 5, &f, &mut out),
            Err(DropReason::OverlayRejected)
        );
        v.add_vni(5).unwrap();
        assert_eq!(v.targets(t(0), 5, &f, &mut out), Err(DropReason::NoPeer));
        assert_eq!(
            v.targets(t(0), 5, &f[..13], &mut out),
            Err(DropReason::Runt)
        );
        assert!(out.is_empty());
        assert_eq!(v.add_peer(6, ip("10.0.0.2")), Err(Error::UnknownVni(6)));
        assert_eq!(v.add_vni(MAX_VNI + 1), Err(Error::InvalidVni(MAX_VNI + 1)));
        for bad in ["0.0.0.0", "239.1.1.1", "255.255.255.255", "::"] {
            assert_eq!(v.add_peer(5, ip(bad)), Err(Error::InvalidPeer(ip(bad))));
        }
        assert_eq!(v.add_peer(5, ip("10.0.0.2")), Ok(true));
        assert_eq!(v.add_peer(5, ip("::ffff:10.0.0.2")), Ok(false));
        assert!(v.remove_vni(5));
        assert!(!v.has_vni(5));
        assert!(v.peers(5).is_empty());
    }

    #[test]
    fn spoofed_datagrams_from_non_peers_are_refused_and_teach_nothing() {
        let mut v = vtep();
        let d = datagram(VNI, A, B);
        assert_eq!(
            v.decap(t(0), ip("192.0.2.66"), &d),
            Err(Error::NotAPeer(ip("192.0.2.66"), VNI))
        );
        assert_eq!(v.lookup(t(0), VNI, B), None);
        assert_eq!(v.remote_entries(VNI, t(0)).count(), 0);
        assert_eq!(v.rejected(RejectReason::NotAPeer), 1);
        // A peer of another VNI is not a peer of this one.
        v.add_vni(7).unwrap();
        v.add_peer(7, ip("10.0.0.9")).unwrap();
        assert_eq!(
            v.decap(t(0), ip("10.0.0.9"), &d),
            Err(Error::NotAPeer(ip("10.0.0.9"), VNI))
        );
        assert_eq!(v.rejected(RejectReason::NotAPeer), 2);
    }

    #[test]
    fn malformed_datagrams_are_refused() {
        let mut v = vtep();
        let peer = ip("10.0.0.2");
        let good = datagram(VNI, A, B);

        assert_eq!(v.decap(t(0), peer, &good[..7]), Err(Error::Truncated(7)));
        assert_eq!(v.decap(t(0), peer, &[]), Err(Error::Truncated(0)));

        let mut bad_flags = good.clone();
        bad_flags[0] = 0;
        assert_eq!(v.decap(t(0), peer, &bad_flags), Err(Error::BadFlags(0)));

        let unknown = datagram(43, A, B);
        assert_eq!(v.decap(t(0), peer, &unknown), Err(Error::UnknownVni(43)));

        assert_eq!(
            v.decap(t(0), peer, &good[..8 + 13]),
            Err(Error::RuntInner(13))
        );
        assert_eq!(v.decap(t(0), peer, &good[..8]), Err(Error::RuntInner(0)));

        let counted = RejectReason::ALL.map(|r| (r.name(), v.rejected(r)));
        assert_eq!(
            counted,
            [
                ("truncated", 2),
                ("bad_flags", 1),
                ("unknown_vni", 1),
                ("not_a_peer", 0),
                ("runt_inner", 2)
            ]
        );
        assert!(RejectReason::ALL
            .iter()
            .all(|r| r.drop_reason() == DropReason::OverlayRejected));
        assert_eq!(v.remote_entries(VNI, t(0)).count(), 0);

        // Reserved bits set are ignored: still accepted.
        let mut reserved = good.clone();
        reserved[0] |= 0xf7;
        reserved[1..4].fill(0xff);
        reserved[7] = 0xff;
        assert_eq!(v.decap(t(0), peer, &reserved).unwrap().0, VNI);
    }

    #[test]
    fn multicast_sources_are_not_learned_and_limits_hold() {
        let mut v = Vtep::new(VtepConfig {
            max_entries_per_vni: 2,
            ..VtepConfig::default()
        });
        v.add_vni(VNI).unwrap();
        v.add_peer(VNI, ip("10.0.0.2")).unwrap();
        let peer = ip("10.0.0.2");
        v.decap(t(0), peer, &datagram(VNI, A, MacAddr::BROADCAST))
            .unwrap();
        v.decap(t(0), peer, &datagram(VNI, A, MacAddr::ZERO))
            .unwrap();
        assert_eq!(v.remote_entries(VNI, t(0)).count(), 0);
        for src in [A, B, C] {
            v.decap(t(0), peer, &datagram(VNI, MacAddr::BROADCAST, src))
                .unwrap();
        }
        assert_eq!(v.remote_entries(VNI, t(0)).count(), 2);
        assert_eq!(v.learn_refused(), 1);
        assert_eq!(v.lookup(t(0), VNI, C), None);
        assert_eq!(v.add_static(VNI, C, peer), Err(Error::TableFull(VNI, 2)));
        // Replacing an existing entry needs no room.
        assert_eq!(v.add_static(VNI, A, peer), Ok(()));
    }

    #[test]
    fn mtu_boundaries() {
        let v = Vtep::new(VtepConfig::default());
        // 1500 underlay: inner IP packet up to 1450, inner frame up to 1464.
        assert_eq!(v.max_inner_len(), 1464);
        assert!(v.fits(1464));
        assert!(!v.fits(1465));
        assert!(v.fits(0));
        let jumbo = Vtep::new(VtepConfig {
            underlay_mtu: 9000,
            ..VtepConfig::default()
        });
        assert!(jumbo.fits(9000 - 50 + 14));
        assert!(!jumbo.fits(9000 - 50 + 15));
        let tiny = Vtep::new(VtepConfig {
            underlay_mtu: 10,
            ..VtepConfig::default()
        });
        assert!(!tiny.fits(1));
    }

    /// An untagged IPv4 frame with a TCP or UDP header between the given ports (both begin with
    /// them, so the UDP view writes either).
    fn ipv4_frame(protocol: u8, src_port: u16, dst_port: u16) -> Vec<u8> {
        let mut f = frame(B, A);
        let mut ip = ipv4::Packet::new_unchecked(&mut f[14..]);
        ip.set_version_and_header_len(ipv4::HEADER_LEN);
        ip.set_protocol(protocol);
        ip.set_src_addr([10, 1, 0, 1].into());
        ip.set_dst_addr([10, 1, 0, 2].into());
        let mut l4 = udp::Packet::new_unchecked(&mut f[14 + ipv4::HEADER_LEN..]);
        l4.set_src_port(src_port);
        l4.set_dst_port(dst_port);
        f
    }

    #[test]
    fn source_port_is_stable_per_flow_and_spreads_flows() {
        let f = ipv4_frame(IPPROTO_TCP, 40000, 5201);
        let p = source_port(&f);
        assert!(p >= SOURCE_PORT_MIN);
        assert_eq!(source_port(&f), p);
        // The payload does not count; the ports do.
        let mut g = f.clone();
        g[50] ^= 0xff;
        assert_eq!(source_port(&g), p);
        assert_ne!(source_port(&ipv4_frame(IPPROTO_TCP, 40001, 5201)), p);
        assert_ne!(source_port(&ipv4_frame(IPPROTO_UDP, 40000, 5201)), p);

        // 1000 flows (one per client port) take many distinct ports.
        let ports: HashSet<u16> = (0..1000)
            .map(|i| source_port(&ipv4_frame(IPPROTO_TCP, 30000 + i, 80)))
            .collect();
        assert!(ports.len() > 950, "{} distinct ports", ports.len());
        // And spread over the 64 socket buckets.
        let buckets: HashSet<u16> = ports.iter().map(|p| p % 64).collect();
        assert_eq!(buckets.len(), 64);
    }

    #[test]
    fn source_port_of_ipv6_and_odd_frames() {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut ip = ipv6::Packet::new_unchecked(&mut f[14..]);
        ip.set_version();
        ip.set_next_header(IPPROTO_UDP);
        let p = source_port(&f);
        udp::Packet::new_unchecked(&mut f[14 + ipv6::HEADER_LEN..]).set_src_port(256);
        assert_ne!(source_port(&f), p);
        // Short, tagged, truncated: always a port in range.
        for bytes in [&[][..], &[1, 2, 3][..], &f[..20], &frame(B, A)[..14]] {
            assert!(source_port(bytes) >= SOURCE_PORT_MIN);
        }
        // An IPv4 header whose IHL reaches beyond the frame still hashes its addresses, not
        // its ports.
        let mut g = ipv4_frame(IPPROTO_TCP, 40000, 5201);
        ipv4::Packet::new_unchecked(&mut g[14..]).set_version_and_header_len(60);
        let bad_ihl = source_port(&g);
        ipv4::Packet::new_unchecked(&mut g[14..]).set_src_addr([10, 1, 0, 9].into());
        let other_src = source_port(&g);
        assert_ne!(other_src, bad_ihl, "the addresses count");
        udp::Packet::new_unchecked(&mut g[34..]).set_src_port(1);
        assert_eq!(source_port(&g), other_src, "the ports do not");
    }

    proptest! {
        #[test]
        fn source_port_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            prop_assert!(source_port(&bytes) >= SOURCE_PORT_MIN);
        }

        #[test]
        fn decap_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut v = vtep();
            if let Ok((vni, inner)) = v.decap(t(0), ip("10.0.0.2"), &bytes) {
                prop_assert_eq!(vni, VNI);
                prop_assert!(inner.len() >= 14);
            }
        }
    }
}
