//! The datapath thread's event loop: mio readiness in, batches through the [`Datapath`] out.
//!
//! One thread owns the `Datapath`. Ports with a descriptor are registered with `mio::Poll` under
//! their handle as token. On each wake-up every ready port is drained up to its budget; ports
//! that stopped at the budget are polled again before the thread sleeps, so one busy port cannot
//! starve the others. The control plane reaches the thread only through [`DatapathHandle::call`]:
//! a closure sent over a channel, a `mio::Waker` poke, and the closure's result sent back.

use crate::bridge::PortMode;
use crate::datapath::{Datapath, NetworkId, PortHandle};
use crate::port::Port;
use crate::time::Instant;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::io;
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const WAKER: Token = Token(usize::MAX);

/// What the control plane may do on the datapath thread.
pub struct Ctl<'a> {
    /// The datapath, owned by the thread.
    pub dp: &'a mut Datapath,
    registry: &'a Registry,
    pollers: &'a mut Vec<Option<(RawFd, Poller)>>,
    stop: &'a mut bool,
}

/// Reads a shared source and feeds the datapath (see [`Ctl::add_poller`]).
pub type Poller = Box<dyn FnMut(&mut Datapath, Instant) + Send>;

/// Tokens at and above this are pollers; below are port handles.
const POLLER_BASE: usize = usize::MAX / 2;

impl Ctl<'_> {
    /// Attaches a port to a network and starts polling it.
    pub fn add_port(
        &mut self,
        network: NetworkId,
        port: Box<dyn Port>,
        mode: PortMode,
    ) -> io::Result<PortHandle> {
        let fd = port.raw_fd();
        let handle = self
            .dp
            .add_port(network, port, mode)
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "no such network"))?;
        if let Some(fd) = fd {
            if let Err(e) =
                self.registry
                    .register(&mut SourceFd(&fd), Token(handle.0), Interest::READABLE)
            {
                self.dp.remove_port(handle);
                return Err(e);
            }
        }
        Ok(handle)
    }

    /// Attaches a port that counts into `counters` too (see
    /// [`Datapath::add_port_with_counters`]). Such ports are driven by a poller, not by a
    /// descriptor of their own.
    pub fn add_port_with_counters(
        &mut self,
        network: NetworkId,
        port: Box<dyn Port>,
        mode: PortMode,
        counters: std::sync::Arc<crate::counters::PortCounters>,
    ) -> io::Result<PortHandle> {
        self.dp
            .add_port_with_counters(network, port, mode, counters)
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "no such network"))
    }

    /// Calls `poller` whenever `fd` is readable (and once a second). A poller reads a shared
    /// source, such as the VXLAN socket, and feeds the ports behind it through the datapath.
    pub fn add_poller(&mut self, fd: RawFd, poller: Poller) -> io::Result<usize> {
        let id = self
            .pollers
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                self.pollers.push(None);
                self.pollers.len() - 1
            });
        self.registry.register(
            &mut SourceFd(&fd),
            Token(POLLER_BASE + id),
            Interest::READABLE,
        )?;
        self.pollers[id] = Some((fd, poller));
        Ok(id)
    }

    /// Stops a poller.
    pub fn remove_poller(&mut self, id: usize) {
        if let Some(Some((fd, _))) = self.pollers.get(id) {
            let _ = self.registry.deregister(&mut SourceFd(fd));
            self.pollers[id] = None;
        }
    }

    /// Stops polling a port and detaches it; the port is returned (dropping it closes it).
    pub fn remove_port(&mut self, handle: PortHandle) -> Option<Box<dyn Port>> {
        if let Some(fd) = self.dp.port(handle)?.raw_fd() {
            // A descriptor whose interface vanished may already be gone from epoll.
            let _ = self.registry.deregister(&mut SourceFd(&fd));
        }
        self.dp.remove_port(handle)
    }

    /// Asks the loop to end after this command.
    pub fn stop(&mut self) {
        *self.stop = true;
    }
}

type Command = Box<dyn FnOnce(&mut Ctl<'_>) + Send>;

/// The control plane's handle on a running datapath thread. Cloneable.
#[derive(Clone)]
pub struct DatapathHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

/// The datapath thread is gone.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the datapath thread has stopped")]
pub struct Stopped;

impl DatapathHandle {
    /// Runs `f` on the datapath thread and returns its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ctl<'_>) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let cmd: Command = Box::new(move |ctl| {
            let _ = rtx.send(f(ctl));
        });
        self.tx.send(cmd).map_err(|_| Stopped)?;
        self.waker.wake().map_err(|_| Stopped)?;
        rrx.recv().map_err(|_| Stopped)
    }

    /// Runs the datapath thread under the kernel's real-time `SCHED_FIFO` at `priority` (1–99;
    /// `--datapath-rt-priority`), so that a frame waiting in a ring wakes the thread at once
    /// instead of after the time slice of whatever else holds the CPU: the kernel bridge
    /// forwards in softirq, ahead of every thread, and this is the user-space counterpart. The
    /// thread still sleeps when no frame waits, and the kernel's real-time throttling
    /// (`sched_rt_runtime_us`, 95 % by default) keeps a flood from taking a whole CPU. Needs
    /// CAP_SYS_NICE.
    pub fn set_realtime(&self, priority: u8) -> io::Result<()> {
        let priority = libc::c_int::from(priority);
        self.call(move |_| {
            let param = libc::sched_param {
                sched_priority: priority,
            };
            // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with a sched_param
            // we own; it only reads it.
            match unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        })
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Keeps the datapath thread on `cpus` (`--datapath-cpus`), as Open vSwitch places its
    /// poll-mode threads (`pmd-cpu-mask`): on a CPU set aside for it (`isolcpus=`) it waits
    /// for no other thread and no other thread's stall. Fails (and leaves the thread as it
    /// was) if none of `cpus` is a CPU the process may use.
    pub fn set_cpus(&self, cpus: &[usize]) -> io::Result<()> {
        let mut set = empty_cpu_set();
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            // SAFETY: CPU_SET writes one bit, below CPU_SETSIZE (checked above), of a set we own.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        self.call(move |_| {
            // SAFETY: sched_setaffinity(2) on the calling thread (pid 0) with a cpu_set_t we
            // own and its exact size; the kernel only reads it.
            match unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        })
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// The CPUs the datapath thread may run on.
    pub fn cpus(&self) -> io::Result<Vec<usize>> {
        self.call(|_| {
            let mut set = empty_cpu_set();
            // SAFETY: sched_getaffinity(2) on the calling thread writes at most the size we
            // pass into the cpu_set_t we own.
            if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((0..libc::CPU_SETSIZE as usize)
                // SAFETY: CPU_ISSET reads one bit, below CPU_SETSIZE, of a set we own.
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect())
        })
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// The datapath thread's scheduling policy and priority (`SCHED_OTHER` is 0, priority 0).
    pub fn scheduling(&self) -> io::Result<(libc::c_int, libc::c_int)> {
        self.call(|_| {
            let mut param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sched_getscheduler(2) on the calling thread; no memory is passed.
            let policy = unsafe { libc::sched_getscheduler(0) };
            // SAFETY: sched_getparam(2) on the calling thread writes the sched_param we own.
            if policy < 0 || unsafe { libc::sched_getparam(0, &mut param) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((policy, param.sched_priority))
        })
        .map_err(|e| io::Error::other(e.to_string()))?
    }
}

/// Parses a CPU list as Linux writes one (`cpuset(7)`: `1`, `0,2`, `0-3,8`), ascending,
/// without repeats.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let bad = |why: &str| format!("`{text}`: {why} (a CPU list: 1, 0,2 or 0-3,8)");
    let number = |n: &str| {
        n.trim()
            .parse::<usize>()
            .map_err(|_| bad("not a CPU number"))
    };
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if first > last {
            return Err(bad("a range runs backwards"));
        }
        if last >= libc::CPU_SETSIZE as usize {
            return Err(bad("past the highest CPU Linux numbers"));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// A CPU set with no CPU in it.
fn empty_cpu_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit mask; all zero is the empty set.
    unsafe { std::mem::zeroed() }
}

/// Starts the datapath thread with an empty datapath. Returns its handle and its join handle.
pub fn spawn(name: &str) -> io::Result<(DatapathHandle, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel::<Command>();
    let join = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run(poll, rx, Datapath::new()))?;
    Ok((DatapathHandle { tx, waker }, join))
}

fn run(mut poll: Poll, commands: mpsc::Receiver<Command>, mut dp: Datapath) {
    let mut events = Events::with_capacity(256);
    let mut stop = false;
    let mut pollers: Vec<Option<(RawFd, Poller)>> = Vec::new();
    let mut last_tick = Instant::ZERO;
    while !stop {
        let timeout = if dp.has_more() {
            Duration::ZERO
        } else {
            Duration::from_millis(500)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "datapath poll failed");
            break;
        }
        let now = Instant::now();
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                Token(t) if t >= POLLER_BASE => {
                    if let Some(Some((_, poller))) = pollers.get_mut(t - POLLER_BASE) {
                        poller(&mut dp, now);
                    }
                }
                Token(t) => {
                    dp.poll_port(now, PortHandle(t));
                }
            }
        }
        // Pollers also run once a second, for their own timers (aging, retries).
        if now.saturating_since(last_tick) >= Duration::from_secs(1) {
            last_tick = now;
            for (_, poller) in pollers.iter_mut().flatten() {
                poller(&mut dp, now);
            }
        }
        // Ports that stopped at their budget get another turn before we sleep.
        dp.poll_unfinished(now);
        while let Ok(cmd) = commands.try_recv() {
            let mut ctl = Ctl {
                dp: &mut dp,
                registry: poll.registry(),
                pollers: &mut pollers,
                stop: &mut stop,
            };
            cmd(&mut ctl);
        }
        dp.age(now);
    }
    // Deregister and close every port before the thread ends.
    let handles: Vec<_> = dp.handles().collect();
    for h in handles {
        let mut ctl = Ctl {
            dp: &mut dp,
            registry: poll.registry(),
            pollers: &mut pollers,
            stop: &mut stop,
        };
        ctl.remove_port(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datapath_thread_runs_real_time_when_asked() {
        let (dp, join) = spawn("dp-rt-test").unwrap();
        assert_eq!(dp.scheduling().unwrap(), (libc::SCHED_OTHER, 0));
        // Out of range for SCHED_FIFO: refused, and the thread is as it was.
        let err = dp.set_realtime(0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        assert_eq!(dp.scheduling().unwrap(), (libc::SCHED_OTHER, 0));
        if crate::testing::needs_root() {
            dp.set_realtime(1).unwrap();
            assert_eq!(dp.scheduling().unwrap(), (libc::SCHED_FIFO, 1));
        }
        // The thread still serves commands (sleeping between them) and stops when told.
        dp.call(|ctl| ctl.stop()).unwrap();
        join.join().unwrap();
    }

    #[test]
    fn cpu_lists_are_read_as_linux_writes_them() {
        assert_eq!(parse_cpu_list("1").unwrap(), [1]);
        assert_eq!(parse_cpu_list("0-3,8").unwrap(), [0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list("3,1, 2-3").unwrap(), [1, 2, 3]);
        for bad in ["", "a", "1,", "-1", "3-1", "1-", "1024", "0-4096"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_datapath_thread_stays_on_the_cpus_it_is_given() {
        let (dp, join) = spawn("dp-cpus-test").unwrap();
        let all = dp.cpus().unwrap();
        assert!(!all.is_empty());
        let last = *all.last().unwrap();
        dp.set_cpus(&[last]).unwrap();
        assert_eq!(dp.cpus().unwrap(), [last]);
        // Past the kernel's set, or no CPU this process may use: refused, nothing changed.
        let err = dp.set_cpus(&[libc::CPU_SETSIZE as usize]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        let err = dp.set_cpus(&[libc::CPU_SETSIZE as usize - 1]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        assert_eq!(dp.cpus().unwrap(), [last]);
        dp.set_cpus(&all).unwrap();
        assert_eq!(dp.cpus().unwrap(), all);
        dp.call(|ctl| ctl.stop()).unwrap();
        join.join().unwrap();
    }
}
