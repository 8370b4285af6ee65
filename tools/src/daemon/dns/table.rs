//! The name table: per network, which names (sandbox names and aliases) map to which IPv4
//! addresses, and which address maps back to which name (PTR); answered from the view of the
//! asking sandbox's networks only.
//!
//! Names are stored lower case, without the trailing dot, as the bytes of their labels joined by
//! `.` (RFC 4343 § 3: DNS names compare case-insensitively in ASCII).
//!
//! The daemon thread writes a master copy under a mutex (connect, disconnect, sandbox removal;
//! each costs O(names of that endpoint)) and bumps a generation number. Readers (the DNS thread,
//! the TCP threads) answer from an immutable snapshot, a [`TableView`]: per query they compare
//! one atomic generation number, and only after a change take the locks to pick up (or build,
//! once for all readers) the new snapshot. The query path so takes no lock the control plane
//! holds, and a storm of changes without queries costs no copies.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The longest name accepted, in bytes, without the trailing dot (RFC 1035 § 2.3.4: 255 octets
/// on the wire, which is 253 characters of text).
pub const MAX_NAME_LEN: usize = 253;

/// The longest label (RFC 1035 § 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// The default network: Docker's legacy bridge has no name resolution (users rely on that to
/// notice they should make a user-defined network); its sandboxes still forward.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Why a name or endpoint was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The name is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A lower-case name key: labels joined by `.`, no trailing dot.
type Key = Box<[u8]>;

/// Lower-cases `name` into a key after checking it is a DNS name (labels of 1..=63 bytes,
/// 253 bytes at most, printable ASCII without spaces); one trailing dot is accepted.
pub fn name_key(name: &str) -> Result<Key, TableError> {
    let bad = |why| TableError::InvalidName {
        name: name.to_owned(),
        why,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 253 bytes"));
    }
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("it holds a space, a control or a non-ASCII character"));
    }
    if trimmed
        .split('.')
        .any(|label| label.is_empty() || label.len() > MAX_LABEL_LEN)
    {
        return Err(bad("a label is empty or longer than 63 bytes"));
    }
    Ok(trimmed.to_ascii_lowercase().into_bytes().into_boxed_slice())
}

/// The addresses one name has on one network, in the order the endpoints were added.
#[derive(Debug, Default, Clone)]
struct NameEntry {
    /// One address per endpoint carrying this name (several for a shared alias).
    addrs: Vec<(Box<str>, Ipv4Addr)>,
}

/// One network's records.
#[derive(Debug, Default, Clone)]
struct Network {
    /// Name key → addresses.
    names: HashMap<Key, NameEntry>,
    /// Address → the sandbox name it was handed out to (PTR).
    ptr: HashMap<Ipv4Addr, Box<str>>,
}

/// One sandbox's endpoint on one network.
#[derive(Debug, Clone)]
struct Endpoint {
    network: Box<str>,
    addr: Ipv4Addr,
    /// Name keys of this endpoint: the sandbox name first, then the aliases.
    keys: Vec<Key>,
}

/// The table's content: the master copy behind the lock, and the snapshots readers hold.
#[derive(Debug, Default, Clone)]
struct Inner {
    networks: HashMap<Box<str>, Network>,
    /// Sandbox name → its endpoints (at most one per network).
    sandboxes: HashMap<Box<str>, Vec<Endpoint>>,
    /// Name key → on how many networks it exists (to tell "not visible" from "unknown").
    known_names: HashMap<Key, usize>,
    /// Address → on how many networks it was handed out.
    known_addrs: HashMap<Ipv4Addr, usize>,
}

/// What the table says about a name, from one sandbox's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The name is visible: its records (possibly none of the asked type).
    Found(T),
    /// The name is ours but on no network the asker shares: NXDOMAIN.
    Hidden,
    /// Not a name of ours: forward it.
    Unknown,
}

/// At most this many newly added names wait for [`NameTable::take_new_names`]; past that the
/// whole list is dropped and the reader is told to flush everything.
const MAX_NEW_NAMES: usize = 4096;

/// The names added since the reader last asked (to flush forwarded answers cached for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewNames {
    /// These name keys (lower case, labels joined by `.`).
    Some(Vec<Box<[u8]>>),
    /// Too many to list: treat every name as new.
    All,
}

/// The master copy and the names added since the reader last asked.
#[derive(Debug, Default)]
struct Master {
    inner: Inner,
    new_names: Vec<Key>,
    new_names_overflowed: bool,
}

/// The shared name table.
#[derive(Debug, Default)]
pub struct NameTable {
    master: Mutex<Master>,
    /// Bumped, with `master` locked, after every change.
    generation: AtomicU64,
    /// The newest snapshot built and the generation it shows (built once for all readers).
    published: Mutex<Option<(u64, Arc<Inner>)>>,
    /// Rotates the order of multi-address answers (round robin).
    rotation: AtomicUsize,
}

/// An immutable snapshot of the table, as one reader sees it; [`NameTable::refresh`] brings it
/// up to date.
#[derive(Debug, Clone)]
pub struct TableView {
    generation: u64,
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NameTable {
    /// An empty table.
    pub fn new() -> NameTable {
        NameTable::default()
    }

    /// Changes the master copy with `f` and bumps the generation.
    fn write<R>(&self, f: impl FnOnce(&mut Master) -> R) -> R {
        let mut master = lock(&self.master);
        let r = f(&mut master);
        self.generation.fetch_add(1, Ordering::Release);
        r
    }

    /// The generation of the master copy (changes on every write).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn view(&self) -> TableView {
        let mut view = TableView {
            generation: u64::MAX,
            inner: Arc::default(),
        };
        self.refresh(&mut view);
        view
    }

    /// Brings `view` up to date; one atomic load when nothing changed. True if it changed.
    pub fn refresh(&self, view: &mut TableView) -> bool {
        if self.generation.load(Ordering::Acquire) == view.generation {
            return false;
        }
        let mut published = lock(&self.published);
        let current = {
            let master = lock(&self.master);
            // Read under the master lock: the generation matches the content copied.
            let generation = self.generation.load(Ordering::Acquire);
            match &*published {
                Some((g, inner)) if *g == generation => (generation, inner.clone()),
                _ => (generation, Arc::new(master.inner.clone())),
            }
        };
        *published = Some(current.clone());
        let changed = view.generation != current.0;
        (view.generation, view.inner) = current;
        changed
    }

    /// The names added since the last call (for the DNS thread, to flush cached forwarded
    /// answers for names that are now local).
    pub fn take_new_names(&self) -> NewNames {
        let mut master = lock(&self.master);
        let overflowed = std::mem::take(&mut master.new_names_overflowed);
        let names = std::mem::take(&mut master.new_names);
        if overflowed {
            NewNames::All
        } else {
            NewNames::Some(names)
        }
    }

    /// Adds (or replaces) `sandbox`'s endpoint on `network`: its name and `aliases` resolve to
    /// `addr` for sandboxes on that network, and `addr` resolves back to the sandbox name.
    ///
    /// On the default network ([`DEFAULT_NETWORK`]) this checks the names and adds nothing.
    pub fn add_endpoint(
        &self,
        network: &str,
        sandbox: &str,
        addr: Ipv4Addr,
        aliases: &[String],
    ) -> Result<(), TableError> {
        let mut keys = Vec::with_capacity(1 + aliases.len());
        keys.push(name_key(sandbox)?);
        for alias in aliases {
            let key = name_key(alias)?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if network == DEFAULT_NETWORK {
            return Ok(());
        }
        self.write(|master| {
            let inner = &mut master.inner;
            inner.remove_endpoint(network, sandbox);
            let net = inner.networks.entry(network.into()).or_default();
            for key in &keys {
                net.names
                    .entry(key.clone())
                    .or_default()
                    .addrs
                    .push((sandbox.into(), addr));
            }
            let new_addr = net.ptr.insert(addr, sandbox.into()).is_none();
            for key in &keys {
                let count = inner.known_names.entry(key.clone()).or_insert(0);
                *count += 1;
                if *count == 1 && !master.new_names_overflowed {
                    if master.new_names.len() < MAX_NEW_NAMES {
                        master.new_names.push(key.clone());
                    } else {
                        master.new_names = Vec::new();
                        master.new_names_overflowed = true;
                    }
                }
            }
            if new_addr {
                *inner.known_addrs.entry(addr).or_insert(0) += 1;
            }
            inner
                .sandboxes
                .entry(sandbox.into())
                .or_default()
                .push(Endpoint {
                    network: network.into(),
                    addr,
                    keys,
                });
        });
        Ok(())
    }

    /// Removes `sandbox`'s endpoint on `network` (disconnect); true if there was one.
    pub fn remove_endpoint(&self, network: &str, sandbox: &str) -> bool {
        self.write(|m| m.inner.remove_endpoint(network, sandbox))
    }

    /// Removes every endpoint of `sandbox` (sandbox removal); returns how many there were.
    pub fn remove_sandbox(&self, sandbox: &str) -> usize {
        self.write(|m| {
            let inner = &mut m.inner;
            let networks: Vec<Box<str>> = match inner.sandboxes.get(sandbox) {
                Some(endpoints) => endpoints.iter().map(|e| e.network.clone()).collect(),
                None => return 0,
            };
            for network in &networks {
                inner.remove_endpoint(network, sandbox);
            }
            networks.len()
        })
    }

    /// Removes a whole network (network removal); returns how many endpoints it had.
    pub fn remove_network(&self, network: &str) -> usize {
        self.write(|m| {
            let inner = &mut m.inner;
            let mut sandboxes: Vec<Box<str>> = match inner.networks.get(network) {
                Some(net) => net
                    .names
                    .values()
                    .flat_map(|entry| entry.addrs.iter().map(|(owner, _)| owner.clone()))
                    .collect(),
                None => return 0,
            };
            sandboxes.sort_unstable();
            sandboxes.dedup();
            let mut removed = 0;
            for sandbox in &sandboxes {
                removed += usize::from(inner.remove_endpoint(network, sandbox));
            }
            inner.networks.remove(network);
            removed
        })
    }

    /// The aliases (names other than the sandbox name) of `sandbox` on `network`.
    pub fn aliases(&self, network: &str, sandbox: &str) -> Vec<String> {
        let master = lock(&self.master);
        master
            .inner
            .sandboxes
            .get(sandbox)
            .and_then(|eps| eps.iter().find(|e| &*e.network == network))
            .map(|e| {
                e.keys[1..]
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many names the table holds over all networks.
    pub fn name_count(&self) -> usize {
        lock(&self.master).inner.known_names.len()
    }

    /// Looks up the IPv4 addresses of name `key` (lower case, no trailing dot) as seen from
    /// `asker` in `view`, writing them into `out` (cleared first) in round-robin order.
    pub fn lookup_a(
        &self,
        view: &TableView,
        asker: &str,
        key: &[u8],
        out: &mut Vec<Ipv4Addr>,
    ) -> Lookup<()> {
        let found = view.inner.lookup_a(asker, key, out);
        if found == Lookup::Found(()) && out.len() > 1 {
            let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % out.len();
            out.rotate_left(turn);
        }
        found
    }
}

impl TableView {
    /// Looks up the name `addr` was handed out to, as seen from `asker` (PTR).
    pub fn lookup_ptr(&self, asker: &str, addr: Ipv4Addr) -> Lookup<&str> {
        let inner = &self.inner;
        if !inner.known_addrs.contains_key(&addr) {
            return Lookup::Unknown;
        }
        let visible = inner.sandboxes.get(asker).and_then(|endpoints| {
            endpoints.iter().find_map(|endpoint| {
                inner
                    .networks
                    .get(&endpoint.network)
                    .and_then(|net| net.ptr.get(&addr))
            })
        });
        match visible {
            Some(name) => Lookup::Found(name),
            None => Lookup::Hidden,
        }
    }
}

impl Inner {
    /// The addresses of name `key` as seen from `asker`, into `out` (cleared first).
    fn lookup_a(&self, asker: &str, key: &[u8], out: &mut Vec<Ipv4Addr>) -> Lookup<()> {
        out.clear();
        if !self.known_names.contains_key(key) {
            return Lookup::Unknown;
        }
        let Some(endpoints) = self.sandboxes.get(asker) else {
            return Lookup::Hidden;
        };
        let mut found = false;
        for endpoint in endpoints {
            let Some(entry) = self
                .networks
                .get(&endpoint.network)
                .and_then(|net| net.names.get(key))
            else {
                continue;
            };
            found = true;
            for (_, addr) in &entry.addrs {
                if !out.contains(addr) {
                    out.push(*addr);
                }
            }
        }
        if found {
            Lookup::Found(())
        } else {
            Lookup::Hidden
        }
    }

    /// Removes one endpoint and every record it brought; true if it existed.
    fn remove_endpoint(&mut self, network: &str, sandbox: &str) -> bool {
        let Some(endpoints) = self.sandboxes.get_mut(sandbox) else {
            return false;
        };
        let Some(pos) = endpoints.iter().position(|e| &*e.network == network) else {
            return false;
        };
        let endpoint = endpoints.swap_remove(pos);
        if endpoints.is_empty() {
            self.sandboxes.remove(sandbox);
        }
        let Some(net) = self.networks.get_mut(network) else {
            return true;
        };
        for key in &endpoint.keys {
            if let Some(entry) = net.names.get_mut(key) {
                entry.addrs.retain(|(owner, _)| &**owner != sandbox);
                if entry.addrs.is_empty() {
                    net.names.remove(key);
                }
            }
            decrement(&mut self.known_names, key);
        }
        if net
            .ptr
            .get(&endpoint.addr)
            .is_some_and(|owner| &**owner == sandbox)
        {
            net.ptr.remove(&endpoint.addr);
            decrement(&mut self.known_addrs, &endpoint.addr);
        }
        if net.names.is_empty() && net.ptr.is_empty() {
            self.networks.remove(network);
        }
        true
    }
}

/// Lowers a reference count, removing the entry at zero.
fn decrement<K, Q>(counts: &mut HashMap<K, usize>, key: &Q)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn a(table: &NameTable, asker: &str, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        let mut out = Vec::new();
        let key = name_key(name).unwrap();
        match table.lookup_a(&table.view(), asker, &key, &mut out) {
            Lookup::Found(()) => Lookup::Found(out),
            Lookup::Hidden => Lookup::Hidden,
            Lookup::Unknown => Lookup::Unknown,
        }
    }

    #[test]
    fn names_and_aliases_resolve_within_a_network_only() {
        let t = NameTable::new();
        t.add_endpoint("front", "web", ip("10.1.0.2"), &["www".into()])
            .unwrap();
        t.add_endpoint("front", "client", ip("10.1.0.3"), &[])
            .unwrap();
        t.add_endpoint("back", "db", ip("10.2.0.2"), &["Store".into()])
            .unwrap();
        assert_eq!(a(&t, "client", "web"), Lookup::Found(vec![ip("10.1.0.2")]));
        assert_eq!(a(&t, "client", "WWW."), Lookup::Found(vec![ip("10.1.0.2")]));
        assert_eq!(a(&t, "client", "db"), Lookup::Hidden);
        assert_eq!(a(&t, "client", "store"), Lookup::Hidden);
        assert_eq!(a(&t, "db", "STORE"), Lookup::Found(vec![ip("10.2.0.2")]));
        assert_eq!(a(&t, "client", "example.com"), Lookup::Unknown);
        // A sandbox on no named network (e.g. only the default bridge) sees no names.
        assert_eq!(a(&t, "on-bridge", "web"), Lookup::Hidden);
        assert_eq!(t.aliases("back", "db"), vec!["store".to_string()]);
        // The default bridge gets no names, even when asked to.
        t.add_endpoint(DEFAULT_NETWORK, "client", ip("172.17.0.2"), &["b".into()])
            .unwrap();
        t.add_endpoint(DEFAULT_NETWORK, "other", ip("172.17.0.3"), &[])
            .unwrap();
        assert_eq!(a(&t, "client", "other"), Lookup::Unknown);
        assert_eq!(a(&t, "client", "b"), Lookup::Unknown);
    }

    #[test]
    fn shared_alias_answers_round_robin() {
        let t = NameTable::new();
        for (i, sb) in ["a", "b", "c"].iter().enumerate() {
            let addr = Ipv4Addr::new(10, 0, 0, 2 + i as u8);
            t.add_endpoint("n", sb, addr, &["svc".into()]).unwrap();
        }
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..3 {
            let Lookup::Found(addrs) = a(&t, "a", "svc") else {
                panic!("svc not found")
            };
            assert_eq!(addrs.len(), 3);
            firsts.insert(addrs[0]);
        }
        assert_eq!(firsts.len(), 3, "each answer starts with another address");
    }

    #[test]
    fn removal_takes_effect_at_once() {
        let t = NameTable::new();
        t.add_endpoint("n", "a", ip("10.0.0.2"), &["svc".into()])
            .unwrap();
        t.add_endpoint("n", "b", ip("10.0.0.3"), &["svc".into()])
            .unwrap();
        t.add_endpoint("m", "b", ip("10.9.0.3"), &[]).unwrap();
        assert!(t.remove_endpoint("n", "b"));
        assert_eq!(a(&t, "a", "svc"), Lookup::Found(vec![ip("10.0.0.2")]));
        assert_eq!(a(&t, "a", "b"), Lookup::Hidden, "b is still known on m");
        assert_eq!(t.remove_sandbox("b"), 1);
        assert_eq!(a(&t, "a", "b"), Lookup::Unknown);
        assert_eq!(t.remove_sandbox("a"), 1);
        assert_eq!(t.name_count(), 0);
        assert!(t.view().inner.networks.is_empty());
        assert!(t.view().inner.known_addrs.is_empty());
        assert!(!t.remove_endpoint("n", "a"));
    }

    #[test]
    fn re_adding_an_endpoint_replaces_it() {
        let t = NameTable::new();
        t.add_endpoint("n", "a", ip("10.0.0.2"), &["x".into()])
            .unwrap();
        t.add_endpoint("n", "a", ip("10.0.0.5"), &["y".into()])
            .unwrap();
        assert_eq!(a(&t, "a", "a"), Lookup::Found(vec![ip("10.0.0.5")]));
        assert_eq!(a(&t, "a", "x"), Lookup::Unknown);
        assert_eq!(a(&t, "a", "y"), Lookup::Found(vec![ip("10.0.0.5")]));
        assert_eq!(t.view().lookup_ptr("a", ip("10.0.0.2")), Lookup::Unknown);
    }

    #[test]
    fn ptr_is_answered_from_the_askers_view() {
        let t = NameTable::new();
        t.add_endpoint("n", "web", ip("10.0.0.2"), &[]).unwrap();
        t.add_endpoint("m", "other", ip("10.9.0.2"), &[]).unwrap();
        let name = |addr| {
            let view = t.view();
            match view.lookup_ptr("web", ip(addr)) {
                Lookup::Found(n) => Lookup::Found(n.to_string()),
                Lookup::Hidden => Lookup::Hidden,
                Lookup::Unknown => Lookup::Unknown,
            }
        };
        assert_eq!(name("10.0.0.2"), Lookup::Found("web".to_string()));
        assert_eq!(name("10.9.0.2"), Lookup::Hidden);
        assert_eq!(name("10.0.0.99"), Lookup::Unknown);
        assert_eq!(t.remove_network("n"), 1);
        assert_eq!(name("10.0.0.2"), Lookup::Unknown);
    }

    #[test]
    fn a_view_sees_changes_only_when_refreshed_and_new_names_are_listed() {
        let t = NameTable::new();
        let mut view = t.view();
        assert!(!t.refresh(&mut view), "nothing changed");
        t.add_endpoint("n", "a", ip("10.0.0.2"), &["Svc".into()])
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(t.lookup_a(&view, "a", b"svc", &mut out), Lookup::Unknown);
        assert!(t.refresh(&mut view));
        assert_eq!(t.lookup_a(&view, "a", b"svc", &mut out), Lookup::Found(()));
        // A second reader shares the snapshot built for the first.
        let other = t.view();
        assert!(Arc::ptr_eq(&other.inner, &view.inner));
        assert_eq!(
            t.take_new_names(),
            NewNames::Some(vec![b"a".to_vec().into(), b"svc".to_vec().into()])
        );
        assert_eq!(t.take_new_names(), NewNames::Some(Vec::new()));
        // Too many new names at once say "all".
        for i in 0..=MAX_NEW_NAMES {
            t.add_endpoint("n", &format!("s{i}"), ip("10.0.1.2"), &[])
                .unwrap();
        }
        assert_eq!(t.take_new_names(), NewNames::All);
        assert_eq!(t.take_new_names(), NewNames::Some(Vec::new()));
    }

    #[test]
    fn invalid_names_are_refused() {
        let t = NameTable::new();
        for bad in [
            "",
            ".",
            "a..b",
            "with space",
            "é",
            &"x".repeat(64),
            &"a.".repeat(128),
        ] {
            assert!(
                t.add_endpoint("n", "ok", ip("10.0.0.2"), &[bad.to_string()])
                    .is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(t.name_count(), 0, "a refused alias adds nothing");
    }
}
