//! The DNS thread and its handle, [`DnsService`]: sockets opened in each sandbox's namespace
//! at `127.0.0.11:53`, served from one mio loop in the daemon's namespace.
//!
//! UDP queries are answered (or forwarded over UDP) on the DNS thread itself, draining each
//! ready socket with a budget per wake-up: up to [`BATCH`] datagrams per `recvmmsg(2)`, their
//! answers sent with one `sendmmsg(2)`, no allocation, lock or log line per query (the name
//! table is read from a snapshot, see [`super::table`]). One thread serves every sandbox: on
//! the 2-core machines this runs on, a second one would only compete with the clients; a
//! query costs a few microseconds, most of it in the kernel. Forwarded answers are cached
//! ([`super::cache`]) and served from there while fresh. TCP connections (rare: truncated answers, `dig
//! +tcp`) each get a short-lived thread that answers and forwards with blocking I/O, at most
//! [`MAX_TCP_CONNECTIONS`] at once; so does the TCP retry of a truncated upstream UDP answer.
//! Threads inherit the namespace of the thread that made them, so all forwarding leaves from
//! the namespace [`DnsService::start`] was called in.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::cache::{ForwardCache, MAX_BYTES, MAX_ENTRIES};
use super::forward::{forward_tcp, Client, Done, ForwardConfig, UdpForwarder};
use super::resolver::{servfail, Decision, ForwardQuery, Resolver, Transport};
use super::table::NameTable;
use super::{open_sandbox_sockets, resolv_conf, Counters, DnsStats};

/// At most this many TCP connections (and TCP retries) are served at once; more are closed.
pub const MAX_TCP_CONNECTIONS: usize = 64;

/// A TCP connection idle this long is closed (RFC 7766 § 6.2.3 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Datagrams read from one socket per wake-up before the others get their turn.
const UDP_BUDGET: usize = 256;

/// Datagrams received (and answers sent) per system call.
pub const BATCH: usize = 32;

/// The largest query read; a larger datagram is dropped and counted (queries are one question
/// and an OPT record: a few hundred bytes at most).
pub const MAX_QUERY: usize = 4096;

const WAKER: Token = Token(0);
/// Upstream socket `i` has token `UPSTREAM_BASE + i`.
const UPSTREAM_BASE: usize = 1;
/// Sandbox sockets: UDP at an even token from here, its TCP listener at the next one.
const SANDBOX_BASE: usize = 1 << 16;

/// Requests from the handle to the DNS thread.
enum Command {
    Add {
        name: Arc<str>,
        udp: UdpSocket,
        tcp: TcpListener,
        ack: Sender<io::Result<()>>,
    },
    Remove {
        name: String,
        ack: Sender<bool>,
    },
    Stop,
}

/// The embedded DNS server: the table, the DNS thread, and the sockets of every sandbox.
pub struct DnsService {
    table: Arc<NameTable>,
    counters: Arc<Counters>,
    config: ForwardConfig,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsService")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DnsService {
    /// Starts the DNS thread; queries are forwarded to `config`'s upstreams from the calling
    /// thread's network namespace.
    pub fn start(config: ForwardConfig) -> io::Result<DnsService> {
        let poll = Poll::new().map_err(|e| ctx(e, "create the DNS poller"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| ctx(e, "create the DNS waker"))?,
        );
        if config.upstreams.is_empty() {
            tracing::warn!("no DNS upstream: names that are not the sandboxes' get SERVFAIL");
        }
        let table = Arc::new(NameTable::new());
        let counters = Arc::new(Counters::default());
        let mut forwarder = UdpForwarder::new(config.clone());
        for (i, socket) in forwarder.sockets_mut() {
            poll.registry()
                .register(socket, Token(UPSTREAM_BASE + i), Interest::READABLE)
                .map_err(|e| ctx(e, "register a DNS upstream socket"))?;
        }
        let (commands, rx) = crossbeam_channel::unbounded();
        let worker = Worker {
            poll,
            commands: rx,
            sandboxes: HashMap::new(),
            by_name: HashMap::new(),
            next_token: SANDBOX_BASE,
            resolver: Resolver::new(table.clone(), counters.clone()),
            table: table.clone(),
            forwarder,
            config: Arc::new(config.clone()),
            counters: counters.clone(),
            tcp_threads: Arc::new(AtomicUsize::new(0)),
            cache: ForwardCache::new(MAX_ENTRIES, MAX_BYTES, counters.clone()),
            flushed_generation: table.generation(),
            batch: Batch::new(),
        };
        let thread = std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || worker.run())
            .map_err(|e| ctx(e, "spawn the DNS thread"))?;
        Ok(DnsService {
            table,
            counters,
            config,
            commands,
            waker,
            thread: Some(thread),
        })
    }

    /// The name table: add and remove endpoints here (connect, disconnect).
    pub fn table(&self) -> &Arc<NameTable> {
        &self.table
    }

    /// The forwarding configuration.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// The counters so far.
    pub fn stats(&self) -> DnsStats {
        self.counters.snapshot()
    }

    /// Serves `127.0.0.11:53` (UDP and TCP) inside the namespace `netns` for sandbox `name`;
    /// a sandbox served already is served anew (its old sockets closed first).
    pub fn add_sandbox(&self, name: &str, netns: &File) -> io::Result<()> {
        self.unregister(name)?;
        let (udp, tcp) = open_sandbox_sockets(netns)
            .map_err(|e| ctx(e, format!("open the DNS sockets of sandbox {name}")))?;
        let (ack, done) = crossbeam_channel::bounded(1);
        self.send(Command::Add {
            name: name.into(),
            udp,
            tcp,
            ack,
        })?;
        done.recv()
            .map_err(|_| io::Error::other("the DNS thread has stopped"))?
            .map_err(|e| ctx(e, format!("serve DNS for sandbox {name}")))
    }

    /// Stops serving sandbox `name`, removes its names from the table and its resolv.conf.
    pub fn remove_sandbox(&self, name: &str) -> io::Result<()> {
        self.table.remove_sandbox(name);
        let unregistered = self.unregister(name);
        let removed = if crate::netns::validate_netns_name(name).is_ok() {
            resolv_conf::remove(name)
        } else {
            Ok(())
        };
        unregistered.and(removed)
    }

    /// Writes `/etc/netns/SANDBOX/resolv.conf` saying `nameserver 127.0.0.11`.
    pub fn write_resolv_conf(&self, sandbox: &str) -> io::Result<PathBuf> {
        resolv_conf::write(sandbox)
    }

    /// Closes the sockets of sandbox `name`, if it has any.
    fn unregister(&self, name: &str) -> io::Result<()> {
        let (ack, done) = crossbeam_channel::bounded(1);
        self.send(Command::Remove {
            name: name.to_owned(),
            ack,
        })?;
        done.recv()
            .map(|_| ())
            .map_err(|_| io::Error::other("the DNS thread has stopped"))
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| io::Error::other("the DNS thread has stopped"))?;
        self.waker.wake().map_err(|e| ctx(e, "wake the DNS thread"))
    }
}

impl Drop for DnsService {
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ctx(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// One sandbox's sockets.
struct Sandbox {
    name: Arc<str>,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
}

/// The DNS thread's state.
struct Worker {
    poll: Poll,
    commands: Receiver<Command>,
    /// By UDP token.
    sandboxes: HashMap<usize, Sandbox>,
    by_name: HashMap<Arc<str>, usize>,
    next_token: usize,
    resolver: Resolver,
    table: Arc<NameTable>,
    forwarder: UdpForwarder,
    /// The forwarder's configuration, for TCP threads (shared, not copied per query).
    config: Arc<ForwardConfig>,
    counters: Arc<Counters>,
    tcp_threads: Arc<AtomicUsize>,
    cache: ForwardCache,
    /// The table generation whose new names the cache was flushed for.
    flushed_generation: u64,
    batch: Batch,
}

/// The buffers of one `recvmmsg`/`sendmmsg` round, reused.
struct Batch {
    /// `BATCH` slots of `MAX_QUERY` bytes.
    bufs: Vec<u8>,
    /// Per slot: the length received, and whether the datagram was cut (`MSG_TRUNC`).
    lens: [(usize, bool); BATCH],
    /// Per slot: the sender.
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    addr_lens: [libc::socklen_t; BATCH],
    /// The answers to send, and the slot each answers.
    out: Vec<Vec<u8>>,
    reply_to: [usize; BATCH],
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![0; BATCH * MAX_QUERY],
            lens: [(0, false); BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (AF_UNSPEC) value.
            addrs: Box::new(unsafe { std::mem::zeroed() }),
            addr_lens: [0; BATCH],
            out: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            reply_to: [0; BATCH],
        }
    }

    /// Receives up to `BATCH` datagrams from `fd` without blocking (one `recvmmsg(2)`).
    fn recv(&mut self, fd: std::os::fd::RawFd) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain data; zeroes are valid before we fill them in.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (iov, hdr)) in iovs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            iov.iov_base = self.bufs[i * MAX_QUERY..].as_mut_ptr().cast();
            iov.iov_len = MAX_QUERY;
            hdr.msg_hdr.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at its own iovec (alive for the call), each iovec at
        // its own MAX_QUERY bytes of `bufs`, and each name at its own sockaddr_storage of the
        // size given; the kernel writes only within those.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            let cut = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = ((hdr.msg_len as usize).min(MAX_QUERY), cut);
            self.addr_lens[i] = hdr.msg_hdr.msg_namelen;
        }
        Ok(n.min(BATCH))
    }

    /// The sender of slot `i`, if it is an IPv4 or IPv6 address.
    fn sender(&self, i: usize) -> Option<SocketAddr> {
        sockaddr_to_std(&self.addrs[i], self.addr_lens[i])
    }

    /// Sends the first `count` answers to their senders (`sendmmsg(2)`, retried for the rest
    /// after a partial send); returns how many could not be sent.
    fn send(&mut self, fd: std::os::fd::RawFd, count: usize) -> usize {
        let count = count.min(BATCH);
        // SAFETY: iovec and mmsghdr are plain data; zeroes are valid before we fill them in.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for j in 0..count {
            let slot = self.reply_to[j];
            iovs[j].iov_base = self.out[j].as_mut_ptr().cast();
            iovs[j].iov_len = self.out[j].len();
            hdrs[j].msg_hdr.msg_name = std::ptr::from_mut(&mut self.addrs[slot]).cast();
            hdrs[j].msg_hdr.msg_namelen = self.addr_lens[slot];
            hdrs[j].msg_hdr.msg_iov = &mut iovs[j];
            hdrs[j].msg_hdr.msg_iovlen = 1;
        }
        let (mut sent, mut failed) = (0, 0);
        while sent < count {
            // SAFETY: headers `sent..count` point at their iovecs, which point at the answer
            // buffers (alive and unchanged for the call), and at the senders' addresses with
            // the lengths the kernel gave; the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            match usize::try_from(n) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                // EAGAIN (a full send buffer) or an error for this answer: skip it. (An
                // error after the first message stops the call short instead: retried.)
                Err(_) => {
                    sent += 1;
                    failed += 1;
                }
            }
        }
        failed
    }
}

/// A socket address the kernel wrote, as a std address.
fn sockaddr_to_std(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(addr.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is that long.
            let sin = unsafe { &*std::ptr::from_ref(addr).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is that long.
            let sin6 = unsafe { &*std::ptr::from_ref(addr).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .forwarder
                .next_timer()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(%err, "DNS poll failed; the DNS thread stops");
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(t) if t >= SANDBOX_BASE && t % 2 == 0 => self.on_udp(t),
                    Token(t) if t >= SANDBOX_BASE => self.on_tcp(t - 1),
                    Token(t) => self.on_upstream(t - UPSTREAM_BASE),
                }
            }
            let sandboxes = &self.sandboxes;
            let counters = &self.counters;
            let config = &self.config;
            let tcp_threads = &self.tcp_threads;
            let cache = &mut self.cache;
            self.forwarder.on_timers(Instant::now(), &mut |done| {
                deliver(sandboxes, counters, config, tcp_threads, cache, done)
            });
            self.flush_new_names();
            if !self.on_commands() {
                return;
            }
        }
    }

    /// Flushes the cached forwarded answers of names the table gained since the last look
    /// (one atomic load when the table did not change).
    fn flush_new_names(&mut self) {
        let generation = self.table.generation();
        if generation != self.flushed_generation {
            self.flushed_generation = generation;
            self.cache.flush(&self.table.take_new_names());
        }
    }

    /// Applies the handle's requests; false on Stop.
    fn on_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Add {
                    name,
                    udp,
                    tcp,
                    ack,
                } => {
                    let _ = ack.send(self.add(name, udp, tcp));
                }
                Command::Remove { name, ack } => {
                    let _ = ack.send(self.remove(&name));
                }
                Command::Stop => return false,
            }
        }
        true
    }

    fn add(&mut self, name: Arc<str>, udp: UdpSocket, tcp: TcpListener) -> io::Result<()> {
        let token = self.next_token;
        let registry = self.poll.registry();
        registry.register(
            &mut SourceFd(&udp.as_raw_fd()),
            Token(token),
            Interest::READABLE,
        )?;
        if let Err(err) = registry.register(
            &mut SourceFd(&tcp.as_raw_fd()),
            Token(token + 1),
            Interest::READABLE,
        ) {
            let _ = registry.deregister(&mut SourceFd(&udp.as_raw_fd()));
            return Err(err);
        }
        self.next_token += 2;
        self.by_name.insert(name.clone(), token);
        self.sandboxes.insert(
            token,
            Sandbox {
                name,
                udp: Arc::new(udp),
                tcp,
            },
        );
        Ok(())
    }

    fn remove(&mut self, name: &str) -> bool {
        let Some(token) = self.by_name.remove(name) else {
            return false;
        };
        if let Some(sandbox) = self.sandboxes.remove(&token) {
            let registry = self.poll.registry();
            let _ = registry.deregister(&mut SourceFd(&sandbox.udp.as_raw_fd()));
            let _ = registry.deregister(&mut SourceFd(&sandbox.tcp.as_raw_fd()));
        }
        true
    }

    /// Answers the datagrams waiting on a sandbox's UDP socket, a batch at a time.
    fn on_udp(&mut self, token: usize) {
        let Worker {
            sandboxes,
            resolver,
            forwarder,
            config,
            counters,
            tcp_threads,
            cache,
            batch,
            ..
        } = self;
        let Some(sandbox) = sandboxes.get(&token) else {
            return;
        };
        let fd = sandbox.udp.as_raw_fd();
        let mut budget = UDP_BUDGET;
        loop {
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::debug!(%err, sandbox = %sandbox.name, "DNS receive failed");
                    return;
                }
            };
            let mut replies = 0;
            for i in 0..n {
                let (len, cut) = batch.lens[i];
                if cut {
                    Counters::bump(&counters.queries);
                    Counters::bump(&counters.dropped_malformed);
                    continue;
                }
                let query = &batch.bufs[i * MAX_QUERY..i * MAX_QUERY + len];
                let out = &mut batch.out[replies];
                let answered = match resolver.resolve(&sandbox.name, query, Transport::Udp, out) {
                    Decision::Answer => true,
                    Decision::Drop => false,
                    Decision::Forward(fwd) => {
                        let now = Instant::now();
                        if cache.answer(query, &fwd, now, out) {
                            true
                        } else {
                            let started = batch.sender(i).is_some_and(|addr| {
                                Counters::bump(&counters.forwarded);
                                let client = Client {
                                    socket: token,
                                    addr,
                                };
                                forwarder.start(client, query, fwd, now, &mut |done| {
                                    deliver(sandboxes, counters, config, tcp_threads, cache, done)
                                })
                            });
                            if !started {
                                Counters::bump(&counters.dropped_other);
                            }
                            false
                        }
                    }
                };
                if answered {
                    batch.reply_to[replies] = i;
                    replies += 1;
                }
            }
            let lost = batch.send(fd, replies);
            counters
                .dropped_other
                .fetch_add(lost as u64, Ordering::Relaxed);
            // Fewer than asked for: the socket was empty, and a datagram arriving later
            // raises a new (edge-triggered) event.
            if n < BATCH {
                return;
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                break;
            }
        }
        // Budget spent: more may wait. Re-arming reports the socket again if it is still
        // readable (epoll_ctl MOD), after the others had their turn.
        let _ =
            self.poll
                .registry()
                .reregister(&mut SourceFd(&fd), Token(token), Interest::READABLE);
    }

    /// Accepts the connections waiting on a sandbox's TCP listener.
    fn on_tcp(&mut self, udp_token: usize) {
        loop {
            let Some(sandbox) = self.sandboxes.get(&udp_token) else {
                return;
            };
            let stream = match sandbox.tcp.accept() {
                Ok((stream, _)) => stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::debug!(%err, sandbox = %sandbox.name, "DNS accept failed");
                    return;
                }
            };
            let Some(slot) = TcpSlot::take(&self.tcp_threads) else {
                Counters::bump(&self.counters.dropped_other);
                continue;
            };
            let name = sandbox.name.clone();
            let resolver = Resolver::new(self.table.clone(), self.counters.clone());
            let config = self.config.clone();
            let counters = self.counters.clone();
            let spawned = std::thread::Builder::new()
                .name("dns-tcp".into())
                .spawn(move || {
                    let _slot = slot;
                    serve_tcp(stream, &name, resolver, &config, &counters);
                });
            if spawned.is_err() {
                Counters::bump(&self.counters.dropped_other);
            }
        }
    }

    /// Reads upstream answers and passes them on.
    fn on_upstream(&mut self, upstream: usize) {
        let sandboxes = &self.sandboxes;
        let counters = &self.counters;
        let config = &self.config;
        let tcp_threads = &self.tcp_threads;
        let cache = &mut self.cache;
        let mut mismatches = 0;
        self.forwarder
            .on_readable(upstream, &mut mismatches, &mut |done| {
                deliver(sandboxes, counters, config, tcp_threads, cache, done)
            });
        self.counters
            .upstream_mismatches
            .fetch_add(mismatches, Ordering::Relaxed);
    }
}

/// Sends the outcome of a forwarded UDP query to its client (and caches an answer).
fn deliver(
    sandboxes: &HashMap<usize, Sandbox>,
    counters: &Counters,
    config: &Arc<ForwardConfig>,
    tcp_threads: &Arc<AtomicUsize>,
    cache: &mut ForwardCache,
    done: Done<'_>,
) {
    match done {
        Done::Answer(client, key, answer) => {
            cache.insert(key, answer, Instant::now());
            let sent = sandboxes
                .get(&client.socket)
                .is_some_and(|s| s.udp.send_to(answer, client.addr).is_ok());
            Counters::bump(if sent {
                &counters.forward_answers
            } else {
                &counters.dropped_other
            });
        }
        Done::Failed(client, query) => {
            Counters::bump(&counters.failures);
            let mut out = Vec::new();
            if servfail(query, &mut out) {
                if let Some(s) = sandboxes.get(&client.socket) {
                    let _ = s.udp.send_to(&out, client.addr);
                }
            }
        }
        Done::Truncated {
            client,
            query,
            fwd,
            truncated,
        } => {
            let Some(socket) = sandboxes.get(&client.socket).map(|s| s.udp.clone()) else {
                return;
            };
            let Some(slot) = TcpSlot::take(tcp_threads) else {
                // No thread to spare: the client gets the truncated answer and retries over TCP.
                let _ = socket.send_to(&truncated, client.addr);
                Counters::bump(&counters.forward_answers);
                return;
            };
            let config = Arc::clone(config);
            Counters::bump(&counters.forward_answers);
            let _ = std::thread::Builder::new()
                .name("dns-tcp-retry".into())
                .spawn(move || {
                    let _slot = slot;
                    retry_over_tcp(&socket, client.addr, &config, &query, &fwd, &truncated);
                });
        }
    }
}

/// Asks again over TCP for an answer an upstream truncated over UDP; sends the full answer if
/// it fits the client's UDP limit, else the truncated one (the client then asks over TCP).
fn retry_over_tcp(
    socket: &UdpSocket,
    client: SocketAddr,
    config: &ForwardConfig,
    query: &[u8],
    fwd: &ForwardQuery,
    truncated: &[u8],
) {
    let answer = match forward_tcp(config, query, fwd) {
        Some(full) if full.len() <= usize::from(fwd.udp_limit) => full,
        _ => truncated.to_vec(),
    };
    let _ = socket.send_to(&answer, client);
}

/// Serves one TCP connection (RFC 7766 § 8: each message after a two-byte length).
fn serve_tcp(
    mut stream: TcpStream,
    sandbox: &str,
    mut resolver: Resolver,
    config: &ForwardConfig,
    counters: &Counters,
) {
    if stream.set_read_timeout(Some(TCP_IDLE)).is_err()
        || stream.set_write_timeout(Some(TCP_IDLE)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut msg = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        msg.resize(usize::from(u16::from_be_bytes(len)), 0);
        if stream.read_exact(&mut msg).is_err() {
            return;
        }
        match resolver.resolve(sandbox, &msg, Transport::Tcp, &mut out) {
            Decision::Answer => {}
            Decision::Drop => return,
            Decision::Forward(fwd) => match forward_tcp_counted(config, counters, &msg, &fwd) {
                Some(answer) => {
                    Counters::bump(&counters.forward_answers);
                    out = answer;
                }
                None => {
                    Counters::bump(&counters.failures);
                    if !servfail(&msg, &mut out) {
                        return;
                    }
                }
            },
        }
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}

/// Forwards a TCP query (counted as forwarded).
fn forward_tcp_counted(
    config: &ForwardConfig,
    counters: &Counters,
    msg: &[u8],
    fwd: &ForwardQuery,
) -> Option<Vec<u8>> {
    Counters::bump(&counters.forwarded);
    forward_tcp(config, msg, fwd)
}

/// One of the [`MAX_TCP_CONNECTIONS`] thread slots, given back on drop.
struct TcpSlot(Arc<AtomicUsize>);

impl TcpSlot {
    fn take(count: &Arc<AtomicUsize>) -> Option<TcpSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_TCP_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| TcpSlot(count.clone()))
    }
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
