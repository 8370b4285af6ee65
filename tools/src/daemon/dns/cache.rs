//! The cache of forwarded answers, owned by the DNS thread: upstream answers kept for their
//! TTL and served again without asking the upstream (as dnsmasq does; Docker's embedded DNS
//! does not cache).
//!
//! - Keyed by the question (name lower case, RFC 4343; type; class) and the query's EDNS, DO,
//!   CD and RD bits, which change what an upstream answers.
//! - Kept for the smallest TTL of the answer's records (RFC 2181 § 5.2 makes an RRset's TTLs
//!   equal; the smallest over all sections keeps every record valid), at most
//!   [`MAX_POSITIVE_TTL`]. TTLs of 0 are not cached.
//! - Negative answers (NXDOMAIN, and NOERROR without answers: NODATA) are cached only with an
//!   SOA in the authority section, for the smaller of its TTL and its MINIMUM field
//!   (RFC 2308 § 5), at most [`MAX_NEGATIVE_TTL`]. SERVFAIL and every other code, truncated
//!   answers and answers with an extended RCODE are not cached.
//! - A served answer carries the client's id and question (its case too) and every TTL
//!   lowered by the whole seconds it spent in the cache (RFC 1035 § 6.1.2 / RFC 2308 § 5).
//! - Bounded: at most [`MAX_ENTRIES`] answers and [`MAX_BYTES`] bytes; the oldest stored goes
//!   first; an expired entry goes when it is next asked for or its turn to be evicted comes.
//! - A name that becomes local (a sandbox name or alias) is flushed: the table answers it now.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Header, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::resolver::{ForwardQuery, HEADER_LEN};
use super::table::NewNames;
use super::Counters;

/// At most this many answers are cached.
pub const MAX_ENTRIES: usize = 10_000;

/// At most this many bytes of answers are cached.
pub const MAX_BYTES: usize = 4 << 20;

/// Answers larger than this are not cached (they come over TCP, or are rare).
pub const MAX_ANSWER_LEN: usize = 4096;

/// The longest a positive answer is kept (one day, as common resolvers' `max-cache-ttl`).
pub const MAX_POSITIVE_TTL: u32 = 86_400;

/// The longest a negative answer is kept (RFC 2308 § 5 suggests a cap of hours; a sandbox
/// waiting for a name to appear upstream should not wait that long).
pub const MAX_NEGATIVE_TTL: u32 = 900;

/// The longest name on the wire (RFC 1035 § 2.3.4).
const MAX_NAME_WIRE: usize = 255;

/// Type, class and the flags byte after the name.
const KEY_TAIL: usize = 5;

/// The cache key of a question: its name in wire form, lower case, then type, class and
/// flags (EDNS, DO, CD, RD). Fixed size, so building it allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    len: u16,
    bytes: [u8; MAX_NAME_WIRE + KEY_TAIL],
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CacheKey({:?})",
            String::from_utf8_lossy(self.as_bytes())
        )
    }
}

impl CacheKey {
    /// The key of `query` asked with `header` and `edns`.
    pub fn new(query: &Query, header: &Header, edns: Option<&Edns>) -> CacheKey {
        let mut key = CacheKey {
            len: 0,
            bytes: [0; MAX_NAME_WIRE + KEY_TAIL],
        };
        let mut at = write_wire_name(query.name(), &mut key.bytes[..MAX_NAME_WIRE]);
        let flags = u8::from(edns.is_some())
            | u8::from(edns.is_some_and(|e| e.flags().dnssec_ok)) << 1
            | u8::from(header.metadata.checking_disabled) << 2
            | u8::from(header.metadata.recursion_desired) << 3;
        let qtype = u16::from(query.query_type()).to_be_bytes();
        let qclass = u16::from(query.query_class()).to_be_bytes();
        for b in [qtype[0], qtype[1], qclass[0], qclass[1], flags] {
            key.bytes[at] = b;
            at += 1;
        }
        key.len = u16::try_from(at).unwrap_or(0);
        key
    }

    /// The key of a query whose question section (a name without compression pointers,
    /// type, class) is `question`, asked with EDNS (`Some(DO bit)`) or without, and the CD
    /// and RD bits: the same key [`CacheKey::new`] makes of the decoded query.
    pub fn from_question(
        question: &[u8],
        dnssec_ok: Option<bool>,
        checking_disabled: bool,
        recursion_desired: bool,
    ) -> CacheKey {
        let mut key = CacheKey {
            len: 0,
            bytes: [0; MAX_NAME_WIRE + KEY_TAIL],
        };
        let n = question.len().min(MAX_NAME_WIRE + KEY_TAIL - 1);
        let name_len = n.saturating_sub(4);
        for (dst, src) in key.bytes[..n].iter_mut().zip(question) {
            *dst = *src;
        }
        // Lower-case the labels' bytes only, not their length bytes (RFC 4343 § 3).
        let mut at = 0;
        while at < name_len {
            let len = usize::from(key.bytes[at]);
            let end = (at + 1 + len).min(name_len);
            key.bytes[at + 1..end].make_ascii_lowercase();
            at = end;
        }
        key.bytes[n] = u8::from(dnssec_ok.is_some())
            | u8::from(dnssec_ok == Some(true)) << 1
            | u8::from(checking_disabled) << 2
            | u8::from(recursion_desired) << 3;
        key.len = u16::try_from(n + 1).unwrap_or(0);
        key
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes `name` in wire form (RFC 1035 § 3.1), lower case, into `buf`; returns the length
/// (at most 255: a longer name does not parse).
fn write_wire_name(name: &Name, buf: &mut [u8]) -> usize {
    let mut at = 0;
    for label in name.iter() {
        let Ok(len) = u8::try_from(label.len()) else {
            break;
        };
        if at + 1 + label.len() + 1 > buf.len() {
            break;
        }
        buf[at] = len;
        for (dst, src) in buf[at + 1..].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        at += 1 + label.len();
    }
    buf[at] = 0;
    at + 1
}

/// The wire form of a name-table key (labels joined by `.`, lower case already).
fn table_key_to_wire(key: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(key.len() + 2);
    for label in key.split(|b| *b == b'.') {
        wire.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        wire.extend_from_slice(label);
    }
    wire.push(0);
    wire
}

/// One cached answer.
#[derive(Debug)]
struct Entry {
    /// The upstream's answer (its id is replaced when served).
    answer: Box<[u8]>,
    /// The end of its question section.
    question_end: usize,
    /// Where each record's TTL is (not the OPT's, whose TTL field holds flags).
    ttl_offsets: Box<[u16]>,
    stored: Instant,
    expires: Instant,
    /// Its place in the eviction order.
    serial: u64,
}

/// What reading an answer found.
struct Parsed {
    question_end: usize,
    ttl_offsets: Vec<u16>,
    /// For how long it may be cached; `None`: not at all.
    ttl: Option<u32>,
}

/// The cache of forwarded answers.
#[derive(Debug)]
pub struct ForwardCache {
    entries: HashMap<Box<[u8]>, Entry>,
    /// Keys in the order stored, with their serial (stale pairs are skipped).
    order: VecDeque<(Box<[u8]>, u64)>,
    bytes: usize,
    next_serial: u64,
    max_entries: usize,
    max_bytes: usize,
    counters: Arc<Counters>,
}

impl ForwardCache {
    /// An empty cache of at most `max_entries` answers and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize, counters: Arc<Counters>) -> ForwardCache {
        ForwardCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_serial: 0,
            max_entries,
            max_bytes,
            counters,
        }
    }

    /// How many answers are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the cached answer to `query` (with `fwd` from the resolver) into `out`, with the
    /// client's id and question and the TTLs lowered by the time spent in the cache; false
    /// (a miss, counted) if there is none, it expired, or it is larger than the client takes.
    pub fn answer(
        &mut self,
        query: &[u8],
        fwd: &ForwardQuery,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        let hit = self.serve(query, fwd, now, out);
        Counters::bump(if hit {
            &self.counters.cache_hits
        } else {
            &self.counters.cache_misses
        });
        hit
    }

    fn serve(&mut self, query: &[u8], fwd: &ForwardQuery, now: Instant, out: &mut Vec<u8>) -> bool {
        let key = fwd.key.as_bytes();
        let Some(entry) = self.entries.get(key) else {
            return false;
        };
        if now >= entry.expires {
            self.remove(key);
            return false;
        }
        let q = fwd.question_end;
        if entry.answer.len() > usize::from(fwd.udp_limit)
            || entry.question_end != q
            || query.len() < q
        {
            return false;
        }
        out.clear();
        out.extend_from_slice(&entry.answer);
        out[..2].copy_from_slice(&fwd.id.to_be_bytes());
        out[HEADER_LEN..q].copy_from_slice(&query[HEADER_LEN..q]);
        let aged = u32::try_from(now.saturating_duration_since(entry.stored).as_secs())
            .unwrap_or(u32::MAX);
        for &at in entry.ttl_offsets.iter() {
            let at = usize::from(at);
            if let Some(field) = out.get_mut(at..at + 4) {
                let ttl = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
                field.copy_from_slice(&ttl.saturating_sub(aged).to_be_bytes());
            }
        }
        true
    }

    /// Stores the upstream's `answer` to the query keyed `key`, if it may be cached.
    pub fn insert(&mut self, key: &CacheKey, answer: &[u8], now: Instant) {
        if answer.len() > MAX_ANSWER_LEN || answer.len() > self.max_bytes {
            return;
        }
        let Some(parsed) = parse_answer(answer) else {
            return;
        };
        let Some(ttl) = parsed.ttl.filter(|t| *t > 0) else {
            return;
        };
        let key: Box<[u8]> = key.as_bytes().into();
        self.remove(&key);
        let serial = self.next_serial;
        self.next_serial += 1;
        self.bytes += answer.len();
        self.entries.insert(
            key.clone(),
            Entry {
                answer: answer.into(),
                question_end: parsed.question_end,
                ttl_offsets: parsed.ttl_offsets.into(),
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
                serial,
            },
        );
        self.order.push_back((key, serial));
        self.evict(now);
        self.publish_size();
    }

    /// Removes the entries of names that became local (or all of them).
    pub fn flush(&mut self, names: &NewNames) {
        match names {
            NewNames::All => {
                self.entries.clear();
                self.order.clear();
                self.bytes = 0;
            }
            NewNames::Some(keys) if keys.is_empty() => return,
            NewNames::Some(keys) => {
                let wire: HashSet<Vec<u8>> = keys.iter().map(|k| table_key_to_wire(k)).collect();
                let mut freed = 0;
                self.entries.retain(|key, entry| {
                    let name = &key[..key.len().saturating_sub(KEY_TAIL)];
                    let keep = !wire.contains(name);
                    if !keep {
                        freed += entry.answer.len();
                    }
                    keep
                });
                self.bytes -= freed;
            }
        }
        self.publish_size();
    }

    /// Removes one entry (its place in the order goes stale).
    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.answer.len();
        }
    }

    /// Drops the oldest entries until the cache is within its bounds.
    fn evict(&mut self, now: Instant) {
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((key, serial)) = self.order.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.serial != serial {
                continue;
            }
            if entry.expires > now {
                Counters::bump(&self.counters.cache_evictions);
            }
            self.remove(&key);
        }
        // Replaced and flushed entries leave stale pairs: rebuild when they dominate.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let mut live: Vec<(u64, &Box<[u8]>)> =
                self.entries.iter().map(|(k, e)| (e.serial, k)).collect();
            live.sort_unstable();
            self.order = live.into_iter().map(|(s, k)| (k.clone(), s)).collect();
        }
    }

    fn publish_size(&self) {
        let n = u64::try_from(self.entries.len()).unwrap_or(u64::MAX);
        self.counters
            .cache_entries
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads an upstream answer: where its question ends, where its TTLs are, and for how long it
/// may be cached. `None` if it does not read as one answer with one question.
fn parse_answer(answer: &[u8]) -> Option<Parsed> {
    let mut decoder = BinDecoder::new(answer);
    let header = Header::read(&mut decoder).ok()?;
    let counts = header.counts;
    if counts.queries != 1 {
        return None;
    }
    Query::read(&mut decoder).ok()?;
    let question_end = decoder.index();
    let mut ttl_offsets = Vec::new();
    let mut min_ttl = u32::MAX;
    let mut soa_negative_ttl = None;
    let mut extended_rcode = false;
    let sections = [
        (counts.answers, false),
        (counts.authorities, true),
        (counts.additionals, false),
    ];
    for (count, authority) in sections {
        for _ in 0..count {
            // RFC 1035 § 4.1.3: NAME, TYPE, CLASS, TTL, RDLENGTH, RDATA.
            Name::read(&mut decoder).ok()?;
            let rtype = RecordType::from(decoder.read_u16().ok()?.unverified());
            decoder.read_u16().ok()?;
            let ttl_at = u16::try_from(decoder.index()).ok()?;
            let ttl = decoder.read_u32().ok()?.unverified();
            let rdlen = decoder.read_u16().ok()?.unverified();
            let rdata = decoder.read_slice(usize::from(rdlen)).ok()?.unverified();
            if rtype == RecordType::OPT {
                // RFC 6891 § 6.1.3: the TTL field holds the extended RCODE, version, flags.
                extended_rcode |= ttl >> 24 != 0;
                continue;
            }
            // RFC 2181 § 8: a TTL with the top bit set is treated as zero.
            let ttl = if ttl & 0x8000_0000 != 0 { 0 } else { ttl };
            min_ttl = min_ttl.min(ttl);
            ttl_offsets.push(ttl_at);
            if authority && rtype == RecordType::SOA && rdata.len() >= 4 {
                // The SOA's MINIMUM is the last field of its RDATA (RFC 1035 § 3.3.13).
                let m = &rdata[rdata.len() - 4..];
                let minimum = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
                soa_negative_ttl = Some(ttl.min(minimum));
            }
        }
    }
    if !decoder.is_empty() {
        return None;
    }
    let meta = header.metadata;
    let ttl = if meta.truncation || extended_rcode {
        None
    } else {
        match meta.response_code {
            ResponseCode::NoError if counts.answers > 0 => Some(min_ttl.min(MAX_POSITIVE_TTL)),
            ResponseCode::NoError | ResponseCode::NXDomain => {
                soa_negative_ttl.map(|t| t.min(min_ttl).min(MAX_NEGATIVE_TTL))
            }
            _ => None,
        }
    };
    Some(Parsed {
        question_end,
        ttl_offsets,
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{RData, Record};
    use std::str::FromStr;

    fn query(id: u16, name: &str) -> (Vec<u8>, ForwardQuery) {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        // from_ascii keeps the case (from_str lowers it).
        let q = Query::query(Name::from_ascii(name).unwrap(), RecordType::A);
        msg.add_query(q.clone());
        let bytes = msg.to_vec().unwrap();
        let header = Header {
            metadata: msg.metadata,
            counts: Default::default(),
        };
        let fwd = ForwardQuery {
            id,
            question_end: bytes.len(),
            udp_limit: 512,
            key: CacheKey::new(&q, &header, None),
        };
        (bytes, fwd)
    }

    fn answer(name: &str, code: ResponseCode, a_ttls: &[u32], soa: Option<(u32, u32)>) -> Vec<u8> {
        let mut msg = Message::response(0x7777, OpCode::Query);
        msg.metadata.response_code = code;
        let owner = Name::from_str(name).unwrap();
        msg.add_query(Query::query(owner.clone(), RecordType::A));
        for (i, ttl) in a_ttls.iter().enumerate() {
            let addr = std::net::Ipv4Addr::new(10, 0, 0, i as u8 + 1);
            msg.answers
                .push(Record::from_rdata(owner.clone(), *ttl, RData::A(A(addr))));
        }
        if let Some((ttl, minimum)) = soa {
            let zone = Name::from_str("test.").unwrap();
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 2, 3, 4, minimum);
            msg.authorities
                .push(Record::from_rdata(zone, ttl, RData::SOA(soa)));
        }
        msg.to_vec().unwrap()
    }

    fn cache() -> ForwardCache {
        ForwardCache::new(3, MAX_BYTES, Arc::new(Counters::default()))
    }

    fn ttls(bytes: &[u8]) -> Vec<u32> {
        let msg = Message::from_vec(bytes).unwrap();
        msg.answers
            .iter()
            .chain(&msg.authorities)
            .map(|r| r.ttl)
            .collect()
    }

    #[test]
    fn answers_are_served_with_the_clients_id_and_case_and_aged_ttls() {
        let mut c = cache();
        let t0 = Instant::now();
        let (q, fwd) = query(1, "Far.Test.");
        let mut out = Vec::new();
        assert!(!c.answer(&q, &fwd, t0, &mut out));
        c.insert(
            &fwd.key,
            &answer("far.test.", ResponseCode::NoError, &[60, 30], None),
            t0,
        );
        let (q2, fwd2) = query(2, "FAR.test.");
        assert_eq!(fwd.key, fwd2.key, "names compare case-insensitively");
        assert!(c.answer(&q2, &fwd2, t0 + Duration::from_millis(10_500), &mut out));
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.id, 2);
        assert_eq!(msg.queries[0].name().to_ascii(), "FAR.test.");
        assert_eq!(ttls(&out), vec![50, 20]);
        // The smallest TTL (30 s) bounds the entry's life.
        assert!(!c.answer(&q2, &fwd2, t0 + Duration::from_secs(30), &mut out));
        assert!(c.is_empty(), "an expired entry goes when asked for");
        let s = c.counters.snapshot();
        assert_eq!((s.cache_hits, s.cache_misses), (1, 2));
    }

    #[test]
    fn negative_answers_need_an_soa_and_last_its_minimum() {
        let mut c = cache();
        let t0 = Instant::now();
        let (q, fwd) = query(1, "none.test.");
        let mut out = Vec::new();
        // NXDOMAIN without an SOA: not cached (RFC 2308 § 5).
        c.insert(
            &fwd.key,
            &answer("none.test.", ResponseCode::NXDomain, &[], None),
            t0,
        );
        assert!(c.is_empty());
        // With an SOA: the smaller of its TTL and MINIMUM.
        let nx = answer("none.test.", ResponseCode::NXDomain, &[], Some((300, 20)));
        c.insert(&fwd.key, &nx, t0);
        assert!(c.answer(&q, &fwd, t0 + Duration::from_secs(5), &mut out));
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ttls(&out), vec![295]);
        assert!(!c.answer(&q, &fwd, t0 + Duration::from_secs(20), &mut out));
        // Capped.
        let long = answer(
            "none.test.",
            ResponseCode::NoError,
            &[],
            Some((99_999, 99_999)),
        );
        c.insert(&fwd.key, &long, t0);
        let at = t0 + Duration::from_secs(u64::from(MAX_NEGATIVE_TTL));
        assert!(!c.answer(&q, &fwd, at, &mut out));
    }

    #[test]
    fn servfail_truncated_and_zero_ttls_are_not_cached() {
        let mut c = cache();
        let t0 = Instant::now();
        let (_, fwd) = query(1, "x.test.");
        c.insert(
            &fwd.key,
            &answer("x.test.", ResponseCode::ServFail, &[], Some((60, 60))),
            t0,
        );
        c.insert(
            &fwd.key,
            &answer("x.test.", ResponseCode::NoError, &[0], None),
            t0,
        );
        let mut tc = answer("x.test.", ResponseCode::NoError, &[60], None);
        tc[2] |= 0x02;
        c.insert(&fwd.key, &tc, t0);
        c.insert(&fwd.key, &[1, 2, 3], t0);
        assert!(c.is_empty());
    }

    #[test]
    fn size_is_bounded_and_local_names_are_flushed() {
        let mut c = cache();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let names = ["a.test.", "b.test.", "c.test.", "d.test."];
        for name in names {
            let (_, fwd) = query(1, name);
            c.insert(
                &fwd.key,
                &answer(name, ResponseCode::NoError, &[60], None),
                t0,
            );
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.counters.snapshot().cache_evictions, 1);
        let (q, fwd) = query(1, "a.test.");
        assert!(!c.answer(&q, &fwd, t0, &mut out), "the oldest went first");
        let (q, fwd) = query(1, "b.test.");
        assert!(c.answer(&q, &fwd, t0, &mut out));
        c.flush(&NewNames::Some(vec![b"b.test".to_vec().into()]));
        assert!(!c.answer(&q, &fwd, t0, &mut out));
        assert_eq!(c.len(), 2);
        assert_eq!(c.counters.snapshot().cache_entries, 2);
        c.flush(&NewNames::All);
        assert!(c.is_empty());
        // The bytes bound holds too.
        let mut small = ForwardCache::new(100, 100, Arc::new(Counters::default()));
        for name in names {
            let (_, fwd) = query(1, name);
            small.insert(
                &fwd.key,
                &answer(name, ResponseCode::NoError, &[60], None),
                t0,
            );
        }
        assert!(small.bytes <= 100 && small.len() == 2, "{}", small.bytes);
    }

    #[test]
    fn a_client_taking_less_than_the_cached_answer_is_a_miss() {
        let mut c = cache();
        let t0 = Instant::now();
        let (q, mut fwd) = query(1, "big.test.");
        let ttls = vec![60; 40];
        let big = answer("big.test.", ResponseCode::NoError, &ttls, None);
        assert!(big.len() > 512);
        fwd.udp_limit = 4096;
        c.insert(&fwd.key, &big, t0);
        let mut out = Vec::new();
        assert!(c.answer(&q, &fwd, t0, &mut out));
        fwd.udp_limit = 512;
        assert!(!c.answer(&q, &fwd, t0, &mut out));
    }
}
