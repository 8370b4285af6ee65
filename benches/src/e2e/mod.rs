//! The end-to-end comparison harness: the same topology built with the Linux kernel bridge,
//! `vswitchd` and Open vSwitch's userspace datapath, each measured for TCP throughput, 64-byte UDP
//! packet rate and UDP round-trip latency.
//!
//! The layers, bottom up:
//! - [`proc`]: running the external tools (one-shot commands, daemons stopped on drop, waiting
//!   for a condition with a deadline);
//! - [`netns`]: network namespaces owned by the run, and threads that enter one;
//! - [`cleanup`]: the stack of things a setup made, taken down in reverse order;
//! - [`ethtool`]: a device's transmit offloads (for Open vSwitch without TSO);
//! - [`switches`]: how each switch is put up in the switch namespace;
//! - [`scenario`]: a topology as a setup function and a teardown function (the flat two-host
//!   topology), and [`overlay`]: two hosts joined by VXLAN, a sandbox behind each, and
//!   [`gateway`]: a sandbox and an "outside" namespace through the host's NAT;
//! - [`measure`]: iperf3 TCP and UDP, and the ping-pong latency probe;
//! - [`blast`] and [`rfc2544`]: a UDP blaster and sink of our own that account for every
//!   datagram, and the RFC 2544 throughput search and latency under load built on them, and
//!   [`stalls`]: how long the machine itself takes each CPU away;
//! - [`report`]: the table and the JSON file;
//! - [`bins`]: finding (and building) the vswitchd binaries measured.
//!
//! The `sandboxes` binary (control-plane scale: sandbox creation, memory, restore after
//! `kill -9`) reuses the lower layers.

pub mod bins;
pub mod blast;
pub mod cleanup;
pub mod ethtool;
pub mod gateway;
pub mod measure;
pub mod netns;
pub mod overlay;
pub mod proc;
pub mod report;
pub mod rfc2544;
pub mod scenario;
pub mod stalls;
pub mod switches;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Everything that can go wrong while setting up, measuring or tearing down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command exited non-zero.
    #[error("`{command}` failed ({status}){detail}")]
    Command {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// Its stderr (or log tail), prefixed with ": " when not empty.
        detail: String,
    },
    /// A condition did not come true before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long it was given.
        after: Duration,
    },
    /// A tool's output was not what the harness expected.
    #[error("{0}")]
    Unexpected(String),
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted")]
    Interrupted,
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to an `io::Error`.
pub trait IoContext<T> {
    /// Wraps the error with what was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

/// Set by the SIGINT/SIGTERM handler; every wait loop checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT or SIGTERM has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// `Err(Interrupted)` once SIGINT or SIGTERM has arrived.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the interrupt flag, so the run unwinds through its guards and
/// removes what it made. The handler is one-shot: a second Ctrl-C kills the process at once
/// (what it leaves behind is removed by the next run, see [`netns::remove_stale`]).
pub fn install_signal_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context(|| format!("installing the handler for signal {sig}"));
        }
    }
    Ok(())
}
