//! The MAC table (forwarding database, FDB): which port a station sits behind, per VLAN.
//!
//! Keyed by (VLAN, MAC) as in IEEE 802.1Q § 8.8 (independent VLAN learning). Learned entries age
//! out (default 300 s, as in the Linux bridge and Open vSwitch); static entries never do. Limits
//! keep one port from filling the table: a total limit (default 8192, as Open vSwitch) and a
//! per-port limit. Once a limit is reached new stations are not learned (their frames still
//! flood), and nobody else's entry is pushed out.
//!
//! The table never reads the clock: every call that needs the time takes `now`.

use crate::port::PortId;
use crate::time::Instant;
use crate::wire::MacAddr;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// Limits and aging of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// How long a learned entry lives without being seen.
    pub aging: Duration,
    /// Most entries in the table, static ones included.
    pub max_entries: usize,
    /// Most learned entries behind one port.
    pub max_per_port: usize,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            aging: Duration::from_secs(300),
            max_entries: 8192,
            max_per_port: 4096,
        }
    }
}

/// One station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port it was last seen on.
    pub port: PortId,
    /// When it was last seen (for static entries: when added).
    pub last_seen: Instant,
    /// Added by hand; never ages, never moves by learning.
    pub is_static: bool,
}

/// What learning a source address did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// A new station.
    New,
    /// Known on this port; its age was reset.
    Refresh,
    /// Known on this port and already seen at this very instant (an earlier frame of the same
    /// batch): nothing to write, so the hot path spends no second table access on it.
    Current,
    /// Known on another port: the station moved.
    Moved { from: PortId },
    /// A static entry names this address; learning leaves it alone (a frame claiming it on
    /// another port is dropped by the bridge as `mac_move_refused`).
    Static { port: PortId },
    /// Not learned: the table or the port is at its limit.
    Refused { per_port: bool },
}

/// A fast hasher for the table's `u64` keys (a multiply-shift mix; keys are not attacker-chosen
/// bits of a hash seed, and the limits bound what a flood of random MACs can do).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        // Fold the key with a large odd constant, then bring high bits down (hashbrown uses the
        // top 7 bits as tags and the low bits as the bucket).
        let x = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

type Key = u64;

#[inline]
fn key(vlan: u16, mac: MacAddr) -> Key {
    ((vlan as u64) << 48) | mac.to_u64()
}

/// The MAC table.
#[derive(Debug, Clone)]
pub struct Fdb {
    config: FdbConfig,
    entries: HashMap<Key, FdbEntry, BuildHasherDefault<KeyHasher>>,
    /// Learned entries per port, indexed by port id.
    per_port: Vec<usize>,
}

impl Fdb {
    /// An empty table.
    pub fn new(config: FdbConfig) -> Fdb {
        Fdb {
            config,
            entries: HashMap::default(),
            per_port: Vec::new(),
        }
    }

    /// The table's limits.
    pub fn config(&self) -> &FdbConfig {
        &self.config
    }

    /// Changes the limits and the aging time. Existing entries stay.
    pub fn set_config(&mut self, config: FdbConfig) {
        self.config = config;
    }

    /// Number of entries, stale ones included until the next [`Fdb::age`].
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Learned entries behind `port`.
    pub fn port_count(&self, port: PortId) -> usize {
        self.per_port.get(port.index()).copied().unwrap_or(0)
    }

    fn live(&self, e: &FdbEntry, now: Instant) -> bool {
        e.is_static || now.saturating_since(e.last_seen) < self.config.aging
    }

    /// The port behind (VLAN, MAC), if known and not aged out.
    #[inline]
    pub fn lookup(&self, now: Instant, vlan: u16, mac: MacAddr) -> Option<PortId> {
        match self.entries.get(&key(vlan, mac)) {
            Some(e) if self.live(e, now) => Some(e.port),
            _ => None,
        }
    }

    /// The whole entry, if known and not aged out.
    pub fn get(&self, now: Instant, vlan: u16, mac: MacAddr) -> Option<FdbEntry> {
        self.entries
            .get(&key(vlan, mac))
            .filter(|e| self.live(e, now))
            .copied()
    }

    /// What learning `mac` on `port` would do, without doing it.
    #[inline]
    pub fn check_learn(&self, now: Instant, vlan: u16, mac: MacAddr, port: PortId) -> Learn {
        match self.entries.get(&key(vlan, mac)) {
            Some(e) if e.is_static => Learn::Static { port: e.port },
            Some(e) if e.port == port && e.last_seen == now => Learn::Current,
            Some(e) if e.port == port => Learn::Refresh,
            Some(e) if self.live(e, now) => self.check_limits(port, Learn::Moved { from: e.port }),
            // A stale entry on another port: replacing it is a move as far as counts go.
            Some(e) => self.check_limits(port, Learn::Moved { from: e.port }),
            None if self.entries.len() >= self.config.max_entries => {
                Learn::Refused { per_port: false }
            }
            None => self.check_limits(port, Learn::New),
        }
    }

    fn check_limits(&self, port: PortId, ok: Learn) -> Learn {
        if self.port_count(port) >= self.config.max_per_port {
            Learn::Refused { per_port: true }
        } else {
            ok
        }
    }

    /// Carries out what [`Fdb::check_learn`] decided.
    #[inline]
    pub fn apply_learn(&mut self, now: Instant, vlan: u16, mac: MacAddr, port: PortId, l: Learn) {
        match l {
            Learn::Refresh => {
                if let Some(e) = self.entries.get_mut(&key(vlan, mac)) {
                    e.last_seen = now;
                }
            }
            Learn::New | Learn::Moved { .. } => {
                let entry = FdbEntry {
                    port,
                    last_seen: now,
                    is_static: false,
                };
                if let Some(old) = self.entries.insert(key(vlan, mac), entry) {
                    self.uncount(&old);
                }
                self.count(port);
            }
            Learn::Current | Learn::Static { .. } | Learn::Refused { .. } => {}
        }
    }

    /// Learns `mac` on `port` now; returns what it did. Callers must pass only unicast sources.
    pub fn learn(&mut self, now: Instant, vlan: u16, mac: MacAddr, port: PortId) -> Learn {
        let l = self.check_learn(now, vlan, mac, port);
        self.apply_learn(now, vlan, mac, port, l);
        l
    }

    /// Adds or replaces a static entry. Refused only when the table is full of other entries.
    pub fn add_static(
        &mut self,
        now: Instant,
        vlan: u16,
        mac: MacAddr,
        port: PortId,
    ) -> Result<(), FdbFull> {
        let k = key(vlan, mac);
        if !self.entries.contains_key(&k) && self.entries.len() >= self.config.max_entries {
            return Err(FdbFull);
        }
        let entry = FdbEntry {
            port,
            last_seen: now,
            is_static: true,
        };
        if let Some(old) = self.entries.insert(k, entry) {
            self.uncount(&old);
        }
        Ok(())
    }

    /// Removes one entry, static or learned. Returns it if it was there.
    pub fn remove(&mut self, vlan: u16, mac: MacAddr) -> Option<FdbEntry> {
        let old = self.entries.remove(&key(vlan, mac))?;
        self.uncount(&old);
        Some(old)
    }

    /// Removes every entry with this MAC, in any VLAN. Returns how many.
    pub fn remove_mac(&mut self, mac: MacAddr) -> usize {
        self.remove_where(|_, m, _| m == mac)
    }

    /// Removes learned and static entries behind `port` (when the port goes away).
    pub fn flush_port(&mut self, port: PortId) -> usize {
        self.remove_where(|_, _, e| e.port == port)
    }

    /// Removes every learned entry; static ones stay (like `ovs-appctl fdb/flush`).
    pub fn flush_learned(&mut self) -> usize {
        self.remove_where(|_, _, e| !e.is_static)
    }

    /// Removes learned entries not seen for the aging time. Returns how many.
    pub fn age(&mut self, now: Instant) -> usize {
        let aging = self.config.aging;
        self.remove_where(|_, _, e| !e.is_static && now.saturating_since(e.last_seen) >= aging)
    }

    fn remove_where(&mut self, mut pred: impl FnMut(u16, MacAddr, &FdbEntry) -> bool) -> usize {
        let before = self.entries.len();
        let per_port = &mut self.per_port;
        self.entries.retain(|k, e| {
            let gone = pred((k >> 48) as u16, MacAddr::from_u64(k & 0xffff_ffff_ffff), e);
            if gone && !e.is_static {
                per_port[e.port.index()] -= 1;
            }
            !gone
        });
        before - self.entries.len()
    }

    /// Every live entry as (VLAN, MAC, entry), in no particular order.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (u16, MacAddr, FdbEntry)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| self.live(e, now))
            .map(|(k, e)| {
                (
                    (k >> 48) as u16,
                    MacAddr::from_u64(k & 0xffff_ffff_ffff),
                    *e,
                )
            })
    }

    fn count(&mut self, port: PortId) {
        let i = port.index();
        if self.per_port.len() <= i {
            self.per_port.resize(i + 1, 0);
        }
        self.per_port[i] += 1;
    }

    fn uncount(&mut self, old: &FdbEntry) {
        if !old.is_static {
            self.per_port[old.port.index()] -= 1;
        }
    }
}

/// A static entry could not be added: the table is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MAC table full")]
pub struct FdbFull;

#[cfg(test)]
mod tests {
    use super::*;

    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);

    fn mac(n: u64) -> MacAddr {
        MacAddr::from_u64(0x0200_0000_0000 | n)
    }

    #[test]
    fn learns_looks_up_and_ages() {
        let mut fdb = Fdb::new(FdbConfig::default());
        let t0 = Instant::from_secs(1000);
        assert_eq!(fdb.learn(t0, 1, mac(1), P1), Learn::New);
        assert_eq!(fdb.lookup(t0, 1, mac(1)), Some(P1));
        assert_eq!(fdb.lookup(t0, 2, mac(1)), None, "VLANs learn independently");
        let t299 = t0 + Duration::from_secs(299);
        assert_eq!(fdb.learn(t299, 1, mac(1), P1), Learn::Refresh);
        // Seen again at the same instant: nothing to write, and the entry is as it was.
        assert_eq!(fdb.learn(t299, 1, mac(1), P1), Learn::Current);
        assert_eq!(fdb.get(t299, 1, mac(1)).map(|e| e.last_seen), Some(t299));
        let t500 = t0 + Duration::from_secs(500);
        assert_eq!(
            fdb.lookup(t500, 1, mac(1)),
            Some(P1),
            "refresh restarted the clock"
        );
        let t600 = t0 + Duration::from_secs(600);
        assert_eq!(fdb.lookup(t600, 1, mac(1)), None, "aged out");
        assert_eq!(fdb.age(t600), 1);
        assert_eq!(fdb.len(), 0);
        assert_eq!(fdb.port_count(P1), 0);
    }

    #[test]
    fn station_move_and_static_entries() {
        let mut fdb = Fdb::new(FdbConfig::default());
        let now = Instant::from_secs(1);
        fdb.learn(now, 1, mac(1), P1);
        assert_eq!(fdb.learn(now, 1, mac(1), P2), Learn::Moved { from: P1 });
        assert_eq!(fdb.lookup(now, 1, mac(1)), Some(P2));
        assert_eq!((fdb.port_count(P1), fdb.port_count(P2)), (0, 1));

        fdb.add_static(now, 1, mac(9), P1).unwrap();
        assert_eq!(fdb.learn(now, 1, mac(9), P2), Learn::Static { port: P1 });
        let much_later = now + Duration::from_secs(100_000);
        assert_eq!(
            fdb.lookup(much_later, 1, mac(9)),
            Some(P1),
            "static never ages"
        );
        fdb.age(much_later);
        assert_eq!(fdb.flush_learned(), 0);
        assert_eq!(fdb.len(), 1);
        assert!(fdb.remove(1, mac(9)).is_some());
    }

    #[test]
    fn per_port_limit_protects_other_ports() {
        let cfg = FdbConfig {
            max_entries: 100,
            max_per_port: 10,
            ..FdbConfig::default()
        };
        let mut fdb = Fdb::new(cfg);
        let now = Instant::from_secs(1);
        fdb.learn(now, 1, mac(1), P2);
        for n in 100..200 {
            fdb.learn(now, 1, mac(n), P1);
        }
        assert_eq!(fdb.port_count(P1), 10);
        assert_eq!(
            fdb.learn(now, 1, mac(500), P1),
            Learn::Refused { per_port: true }
        );
        assert_eq!(fdb.lookup(now, 1, mac(1)), Some(P2));
        assert_eq!(fdb.learn(now, 1, mac(2), P2), Learn::New);
    }

    #[test]
    fn total_limit_refuses_new_and_keeps_old() {
        let cfg = FdbConfig {
            max_entries: 5,
            max_per_port: 5,
            ..FdbConfig::default()
        };
        let mut fdb = Fdb::new(cfg);
        let now = Instant::from_secs(1);
        for n in 0..5 {
            fdb.learn(now, 1, mac(n), PortId(n as u16));
        }
        assert_eq!(
            fdb.learn(now, 1, mac(99), P1),
            Learn::Refused { per_port: false }
        );
        assert_eq!(fdb.add_static(now, 1, mac(98), P1), Err(FdbFull));
        for n in 0..5 {
            assert_eq!(fdb.lookup(now, 1, mac(n)), Some(PortId(n as u16)));
        }
    }

    #[test]
    fn flush_by_port_and_iterate() {
        let mut fdb = Fdb::new(FdbConfig::default());
        let now = Instant::from_secs(1);
        fdb.learn(now, 1, mac(1), P1);
        fdb.learn(now, 1, mac(2), P1);
        fdb.learn(now, 10, mac(3), P2);
        assert_eq!(fdb.flush_port(P1), 2);
        let all: Vec<_> = fdb.iter(now).collect();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].0, all[0].1, all[0].2.port), (10, mac(3), P2));
        assert_eq!(fdb.remove_mac(mac(3)), 1);
        assert!(fdb.is_empty());
    }

    #[test]
    fn million_entries_fit_when_configured() {
        let cfg = FdbConfig {
            max_entries: 1_000_000,
            max_per_port: 1_000_000,
            ..FdbConfig::default()
        };
        let mut fdb = Fdb::new(cfg);
        let now = Instant::from_secs(1);
        for n in 0..1_000_000 {
            assert_ne!(
                fdb.learn(now, 1, mac(n), P1),
                Learn::Refused { per_port: false }
            );
        }
        assert_eq!(fdb.len(), 1_000_000);
        assert_eq!(fdb.lookup(now, 1, mac(777_777)), Some(P1));
    }
}
