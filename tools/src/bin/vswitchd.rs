//! `vswitchd`: the vswitch daemon, in the foreground.
//!
//! Starts the datapath thread, restores the saved networks and ports, serves the API on a unix
//! socket, and stops cleanly on SIGINT or SIGTERM (every TAP it made is removed).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tools::api::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use tools::daemon::server::{ApiSocket, Limits};
use tools::daemon::{state, Daemon};

/// The vswitch daemon: a userspace virtual switch (bridge, VLANs, VXLAN overlay).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// The API socket vswitchctl talks to.
    #[arg(long, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The group of the API socket (name or number; mode 0660): its members may use
    /// vswitchctl without root, as Docker's `-G`. Default: the daemon's group.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Where networks and ports are saved (mode 0700, locked by one daemon at a time).
    #[arg(long, env = "VSWITCH_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// API connections served at once; one more is refused with an error line.
    #[arg(long, default_value_t = Limits::default().max_clients)]
    api_max_clients: usize,
    /// Of those, streaming ones (trace --live, capture) at once.
    #[arg(long, default_value_t = Limits::default().max_streams)]
    api_max_streams: usize,
    /// Seconds an API connection may stay idle before it is closed.
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs_f64())]
    api_idle_timeout: f64,
    /// The local VXLAN endpoint, ADDR[:PORT].
    #[arg(long, default_value = "0.0.0.0:4789")]
    vtep: String,
    /// Print one line per frame: its path through the pipeline.
    #[arg(long)]
    trace: bool,
    /// error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Check the state store in --state-dir, print what it holds, and exit (0: readable, 1: not).
    #[arg(long)]
    state_check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.state_check {
        return state_check(&args.state_dir);
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--state-check`: the store's summary on stdout (exit 0), or what is wrong on stderr (exit 1).
fn state_check(dir: &std::path::Path) -> ExitCode {
    match tools::daemon::store::check_state_dir(dir) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let vtep = parse_vtep(&args.vtep)?;
    let limits = parse_limits(&args)?;
    let group = args
        .socket_group
        .as_deref()
        .map(resolve_group)
        .transpose()?;
    check_privileges()?;
    // Block SIGINT/SIGTERM before any thread starts, so only `wait_for_signal` receives them.
    let signals = block_signals();
    raise_fd_limit();
    // The namespace a sandbox may never adopt: ours, as the main thread sees it now.
    tools::netns::record_own_netns().map_err(|e| e.to_string())?;
    // The lock first: a second daemon on this state dir stops here, having touched nothing.
    let _state_lock = state::lock_state_dir(&args.state_dir).map_err(|e| e.to_string())?;
    let socket = ApiSocket::bind_with(&args.socket, group).map_err(|e| e.to_string())?;
    let (dp, dp_thread) =
        switch::event_loop::spawn("datapath").map_err(|e| format!("starting datapath: {e}"))?;
    let (daemon, notes, repairs) =
        Daemon::start(dp, &args.state_dir, vtep).map_err(|e| format!("restoring state: {e}"))?;
    for n in &notes {
        tracing::info!("state store: {n}");
    }
    for r in &repairs {
        tracing::warn!("repaired: {r}");
    }
    let mut daemon = daemon;
    if args.trace {
        // One line per frame on stderr, for as long as the daemon runs.
        let (_, lines) = daemon
            .trace_subscribe(None, true)
            .map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("trace".into())
            .spawn(move || {
                for line in lines {
                    eprintln!("trace: {line}");
                }
            })
            .map_err(|e| e.to_string())?;
    }
    let daemon = Arc::new(Mutex::new(daemon));
    tracing::info!(
        socket = %args.socket.display(),
        state_dir = %args.state_dir.display(),
        vtep = %args.vtep,
        "vswitchd ready"
    );
    {
        let daemon = daemon.clone();
        let socket = Arc::new(socket);
        let s2 = socket.clone();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                if let Err(e) = s2.serve_with(daemon, limits) {
                    tracing::error!(error = %e, "the API server stopped");
                }
            })
            .map_err(|e| e.to_string())?;
        let sig = wait_for_signal(&signals);
        tracing::info!(signal = sig, "stopping");
        drop(socket);
    }
    daemon.lock().unwrap_or_else(|p| p.into_inner()).shutdown();
    let _ = dp_thread.join();
    // The API socket's file is removed by ApiSocket's Drop once the last clone goes; remove it
    // here too, since the serving thread holds a clone until the process exits.
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!("stopped");
    Ok(())
}

/// The API server's limits from the command line.
fn parse_limits(args: &Args) -> Result<Limits, String> {
    if args.api_max_clients == 0 {
        return Err("--api-max-clients must be at least 1".into());
    }
    let idle = Duration::try_from_secs_f64(args.api_idle_timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!(
                "invalid --api-idle-timeout {}: a positive number of seconds",
                args.api_idle_timeout
            )
        })?;
    Ok(Limits {
        max_clients: args.api_max_clients,
        max_streams: args.api_max_streams.min(args.api_max_clients),
        idle_timeout: idle,
        ..Limits::default()
    })
}

/// A group by name or number.
fn resolve_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(text).map_err(|_| format!("invalid group {text:?}"))?;
    // SAFETY: `struct group` is plain data (integers and pointers); all zeros is valid.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r writes into `grp` and `buf`, both ours and sized as passed; `result`
    // points into `grp` or is null.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!("--socket-group: no group named {text:?}"));
    }
    Ok(grp.gr_gid)
}

/// Raises the soft limit of open files to the hard one: every port and every API client is
/// a descriptor, and the default soft limit (1024) is far below what the daemon serves.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit read and write the local struct only.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = if lim.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            lim.rlim_max
        };
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("cannot raise the open-file limit");
            }
        }
    }
}

/// `ADDR[:PORT]` (IPv4; the port defaults to 4789).
fn parse_vtep(text: &str) -> Result<std::net::SocketAddrV4, String> {
    let bad = || format!("invalid --vtep {text:?}: expected ADDR[:PORT], e.g. 0.0.0.0:4789");
    match text.split_once(':') {
        Some((ip, port)) => Ok(std::net::SocketAddrV4::new(
            ip.parse().map_err(|_| bad())?,
            port.parse().map_err(|_| bad())?,
        )),
        None => Ok(std::net::SocketAddrV4::new(
            text.parse().map_err(|_| bad())?,
            vxlan::DEFAULT_PORT,
        )),
    }
}

/// Fails with a clear message when the daemon lacks what it needs.
fn check_privileges() -> Result<(), String> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let mut missing = Vec::new();
    if caps & (1 << CAP_NET_ADMIN) == 0 {
        missing.push("CAP_NET_ADMIN (to create TAP devices and configure interfaces)");
    }
    if caps & (1 << CAP_NET_RAW) == 0 {
        missing.push("CAP_NET_RAW (to open AF_PACKET sockets on interfaces)");
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing privileges: {}; run as root or grant them (setcap cap_net_admin,cap_net_raw+ep vswitchd)",
            missing.join(", ")
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Err(format!(
            "cannot open /dev/net/tun: {e} (load the tun module: modprobe tun)"
        ));
    }
    Ok(())
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set, then pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: sigwait reads the set and writes the signal number into our local.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}
