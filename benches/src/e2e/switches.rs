//! The switches under test, and how each is put up in the switch namespace with the given veth
//! ends as its ports. Whatever a switch starts (daemons) goes on the caller's [`Cleanup`].

use super::cleanup::Cleanup;
use super::proc::{in_netns, run, wait_until, Daemon};
use super::{Error, Result};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long a daemon gets to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One switch configuration: a row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The Linux kernel bridge: the reference every ratio is taken against.
    Kernel,
    /// `vswitchd`, ports attached as `system` (AF_PACKET); in the overlay, its default VTEP
    /// backend (the TAP with UDP-tunnel GSO where the kernel has it).
    Vswitchd,
    /// `vswitchd` with its VTEP on the UDP socket (`--vtep-backend socket`): overlay only.
    VswitchdSocket,
    /// `vswitchd` with its datapath thread under the real-time scheduler
    /// (`--datapath-rt-priority 1`), flat and overlay; only when asked for (`vswitchd-rt`).
    VswitchdRt,
    /// Open vSwitch, userspace (`netdev`) datapath, `userspace-tso-enable=false`.
    OvsNoTso,
    /// Open vSwitch, userspace (`netdev`) datapath, `userspace-tso-enable=true`.
    OvsTso,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 6] = [
        Variant::Kernel,
        Variant::Vswitchd,
        Variant::VswitchdSocket,
        Variant::VswitchdRt,
        Variant::OvsNoTso,
        Variant::OvsTso,
    ];

    /// The machine name (JSON, temp dir names).
    pub fn key(self) -> &'static str {
        match self {
            Variant::Kernel => "kernel",
            Variant::Vswitchd => "vswitchd",
            Variant::VswitchdSocket => "vswitchd-socket",
            Variant::VswitchdRt => "vswitchd-rt",
            Variant::OvsNoTso => "ovs-notso",
            Variant::OvsTso => "ovs-tso",
        }
    }

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Kernel => "kernel bridge",
            Variant::Vswitchd => "vswitchd",
            Variant::VswitchdSocket => "vswitchd, socket VTEP",
            Variant::VswitchdRt => "vswitchd, real-time datapath",
            Variant::OvsNoTso => "ovs userspace, no TSO",
            Variant::OvsTso => "ovs userspace, TSO",
        }
    }

    /// Parses one `--only` word: a variant key, `vswitchd` for both vswitchd rows (the socket
    /// VTEP row only where a scenario has it), or `ovs` for both OVS rows.
    pub fn parse_selection(word: &str) -> Option<Vec<Variant>> {
        match word.trim() {
            "kernel" | "bridge" => Some(vec![Variant::Kernel]),
            "vswitchd" | "vswitch" => Some(vec![Variant::Vswitchd, Variant::VswitchdSocket]),
            "vswitchd-tap" | "vswitchd-default" => Some(vec![Variant::Vswitchd]),
            "vswitchd-socket" => Some(vec![Variant::VswitchdSocket]),
            "vswitchd-rt" => Some(vec![Variant::VswitchdRt]),
            "ovs" | "openvswitch" => Some(vec![Variant::OvsNoTso, Variant::OvsTso]),
            "ovs-notso" => Some(vec![Variant::OvsNoTso]),
            "ovs-tso" => Some(vec![Variant::OvsTso]),
            _ => None,
        }
    }

    /// Whether the hosts' veths must not hand the switch GSO super-frames or partial checksums.
    ///
    /// Open vSwitch's userspace datapath without TSO reads veths through AF_PACKET without a
    /// virtio-net header, so it drops GSO packets and forwards partial checksums as they are
    /// (then the receiver drops them). Its own test suite turns transmit offloads off on the
    /// host side of each veth for that reason (`CONFIGURE_VETH_OFFLOADS` in
    /// tests/system-userspace-macros.at: `ethtool -K VETH tx off`); so does this harness.
    pub fn needs_host_tx_offload_off(self) -> bool {
        self == Variant::OvsNoTso
    }

    /// Whether it is one of the vswitchd rows.
    pub fn is_vswitchd(self) -> bool {
        matches!(
            self,
            Variant::Vswitchd | Variant::VswitchdSocket | Variant::VswitchdRt
        )
    }

    /// The daemon's extra arguments for this row.
    pub fn vswitchd_args(self) -> &'static [&'static str] {
        match self {
            Variant::VswitchdRt => &["--datapath-rt-priority", "1"],
            _ => &[],
        }
    }

    /// Whether it is one of the Open vSwitch rows.
    pub fn is_ovs(self) -> bool {
        matches!(self, Variant::OvsNoTso | Variant::OvsTso)
    }
}

/// The vswitch binaries.
#[derive(Debug, Clone)]
pub struct VswitchBins {
    /// `vswitchd`.
    pub vswitchd: PathBuf,
    /// `vswitchctl`.
    pub vswitchctl: PathBuf,
}

/// The Open vSwitch binaries (Debian's openvswitch-switch).
#[derive(Debug, Clone)]
pub struct OvsBins {
    /// `ovs-vsctl`.
    pub vsctl: PathBuf,
    /// `ovs-vswitchd`.
    pub vswitchd: PathBuf,
    /// `ovsdb-server`.
    pub ovsdb_server: PathBuf,
    /// `ovsdb-tool`.
    pub ovsdb_tool: PathBuf,
    /// `ovs-appctl` (the overlay scenario needs it to read the tunnel route table).
    pub appctl: Option<PathBuf>,
}

impl OvsBins {
    /// The binaries, if all four are installed.
    pub fn find() -> Option<OvsBins> {
        use super::proc::find_program as find;
        Some(OvsBins {
            vsctl: find("ovs-vsctl")?,
            vswitchd: find("ovs-vswitchd")?,
            ovsdb_server: find("ovsdb-server")?,
            ovsdb_tool: find("ovsdb-tool")?,
            appctl: find("ovs-appctl"),
        })
    }

    /// `ovs-vswitchd --version`'s first line.
    pub fn version(&self) -> Option<String> {
        run(Command::new(&self.vswitchd).arg("--version"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
    }
}

/// The Linux bridge: `br0` in the switch namespace with every port enslaved.
pub fn kernel_bridge(sw: &str, ports: &[&str]) -> Result<Vec<String>> {
    let ip = |args: &[&str]| run(Command::new("ip").args(["-n", sw]).args(args));
    ip(&["link", "add", "br0", "type", "bridge"])?;
    for p in ports {
        ip(&["link", "set", p, "master", "br0"])?;
    }
    ip(&["link", "set", "br0", "up"])?;
    Ok(Vec::new())
}

/// What every bench daemon is started with: no Docker plugin (its default socket is the
/// machine's `/run/docker/plugins/vswitch.sock`, shared by every mount namespace) and no DNS
/// upstream (the machine's resolver is none of a bench's business).
const NO_HOST_SERVICES: &[&str] = &["--docker-plugin", "none", "--dns-upstream", "none"];

/// `vswitchd` in the switch namespace, its socket and state in `dir`, then `vswitchctl port add`
/// for every port (on the daemon's default network).
pub fn vswitchd(
    sw: &str,
    ports: &[&str],
    bins: &VswitchBins,
    dir: &Path,
    args: &[&str],
    cleanup: &mut Cleanup,
) -> Result<(Vec<String>, u32)> {
    let socket = dir.join("vswitchd.sock");
    let mut cmd = in_netns(sw, &bins.vswitchd);
    cmd.args(args)
        .args(NO_HOST_SERVICES)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env_remove("VSWITCH_SOCKET")
        .env_remove("VSWITCH_STATE_DIR")
        .env("NO_COLOR", "1"); // its log goes to a file, and into error messages

    let mut daemon = Daemon::spawn("vswitchd", cmd, &dir.join("vswitchd.log"))?;
    wait_until("vswitchd's API socket", START_TIMEOUT, || {
        daemon.check_running()?;
        Ok(UnixStream::connect(&socket).is_ok())
    })?;
    let pid = daemon.pid();
    cleanup.push(daemon);
    for p in ports {
        run(Command::new(&bins.vswitchctl)
            .arg("--socket")
            .arg(&socket)
            .args(["port", "add", p]))?;
    }
    Ok((Vec::new(), pid))
}

/// `nsenter --net=/run/netns/NS -- vswitchd --socket DIR/vswitchd.sock --state-dir STATE`,
/// waiting until it answers on its socket. `nsenter` enters the network namespace only (and execs
/// the daemon, so the pid is vswitchd's): the sandboxes it bind-mounts under `/run/netns` are
/// seen by everyone, where `ip netns exec` would give it a private mount namespace that hides
/// them. The log goes to `log`; the caller owns the returned guard.
pub fn spawn_vswitchd_in(
    ns: &str,
    bins: &VswitchBins,
    socket: &Path,
    state_dir: &Path,
    log: &Path,
) -> Result<Daemon> {
    spawn_vswitchd_with(ns, bins, socket, state_dir, log, &[])
}

/// [`spawn_vswitchd_in`] with more arguments for vswitchd (`VSWITCH_VTEP_BACKEND` is not
/// inherited: the arguments say what the row measures).
pub fn spawn_vswitchd_with(
    ns: &str,
    bins: &VswitchBins,
    socket: &Path,
    state_dir: &Path,
    log: &Path,
    args: &[&str],
) -> Result<Daemon> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(&bins.vswitchd)
        .args(args)
        .args(NO_HOST_SERVICES)
        .env_remove("VSWITCH_VTEP_BACKEND")
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("VSWITCH_SOCKET")
        .env_remove("VSWITCH_STATE_DIR")
        .env("NO_COLOR", "1");
    let mut daemon = Daemon::spawn("vswitchd", cmd, log)?;
    wait_until("vswitchd's API socket", START_TIMEOUT, || {
        daemon.check_running()?;
        Ok(UnixStream::connect(socket).is_ok())
    })?;
    Ok(daemon)
}

/// `vswitchctl --socket SOCKET ARGS`; its stdout.
pub fn vswitchctl(bins: &VswitchBins, socket: &Path, args: &[&str]) -> Result<String> {
    run(Command::new(&bins.vswitchctl)
        .env_remove("VSWITCH_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args))
}

/// A sandbox of a vswitchd (a global name, `/run/netns/NAME`): removed through the daemon
/// (`vswitchctl sandbox rm`) while it answers, and its namespace deleted if still there
/// afterwards (the daemon died, or failed to remove it). Take the guard before creating it.
pub struct VswitchSandbox {
    name: String,
    bins: VswitchBins,
    socket: PathBuf,
    removed: bool,
}

impl VswitchSandbox {
    /// A guard for sandbox `name` of the daemon at `socket`.
    pub fn guard(name: &str, bins: &VswitchBins, socket: &Path) -> VswitchSandbox {
        VswitchSandbox {
            name: name.to_string(),
            bins: bins.clone(),
            socket: socket.to_path_buf(),
            removed: false,
        }
    }
}

impl super::cleanup::Resource for VswitchSandbox {
    fn describe(&self) -> String {
        format!("sandbox {}", self.name)
    }
    fn release(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.removed, true) {
            return Ok(());
        }
        let path = Path::new("/run/netns").join(&self.name);
        let mut daemon_err = None;
        if UnixStream::connect(&self.socket).is_ok() {
            if let Err(e) = vswitchctl(&self.bins, &self.socket, &["sandbox", "rm", &self.name]) {
                daemon_err = Some(e);
            }
        }
        if path.symlink_metadata().is_ok() {
            super::netns::delete(&self.name)?;
        }
        match daemon_err {
            // "no such sandbox": it was never made (setup failed first); nothing is left.
            Some(e) if !e.to_string().contains("no such sandbox") => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for VswitchSandbox {
    fn drop(&mut self) {
        use super::cleanup::Resource;
        if let Err(e) = self.release() {
            eprintln!("e2e: cleanup: {e}");
        }
    }
}

/// A running Open vSwitch (ovsdb-server and ovs-vswitchd) with a private database, run
/// directory and logs in its own directory (nothing system-wide is read or written), both daemons
/// in one namespace. The daemons are on the caller's [`Cleanup`]; this is how to talk to them.
pub struct Ovs {
    bins: OvsBins,
    dir: PathBuf,
    remote: String,
    log: PathBuf,
}

impl Ovs {
    /// Starts both daemons in namespace `ns`, their files in `dir`.
    ///
    /// `userspace-tso-enable` is read once when ovs-vswitchd starts ("changing this value
    /// requires restarting the daemon", ovs-vswitchd.conf.db(5)), so it is written to the fresh
    /// database before ovs-vswitchd is started.
    pub fn start(
        ns: &str,
        bins: &OvsBins,
        tso: bool,
        dir: &Path,
        cleanup: &mut Cleanup,
    ) -> Result<Ovs> {
        let db = dir.join("conf.db");
        let db_socket = dir.join("db.sock");
        let ovs = Ovs {
            bins: bins.clone(),
            dir: dir.to_path_buf(),
            remote: format!("unix:{}", db_socket.display()),
            log: dir.join("ovs-vswitchd.log"),
        };
        let file_opt = |opt: &str, name: &str| format!("--{opt}={}", dir.join(name).display());

        run(ovs.env(Command::new(&bins.ovsdb_tool).arg("create").arg(&db)))?;

        let mut cmd = in_netns(ns, &bins.ovsdb_server);
        cmd.arg(&db)
            .arg(format!("--remote=p{}", ovs.remote))
            .arg(file_opt("pidfile", "ovsdb-server.pid"))
            .arg(file_opt("unixctl", "ovsdb-server.ctl"))
            .arg(file_opt("log-file", "ovsdb-server.log"));
        ovs.env(&mut cmd);
        let mut server = Daemon::spawn("ovsdb-server", cmd, &dir.join("ovsdb-server.out"))?;
        wait_until("ovsdb-server's socket", START_TIMEOUT, || {
            server.check_running()?;
            Ok(UnixStream::connect(&db_socket).is_ok())
        })?;
        cleanup.push(server);

        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:userspace-tso-enable={tso}"),
        ])?;

        let mut cmd = in_netns(ns, &bins.vswitchd);
        cmd.arg(&ovs.remote)
            .arg(file_opt("pidfile", "ovs-vswitchd.pid"))
            .arg(file_opt("unixctl", "ovs-vswitchd.ctl"))
            .arg(format!("--log-file={}", ovs.log.display()));
        ovs.env(&mut cmd);
        let mut vswitchd = Daemon::spawn("ovs-vswitchd", cmd, &dir.join("ovs-vswitchd.out"))?;
        vswitchd.check_running()?;
        cleanup.push(vswitchd);
        Ok(ovs)
    }

    /// Points the OVS tools at this instance's files.
    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for k in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            cmd.env(k, &self.dir);
        }
        cmd
    }

    /// `ovs-vsctl ARGS` against this instance's database. Without `--no-wait`, it returns once
    /// ovs-vswitchd has applied the change.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        run(self.env(
            Command::new(&self.bins.vsctl)
                .arg(format!("--db={}", self.remote))
                .arg("--timeout=30")
                .args(args),
        ))
    }

    /// `ovs-appctl -t DIR/ovs-vswitchd.ctl ARGS`.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let appctl = self.bins.appctl.as_ref().ok_or_else(|| {
            Error::Unexpected("ovs-appctl is not installed (openvswitch-common)".into())
        })?;
        run(self.env(
            Command::new(appctl)
                .arg("--timeout=30")
                .arg("-t")
                .arg(self.dir.join("ovs-vswitchd.ctl"))
                .args(args),
        ))
    }

    /// Whether ovs-vswitchd logged that userspace TSO is on.
    pub fn tso_enabled(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("TCP Segmentation Offloading support enabled")
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// Open vSwitch ([`Ovs::start`]) in the switch namespace, bridge `br0` on the userspace
/// datapath, every port added to it.
pub fn ovs(
    sw: &str,
    ports: &[&str],
    bins: &OvsBins,
    tso: bool,
    dir: &Path,
    cleanup: &mut Cleanup,
) -> Result<Vec<String>> {
    let ovs = Ovs::start(sw, bins, tso, dir, cleanup)?;
    ovs.vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
    ])?;
    for p in ports {
        ovs.vsctl(&["add-port", "br0", p])?;
    }

    // Say whether ovs-vswitchd really runs with the TSO setting asked for.
    let mut notes = Vec::new();
    if tso && !ovs.tso_enabled() {
        return Err(Error::Unexpected(format!(
            "ovs-vswitchd did not log that userspace TSO is enabled (see {})",
            ovs.log().display()
        )));
    }
    if tso {
        notes.push("ovs-vswitchd: userspace TSO enabled".to_string());
    }
    Ok(notes)
}
