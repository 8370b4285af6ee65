//! Forwarding to the upstream resolvers: their list (`IP[:PORT]`, by default the daemon's
//! `/etc/resolv.conf`), the non-blocking UDP forwarder driven by the DNS thread, and the
//! blocking TCP forwarder used for TCP queries and for truncated UDP answers.
//!
//! Every upstream query leaves from the daemon's namespace (where the upstreams are
//! reachable) with an id of ours, random (RFC 5452 § 9.2); the answer is accepted only if it
//! comes from the upstream it was sent to (connected sockets), carries that id and repeats the
//! question (RFC 5452 § 9.1); the client's id is then put back. Each attempt gets its share of
//! the total timeout, then the next upstream is tried; when all failed, the client gets
//! SERVFAIL.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::cache::CacheKey;
use super::resolver::{accept_upstream_answer, ForwardQuery, HEADER_LEN};
use super::{DNS_ADDR, DNS_PORT};

/// The default total time a forwarded query may take before the client gets SERVFAIL.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// No attempt gets less than this, however many upstreams there are.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// At most this many UDP queries wait for upstreams at once; more are dropped and counted.
pub const MAX_PENDING: usize = 4096;

/// A bad upstream configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Not `IP`, `IP:PORT` or `[IPv6]:PORT`.
    #[error("invalid DNS upstream {0:?}: expected IP or IP:PORT")]
    Invalid(String),
    /// The upstream is the sandboxes' own resolver address: queries would loop.
    #[error("DNS upstream {0} is vswitchd's own resolver address (127.0.0.11:53): it would forward to itself")]
    Loop(SocketAddr),
}

/// Where and how long to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The upstream resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// The total time for one query, over all attempts.
    pub timeout: Duration,
}

impl ForwardConfig {
    /// A configuration with `upstreams` (checked against loops) and the default timeout.
    pub fn new(upstreams: Vec<SocketAddr>) -> Result<ForwardConfig, ForwardError> {
        if let Some(looped) = upstreams.iter().find(|a| is_our_address(a)) {
            return Err(ForwardError::Loop(*looped));
        }
        Ok(ForwardConfig {
            upstreams,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Parses `--dns-upstream` values; with none, the nameservers of `/etc/resolv.conf`.
    pub fn from_args(args: &[String]) -> Result<ForwardConfig, ForwardError> {
        if args.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let upstreams = upstreams_from_resolv_conf(&text);
            let listed = text
                .lines()
                .filter(|l| l.split_whitespace().next() == Some("nameserver"))
                .count();
            if listed != upstreams.len() {
                tracing::warn!(
                    listed,
                    used = upstreams.len(),
                    "some nameservers of /etc/resolv.conf are not used as DNS upstreams \
                     (127.0.0.11, scoped IPv6 or unparsable)"
                );
            }
            return ForwardConfig::new(upstreams);
        }
        let upstreams = args
            .iter()
            .map(|a| parse_upstream(a))
            .collect::<Result<Vec<_>, _>>()?;
        ForwardConfig::new(upstreams)
    }

    /// The time one attempt may take: the total shared among the upstreams.
    pub fn attempt_timeout(&self) -> Duration {
        let n = u32::try_from(self.upstreams.len().max(1)).unwrap_or(u32::MAX);
        (self.timeout / n).max(MIN_ATTEMPT).min(self.timeout)
    }
}

/// True for `127.0.0.11:53`, the sandboxes' resolver itself.
fn is_our_address(addr: &SocketAddr) -> bool {
    addr.ip() == IpAddr::V4(DNS_ADDR) && addr.port() == DNS_PORT
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT` (port 53 when absent).
pub fn parse_upstream(text: &str) -> Result<SocketAddr, ForwardError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| ForwardError::Invalid(text.to_owned()))
}

/// The `nameserver` lines of a resolv.conf, without `127.0.0.11` (a resolv.conf written for
/// a sandbox) and without unparsable values.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A scoped IPv6 address (fe80::1%eth0) is not supported: skipped.
        .filter_map(|value| value.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .filter(|addr| !is_our_address(addr))
        .collect()
}

/// Forwards `query` over TCP (RFC 7766 § 8: two-byte length prefix), trying each upstream in
/// turn within the total timeout; returns the upstream's answer with the client's id.
pub fn forward_tcp(config: &ForwardConfig, query: &[u8], fwd: &ForwardQuery) -> Option<Vec<u8>> {
    let deadline = Instant::now() + config.timeout;
    let mut ours = query.to_vec();
    for upstream in &config.upstreams {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let budget = config.attempt_timeout().min(deadline - now);
        let id: u16 = rand::random();
        ours[..2].copy_from_slice(&id.to_be_bytes());
        match tcp_exchange(*upstream, &ours, budget) {
            Ok(mut answer) if answer.get(..2) == Some(&id.to_be_bytes()[..]) => {
                if accept_upstream_answer(&ours, fwd, &mut answer, fwd.id) {
                    return Some(answer);
                }
                tracing::debug!(%upstream, "DNS upstream answered another question over TCP");
            }
            Ok(_) => tracing::debug!(%upstream, "DNS upstream answered with another id over TCP"),
            Err(err) => tracing::debug!(%upstream, %err, "DNS upstream failed over TCP"),
        }
    }
    None
}

/// One TCP query and answer, all within `budget`.
fn tcp_exchange(upstream: SocketAddr, query: &[u8], budget: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + budget;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    };
    let mut stream = TcpStream::connect_timeout(&upstream, left()?)?;
    stream.set_nodelay(true)?;
    let len =
        u16::try_from(query.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.set_read_timeout(Some(left()?))?;
    stream.read_exact(&mut len)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.set_read_timeout(Some(left()?))?;
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

/// Who gets the answer of a forwarded UDP query: the sandbox socket's token and the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The token of the sandbox's UDP socket in the DNS thread.
    pub socket: usize,
    /// The client's address (inside the sandbox).
    pub addr: SocketAddr,
}

/// What became of a forwarded UDP query.
#[derive(Debug)]
pub enum Done<'a> {
    /// Send this answer to the client (and cache it under this key).
    Answer(Client, &'a CacheKey, &'a [u8]),
    /// The upstream's UDP answer was truncated: ask again over TCP (the query, with the
    /// client's id, and the truncated answer to send if the full one does not fit).
    Truncated {
        /// Who asked.
        client: Client,
        /// The query as the client sent it.
        query: Vec<u8>,
        /// What the resolver said about it (boxed: this rare variant would otherwise make
        /// every `Done` as large as a cache key).
        fwd: Box<ForwardQuery>,
        /// The truncated answer, client id in place.
        truncated: Vec<u8>,
    },
    /// Every upstream failed: send SERVFAIL for this query (client id in place).
    Failed(Client, &'a [u8]),
}

/// A UDP query waiting for an upstream.
#[derive(Debug)]
struct Pending {
    client: Client,
    /// The query with our id.
    query: Vec<u8>,
    fwd: ForwardQuery,
    upstream: usize,
    /// When the whole query times out.
    deadline: Instant,
    /// The forwarder-wide number of the current attempt: a timer for another number is stale
    /// (ids are reused, attempt numbers never).
    attempt: u64,
}

/// The UDP forwarder: one connected socket per upstream, the pending queries by id, and their
/// timers in order of expiry (every attempt has the same timeout, so a queue suffices).
#[derive(Debug)]
pub struct UdpForwarder {
    config: ForwardConfig,
    sockets: Vec<Option<mio::net::UdpSocket>>,
    pending: HashMap<u16, Pending>,
    timers: VecDeque<(Instant, u16, u64)>,
    /// The number of the last attempt made.
    attempts: u64,
    spare: Vec<Vec<u8>>,
    scratch: Vec<u8>,
}

impl UdpForwarder {
    /// Opens one socket per upstream, in the calling thread's namespace; an upstream whose
    /// socket cannot be opened is skipped (logged).
    pub fn new(config: ForwardConfig) -> UdpForwarder {
        let sockets = config
            .upstreams
            .iter()
            .map(|upstream| {
                let any: SocketAddr = match upstream {
                    SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let socket = mio::net::UdpSocket::bind(any).and_then(|s| {
                    s.connect(*upstream)?;
                    Ok(s)
                });
                match socket {
                    Ok(socket) => Some(socket),
                    Err(err) => {
                        tracing::warn!(%upstream, %err, "cannot open a socket to a DNS upstream");
                        None
                    }
                }
            })
            .collect();
        UdpForwarder {
            config,
            sockets,
            pending: HashMap::new(),
            timers: VecDeque::new(),
            attempts: 0,
            spare: Vec::new(),
            scratch: Vec::with_capacity(512),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// The upstream sockets, to register with the poller (token = index + `base`).
    pub fn sockets_mut(&mut self) -> impl Iterator<Item = (usize, &mut mio::net::UdpSocket)> {
        self.sockets
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (i, s)))
    }

    /// How many queries wait for an upstream.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// When the earliest timer fires.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.front().map(|(at, _, _)| *at)
    }

    /// Starts forwarding `query` for `client`; `false` if it cannot be (too many pending),
    /// and `on_done` sees the failure at once when no upstream is usable.
    pub fn start(
        &mut self,
        client: Client,
        query: &[u8],
        fwd: ForwardQuery,
        now: Instant,
        on_done: &mut impl FnMut(Done<'_>),
    ) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        let mut id: u16 = rand::random();
        while self.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.start_as(id, client, query, fwd, now, on_done);
        true
    }

    /// Starts forwarding with upstream id `id` (free).
    fn start_as(
        &mut self,
        id: u16,
        client: Client,
        query: &[u8],
        fwd: ForwardQuery,
        now: Instant,
        on_done: &mut impl FnMut(Done<'_>),
    ) {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(query);
        buf[..2].copy_from_slice(&id.to_be_bytes());
        let pending = Pending {
            client,
            query: buf,
            fwd,
            upstream: 0,
            deadline: now + self.config.timeout,
            attempt: 0,
        };
        self.pending.insert(id, pending);
        self.send_from(id, 0, now, on_done);
    }

    /// Sends pending query `id` to the first usable upstream from `first` on, or fails it.
    fn send_from(
        &mut self,
        id: u16,
        first: usize,
        now: Instant,
        on_done: &mut impl FnMut(Done<'_>),
    ) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        for upstream in first..self.sockets.len() {
            if now >= p.deadline {
                break;
            }
            let Some(socket) = &self.sockets[upstream] else {
                continue;
            };
            if socket.send(&p.query).is_ok() {
                self.attempts += 1;
                p.upstream = upstream;
                p.attempt = self.attempts;
                let at = (now + self.config.attempt_timeout()).min(p.deadline);
                self.timers.push_back((at, id, p.attempt));
                return;
            }
        }
        self.fail(id, on_done);
    }

    /// Ends pending query `id` with SERVFAIL.
    fn fail(&mut self, id: u16, on_done: &mut impl FnMut(Done<'_>)) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let mut query = p.query;
        query[..2].copy_from_slice(&p.fwd.id.to_be_bytes());
        on_done(Done::Failed(p.client, &query));
        self.spare.push(query);
    }

    /// Handles the timers that are due: the next upstream is tried, or the query fails.
    pub fn on_timers(&mut self, now: Instant, on_done: &mut impl FnMut(Done<'_>)) {
        while let Some(&(at, id, attempt)) = self.timers.front() {
            if at > now {
                break;
            }
            self.timers.pop_front();
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            if p.attempt != attempt {
                continue;
            }
            let next = p.upstream + 1;
            self.send_from(id, next, now, on_done);
        }
    }

    /// Reads every answer waiting on upstream socket `upstream`.
    pub fn on_readable(
        &mut self,
        upstream: usize,
        mismatches: &mut u64,
        on_done: &mut impl FnMut(Done<'_>),
    ) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(usize::from(u16::MAX), 0);
        while let Some(Some(socket)) = self.sockets.get(upstream) {
            let len = match socket.recv(&mut buf) {
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                // ECONNREFUSED and the like: an ICMP error for an earlier query; the timer
                // moves that query on.
                Err(_) => continue,
            };
            let answer = &mut buf[..len];
            if len < HEADER_LEN {
                *mismatches += 1;
                continue;
            }
            let id = u16::from_be_bytes([answer[0], answer[1]]);
            let matches = self.pending.get(&id).is_some_and(|p| {
                p.upstream == upstream && accept_upstream_answer(&p.query, &p.fwd, answer, p.fwd.id)
            });
            if !matches {
                *mismatches += 1;
                continue;
            }
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let truncated = answer[2] & 0x02 != 0;
            if truncated {
                let mut query = p.query;
                query[..2].copy_from_slice(&p.fwd.id.to_be_bytes());
                on_done(Done::Truncated {
                    client: p.client,
                    query,
                    fwd: Box::new(p.fwd),
                    truncated: answer.to_vec(),
                });
            } else {
                on_done(Done::Answer(p.client, &p.fwd.key, answer));
                self.spare.push(p.query);
            }
        }
        self.scratch = buf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_and_loops_are_refused() {
        assert_eq!(
            parse_upstream("10.0.0.1").unwrap(),
            "10.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("10.0.0.1:5353").unwrap(),
            "10.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(parse_upstream("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert_eq!(
            parse_upstream("[::1]:54").unwrap(),
            "[::1]:54".parse().unwrap()
        );
        assert!(matches!(
            parse_upstream("dns.example"),
            Err(ForwardError::Invalid(_))
        ));
        let err = ForwardConfig::from_args(&["10.0.0.1".into(), "127.0.0.11".into()]).unwrap_err();
        assert!(matches!(err, ForwardError::Loop(_)));
        assert!(err.to_string().contains("127.0.0.11"));
        assert!(ForwardConfig::from_args(&["127.0.0.11:5353".into()]).is_ok());
    }

    #[test]
    fn resolv_conf_nameservers_without_our_own() {
        let text = "# comment\nnameserver 127.0.0.11\nnameserver 10.0.0.1\nsearch x\n\
                    nameserver fe80::1%eth0\nnameserver 127.0.0.53\nnameserver  2001:db8::1\n";
        let got = upstreams_from_resolv_conf(text);
        let want: Vec<SocketAddr> = ["10.0.0.1:53", "127.0.0.53:53", "[2001:db8::1]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }

    /// A query for `name` with id `id`, and what the resolver says about it.
    fn forwardable(id: u16, name: &str) -> (Vec<u8>, ForwardQuery) {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RecordType};
        use std::str::FromStr;
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        let bytes = msg.to_vec().unwrap();
        let header = hickory_proto::op::Header {
            metadata: msg.metadata,
            counts: Default::default(),
        };
        let fwd = ForwardQuery {
            id,
            question_end: bytes.len(),
            udp_limit: 512,
            key: CacheKey::new(&msg.queries[0], &header, None),
        };
        (bytes, fwd)
    }

    #[test]
    fn answers_are_matched_and_stale_timers_of_a_reused_id_are_ignored() {
        // The upstream is a socket of the test's on loopback.
        let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        upstream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let config = ForwardConfig::new(vec![upstream.local_addr().unwrap()]).unwrap();
        let mut fwd = UdpForwarder::new(config);
        let client = Client {
            socket: 1,
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let outcomes = std::cell::RefCell::new(Vec::new());
        let mut record = |done: Done<'_>| {
            outcomes.borrow_mut().push(match done {
                Done::Answer(_, _, bytes) => ("answer", u16::from_be_bytes([bytes[0], bytes[1]])),
                Done::Failed(_, bytes) => ("failed", u16::from_be_bytes([bytes[0], bytes[1]])),
                Done::Truncated { .. } => ("truncated", 0),
            })
        };
        let now = Instant::now();
        let mut buf = [0u8; 512];
        let mut mismatches = 0;
        // Query 1 goes out with our id 77 and is answered.
        let (q1, f1) = forwardable(1, "one.test");
        fwd.start_as(77, client, &q1, f1, now, &mut record);
        let n = upstream.recv_from(&mut buf).unwrap().0;
        assert_eq!(&buf[..2], &77u16.to_be_bytes());
        buf[2] |= 0x80;
        let our_socket = fwd.sockets[0].as_ref().unwrap().local_addr().unwrap();
        upstream.send_to(&buf[..n], our_socket).unwrap();
        wait_readable(&mut fwd, 0, &mut mismatches, &mut record);
        // Query 2 reuses id 77; the timer of query 1 fires: query 2 must not fail for it.
        let (q2, f2) = forwardable(2, "two.test");
        fwd.start_as(
            77,
            client,
            &q2,
            f2,
            now + Duration::from_millis(1),
            &mut record,
        );
        fwd.on_timers(now + fwd.config().attempt_timeout(), &mut record);
        assert_eq!(*outcomes.borrow(), vec![("answer", 1)]);
        assert_eq!(fwd.pending(), 1);
        // An answer to another question with the right id is not taken.
        let (q3, _) = forwardable(77, "three.test");
        let mut wrong = q3.clone();
        wrong[2] |= 0x80;
        upstream.send_to(&wrong, our_socket).unwrap();
        wait_readable(&mut fwd, 0, &mut mismatches, &mut record);
        assert_eq!(mismatches, 1);
        // Query 2's own timer: no other upstream, SERVFAIL material with the client's id.
        fwd.on_timers(now + fwd.config().timeout * 2, &mut record);
        assert_eq!(*outcomes.borrow(), vec![("answer", 1), ("failed", 2)]);
        assert_eq!(fwd.pending(), 0);
    }

    /// Polls upstream socket `i` until something was read (the datagram is on loopback).
    fn wait_readable(
        fwd: &mut UdpForwarder,
        i: usize,
        mismatches: &mut u64,
        on_done: &mut impl FnMut(Done<'_>),
    ) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let before = (*mismatches, fwd.pending());
        while (*mismatches, fwd.pending()) == before {
            assert!(
                Instant::now() < deadline,
                "nothing arrived from the upstream"
            );
            fwd.on_readable(i, mismatches, on_done);
        }
    }

    #[test]
    fn attempts_share_the_timeout() {
        let mut cfg = ForwardConfig::new(vec!["10.0.0.1:53".parse().unwrap(); 4]).unwrap();
        assert_eq!(cfg.attempt_timeout(), Duration::from_millis(500));
        cfg.upstreams.truncate(1);
        assert_eq!(cfg.attempt_timeout(), DEFAULT_TIMEOUT);
        cfg.timeout = Duration::from_millis(100);
        assert_eq!(cfg.attempt_timeout(), Duration::from_millis(100));
    }
}
