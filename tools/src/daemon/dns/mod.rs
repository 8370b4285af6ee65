//! The embedded DNS server of sandboxes on user-defined networks, answered at `127.0.0.11:53`
//! inside each sandbox's namespace, as Docker's.
//!
//! - [`table`]: the names (sandbox names, aliases) per network, and PTR; shared with the daemon.
//! - [`resolver`]: one query in, an answer or "forward" out (sans-IO, on `hickory-proto`).
//! - [`forward`]: the upstream resolvers, over UDP and TCP, with a timeout.
//! - [`cache`]: forwarded answers kept for their TTL (UDP queries).
//! - [`server`]: the DNS thread serving the sockets opened in the sandboxes' namespaces.
//! - [`resolv_conf`]: `/etc/netns/SANDBOX/resolv.conf`, which points `ip netns exec` at us.
//!
//! The daemon owns one [`DnsService`] (`daemon/names.rs`): it calls
//! [`DnsService::add_sandbox`] when a sandbox joins any network (the default `bridge` too: it still forwards), [`NameTable::add_endpoint`]
//! on connect to a user-defined network, [`NameTable::remove_endpoint`] on disconnect, and
//! [`DnsService::remove_sandbox`] when the sandbox goes away (the sockets hold the sandbox's
//! namespace alive until then), and [`DnsService::write_resolv_conf`] for named sandboxes.
//! The table answers from the asker's view: a sandbox sees the names of the networks it has an
//! endpoint on; a name of another network is NXDOMAIN; anything else is forwarded.

pub mod cache;
pub mod forward;
pub mod resolv_conf;
pub mod resolver;
pub mod server;
pub mod table;

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use forward::{ForwardConfig, ForwardError};
pub use server::DnsService;
pub use table::{NameTable, TableError};

/// The address the resolver answers on in every sandbox (Docker's).
pub const DNS_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 11);

/// The DNS port (RFC 1035 § 4.2).
pub const DNS_PORT: u16 = 53;

/// Live counters of the DNS service, bumped by the DNS thread and the TCP threads.
#[derive(Debug, Default)]
pub struct Counters {
    queries: AtomicU64,
    answered_locally: AtomicU64,
    nxdomain: AtomicU64,
    forwarded: AtomicU64,
    forward_answers: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_other: AtomicU64,
    upstream_mismatches: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_evictions: AtomicU64,
    cache_entries: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> DnsStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsStats {
            queries: get(&self.queries),
            answered_locally: get(&self.answered_locally),
            nxdomain: get(&self.nxdomain),
            forwarded: get(&self.forwarded),
            forward_answers: get(&self.forward_answers),
            failures: get(&self.failures),
            rejected: get(&self.rejected),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_other: get(&self.dropped_other),
            upstream_mismatches: get(&self.upstream_mismatches),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            cache_evictions: get(&self.cache_evictions),
            cache_entries: get(&self.cache_entries),
        }
    }
}

/// What the DNS service has done since it started (`vswitchctl stats dns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DnsStats {
    /// Messages received from sandboxes (UDP datagrams and TCP messages).
    pub queries: u64,
    /// Answered from the name table with NOERROR (records or none).
    pub answered_locally: u64,
    /// Answered NXDOMAIN: a name of ours on a network the asker does not share.
    pub nxdomain: u64,
    /// Sent to an upstream resolver (not ours, not answered from the cache).
    pub forwarded: u64,
    /// Upstream answers passed back to a sandbox.
    pub forward_answers: u64,
    /// SERVFAIL sent because every upstream failed or timed out (or none is configured).
    pub failures: u64,
    /// Answered FORMERR, NOTIMP, REFUSED or BADVERS.
    pub rejected: u64,
    /// Dropped unanswered: shorter than a header, or a response sent as a query.
    pub dropped_malformed: u64,
    /// Dropped for lack of resources: a full send buffer, too many TCP connections or pending
    /// forwarded queries.
    pub dropped_other: u64,
    /// Upstream messages that matched no pending query (late, duplicate or spoofed).
    pub upstream_mismatches: u64,
    /// Queries not ours answered from the cache of forwarded answers.
    pub cache_hits: u64,
    /// Queries not ours the cache had no (fresh, small enough) answer for.
    pub cache_misses: u64,
    /// Answers still valid dropped from the full cache.
    pub cache_evictions: u64,
    /// Answers in the cache now.
    pub cache_entries: u64,
}

/// Opens the UDP and TCP sockets of `127.0.0.11:53` inside the namespace `netns` (bringing
/// `lo` up first, which gives it 127.0.0.0/8), from a helper thread; the sockets stay bound to
/// that namespace wherever they are used.
pub fn open_sandbox_sockets(
    netns: &File,
) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    crate::netns::in_netns(netns, || -> io::Result<_> {
        crate::netlink::Netlink::new()
            .and_then(|mut nl| nl.set_up("lo"))
            .map_err(|e| io::Error::new(e.kind(), format!("bring up lo: {e}")))?;
        let addr = std::net::SocketAddr::from((DNS_ADDR, DNS_PORT));
        let udp = std::net::UdpSocket::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("bind UDP {addr}: {e}")))?;
        let tcp = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("bind TCP {addr}: {e}")))?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    })?
}
