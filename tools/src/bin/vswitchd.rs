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
use tools::daemon::dns::ForwardConfig;
use tools::daemon::docker::{self, DaemonBackend, DockerPlugin};
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
    /// The VXLAN endpoint's backend: `tap` (Linux 6.17+: whole super-frames through a TAP with
    /// UDP-tunnel GSO, tc to and from the underlay; needs a concrete --vtep address), `socket`
    /// (a UDP socket, segments cut in user space), or `auto` (the TAP when it works here).
    #[arg(
        long,
        env = "VSWITCH_VTEP_BACKEND",
        default_value = "auto",
        value_name = "auto|tap|socket"
    )]
    vtep_backend: tools::daemon::VtepBackend,
    /// Run the datapath thread under the kernel's real-time scheduler (SCHED_FIFO) at this
    /// priority, 1–99: a waiting frame then wakes it at once instead of after another
    /// thread's time slice (lower latency on a busy host; costs CPU per frame in smaller
    /// batches). Needs CAP_SYS_NICE. Default: normal scheduling.
    #[arg(long, value_name = "1-99", value_parser = clap::value_parser!(u8).range(1..=99))]
    datapath_rt_priority: Option<u8>,
    /// Keep the datapath thread on these CPUs (a list as Linux writes one: 1, 0,2 or 0-3,8),
    /// as Open vSwitch places its poll-mode threads (pmd-cpu-mask): on a CPU set aside for it
    /// (the kernel's isolcpus=) and with --datapath-rt-priority, it shares its CPU with
    /// nothing. Default: any CPU.
    #[arg(long, value_name = "LIST", value_parser = cpu_list)]
    datapath_cpus: Option<CpuList>,
    /// Print one line per frame: its path through the pipeline.
    #[arg(long)]
    trace: bool,
    /// The Docker plugin's socket (`none`: no plugin); Docker names the driver after the file.
    /// [default: /run/docker/plugins/vswitch.sock]
    #[arg(long, env = "VSWITCH_DOCKER_PLUGIN", value_name = "PATH|none")]
    docker_plugin: Option<String>,
    /// An upstream resolver for the sandboxes' names that are not theirs, IP[:PORT]; repeat for
    /// several (tried in order). `none`: no forwarding (only the sandboxes' own names
    /// resolve). [default: the nameservers of the daemon's /etc/resolv.conf]
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]|none")]
    dns_upstream: Vec<String>,
    /// error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Check the state store in --state-dir, print what it holds, and exit (0: readable, 1: not).
    #[arg(long)]
    state_check: bool,
    /// Join a cluster kept in etcd: swarm-scope overlay networks, cluster-wide IPAM, peers and
    /// stations discovered (needs a concrete --vtep address).
    #[arg(long, value_name = "etcd://HOST:PORT[,HOST:PORT…]")]
    cluster: Option<String>,
    /// This node's name in the cluster (default: the hostname).
    #[arg(long, value_name = "NAME", requires = "cluster")]
    node: Option<String>,
    /// The etcd key prefix of the cluster.
    #[arg(long, value_name = "PREFIX", default_value = tools::daemon::cluster::DEFAULT_PREFIX, requires = "cluster")]
    cluster_prefix: String,
    /// The lease TTL of this node in seconds: a dead node leaves the others within it; a
    /// large cluster, whose etcd is busier, wants a longer one (renewed every third of it).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=3600), requires = "cluster")]
    cluster_ttl: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.state_check {
        return state_check(&args.state_dir);
    }
    // The HTTP client of the cluster logs every request at debug: keep it at info unless asked.
    let level = if args.log_level.contains('=') {
        args.log_level.clone()
    } else {
        format!("{},ureq=info,ureq_proto=info", args.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
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

/// `--datapath-cpus`: the CPUs, ascending.
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

fn cpu_list(text: &str) -> Result<CpuList, String> {
    switch::event_loop::parse_cpu_list(text).map(CpuList)
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
    let cluster = cluster_config(&args, vtep)?;
    let dns = dns_config(&args.dns_upstream)?;
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
    if let Some(priority) = args.datapath_rt_priority {
        dp.set_realtime(priority).map_err(|e| {
            format!("--datapath-rt-priority {priority}: cannot make the datapath thread real-time (SCHED_FIFO, needs CAP_SYS_NICE): {e}")
        })?;
        tracing::info!(priority, "datapath thread runs under SCHED_FIFO");
    }
    if let Some(CpuList(cpus)) = &args.datapath_cpus {
        dp.set_cpus(cpus).map_err(|e| {
            format!("--datapath-cpus {cpus:?}: cannot keep the datapath thread on those CPUs: {e}")
        })?;
        tracing::info!(?cpus, "datapath thread kept on its CPUs");
    }
    let (daemon, notes, repairs) = Daemon::start(dp, &args.state_dir, vtep, args.vtep_backend)
        .map_err(|e| format!("restoring state: {e}"))?;
    for n in &notes {
        tracing::info!("state store: {n}");
    }
    for r in &repairs {
        tracing::warn!("repaired: {r}");
    }
    let mut daemon = daemon;
    // The sandboxes' resolver; forwarded queries leave from this (the daemon's) namespace.
    let upstreams = dns.upstreams.clone();
    for problem in daemon
        .enable_dns(dns)
        .map_err(|e| format!("starting the DNS service: {e}"))?
    {
        tracing::warn!("dns: {problem}");
    }
    tracing::info!(
        ?upstreams,
        "DNS service at 127.0.0.11:53 in every connected sandbox"
    );
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
    if let Some(config) = cluster {
        let node = config.node.clone();
        for r in tools::daemon::swarm::join(&daemon, config)? {
            tracing::warn!("repaired: {r}");
        }
        tracing::info!(%node, "joined the cluster");
    }
    tracing::info!(
        socket = %args.socket.display(),
        state_dir = %args.state_dir.display(),
        vtep = %args.vtep,
        "vswitchd ready"
    );
    let plugin = start_docker_plugin(args.docker_plugin.as_deref(), &daemon)?;
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
    // The plugin's thread ends and its socket goes before the datapath stops.
    drop(plugin);
    {
        let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
        d.leave_cluster();
        d.shutdown();
    }
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

/// Serves the Docker plugin on its own thread (never the datapath's): at `arg`, or at the
/// default socket when no `--docker-plugin` was given. `none` turns it off. A failure at an
/// explicit path stops the daemon; at the default path (a machine without Docker, another
/// vswitchd holding it) it is only logged.
fn start_docker_plugin(
    arg: Option<&str>,
    daemon: &Arc<Mutex<Daemon>>,
) -> Result<Option<DockerPlugin>, String> {
    let explicit = arg.is_some();
    let Some(path) = docker::server::socket_from_arg(arg.unwrap_or(docker::server::DEFAULT_SOCKET))
    else {
        tracing::info!("docker plugin off (--docker-plugin none)");
        return Ok(None);
    };
    let backend = Arc::new(DaemonBackend::new(daemon.clone()));
    match DockerPlugin::serve(&path, backend) {
        Ok(plugin) => Ok(Some(plugin)),
        Err(e) if explicit => Err(format!(
            "serving the docker plugin at {}: {e}",
            path.display()
        )),
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "docker plugin not started");
            Ok(None)
        }
    }
}

/// The cluster settings from `--cluster`, `--node` and `--cluster-prefix`, if `--cluster`.
fn cluster_config(
    args: &Args,
    vtep: std::net::SocketAddrV4,
) -> Result<Option<tools::daemon::cluster::ClusterConfig>, String> {
    let Some(list) = args.cluster.as_deref() else {
        return Ok(None);
    };
    if vtep.ip().is_unspecified() {
        return Err(format!(
            "--cluster needs a concrete --vtep address (the other hosts send VXLAN to it), not {vtep}"
        ));
    }
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect();
    if endpoints.is_empty() {
        return Err("--cluster: expected etcd://HOST:PORT[,HOST:PORT…]".into());
    }
    let node = match &args.node {
        Some(n) => n.clone(),
        None => hostname()?,
    };
    let mut config = tools::daemon::cluster::ClusterConfig::new(
        &endpoints,
        &node,
        std::net::SocketAddr::V4(vtep),
    );
    config.prefix = args.cluster_prefix.clone();
    config.ttl = std::time::Duration::from_secs(args.cluster_ttl);
    Ok(Some(config))
}

/// The machine's hostname, the default node name.
fn hostname() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if rc != 0 || name.is_empty() {
        return Err("cannot read the hostname: give --node NAME".into());
    }
    Ok(name)
}

/// The DNS forwarding of `--dns-upstream` values: `none` alone turns forwarding off.
fn dns_config(values: &[String]) -> Result<ForwardConfig, String> {
    let none = values.iter().any(|v| v == "none");
    if none && values.len() > 1 {
        return Err("--dns-upstream none cannot be combined with upstreams".into());
    }
    let config = if none {
        ForwardConfig::new(Vec::new())
    } else {
        ForwardConfig::from_args(values)
    };
    config.map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_upstreams_from_the_command_line() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = dns_config(&args(&["10.0.0.53", "10.0.0.54:5353"])).unwrap();
        assert_eq!(
            c.upstreams,
            vec![
                "10.0.0.53:53".parse().unwrap(),
                "10.0.0.54:5353".parse().unwrap()
            ]
        );
        assert!(dns_config(&args(&["none"])).unwrap().upstreams.is_empty());
        assert!(dns_config(&args(&["none", "10.0.0.53"])).is_err());
        assert!(dns_config(&args(&["127.0.0.11"])).is_err(), "a loop");
        assert!(dns_config(&args(&["resolver"])).is_err());
    }
}
