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
    /// `vswitchd`, ports attached as `system` (AF_PACKET).
    Vswitchd,
    /// Open vSwitch, userspace (`netdev`) datapath, `userspace-tso-enable=false`.
    OvsNoTso,
    /// Open vSwitch, userspace (`netdev`) datapath, `userspace-tso-enable=true`.
    OvsTso,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 4] = [
        Variant::Kernel,
        Variant::Vswitchd,
        Variant::OvsNoTso,
        Variant::OvsTso,
    ];

    /// The machine name (JSON, temp dir names).
    pub fn key(self) -> &'static str {
        match self {
            Variant::Kernel => "kernel",
            Variant::Vswitchd => "vswitchd",
            Variant::OvsNoTso => "ovs-notso",
            Variant::OvsTso => "ovs-tso",
        }
    }

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Kernel => "kernel bridge",
            Variant::Vswitchd => "vswitchd",
            Variant::OvsNoTso => "ovs userspace, no TSO",
            Variant::OvsTso => "ovs userspace, TSO",
        }
    }

    /// Parses one `--only` word: a variant key, or `ovs` for both OVS rows.
    pub fn parse_selection(word: &str) -> Option<Vec<Variant>> {
        match word.trim() {
            "kernel" | "bridge" => Some(vec![Variant::Kernel]),
            "vswitchd" | "vswitch" => Some(vec![Variant::Vswitchd]),
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

/// `vswitchd` in the switch namespace, its socket and state in `dir`, then `vswitchctl port add`
/// for every port (on the daemon's default network).
pub fn vswitchd(
    sw: &str,
    ports: &[&str],
    bins: &VswitchBins,
    dir: &Path,
    cleanup: &mut Cleanup,
) -> Result<Vec<String>> {
    let socket = dir.join("vswitchd.sock");
    let mut cmd = in_netns(sw, &bins.vswitchd);
    cmd.arg("--socket")
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
    cleanup.push(daemon);
    for p in ports {
        run(Command::new(&bins.vswitchctl)
            .arg("--socket")
            .arg(&socket)
            .args(["port", "add", p]))?;
    }
    Ok(Vec::new())
}

/// Open vSwitch with a private database, run directory and logs in `dir` (nothing system-wide is
/// read or written), both daemons in the switch namespace, bridge `br0` on the userspace
/// datapath, every port added to it.
///
/// `userspace-tso-enable` is read once when ovs-vswitchd starts ("changing this value requires
/// restarting the daemon", ovs-vswitchd.conf.db(5)), so it is written to the fresh database
/// before ovs-vswitchd is started.
pub fn ovs(
    sw: &str,
    ports: &[&str],
    bins: &OvsBins,
    tso: bool,
    dir: &Path,
    cleanup: &mut Cleanup,
) -> Result<Vec<String>> {
    let env: Vec<(&str, &Path)> = ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"]
        .into_iter()
        .map(|k| (k, dir))
        .collect();
    let db = dir.join("conf.db");
    let db_socket = dir.join("db.sock");
    let remote = format!("unix:{}", db_socket.display());
    let file_opt = |opt: &str, name: &str| format!("--{opt}={}", dir.join(name).display());

    run(Command::new(&bins.ovsdb_tool)
        .arg("create")
        .arg(&db)
        .envs(env.iter().copied()))?;

    let mut cmd = in_netns(sw, &bins.ovsdb_server);
    cmd.arg(&db)
        .arg(format!("--remote=p{remote}"))
        .arg(file_opt("pidfile", "ovsdb-server.pid"))
        .arg(file_opt("unixctl", "ovsdb-server.ctl"))
        .arg(file_opt("log-file", "ovsdb-server.log"))
        .envs(env.iter().copied());
    let mut server = Daemon::spawn("ovsdb-server", cmd, &dir.join("ovsdb-server.out"))?;
    wait_until("ovsdb-server's socket", START_TIMEOUT, || {
        server.check_running()?;
        Ok(UnixStream::connect(&db_socket).is_ok())
    })?;
    cleanup.push(server);

    let vsctl = |args: &[&str]| {
        run(Command::new(&bins.vsctl)
            .arg(format!("--db={remote}"))
            .arg("--timeout=30")
            .args(args)
            .envs(env.iter().copied()))
    };
    vsctl(&["--no-wait", "init"])?;
    vsctl(&[
        "--no-wait",
        "set",
        "Open_vSwitch",
        ".",
        &format!("other_config:userspace-tso-enable={tso}"),
    ])?;

    let log = dir.join("ovs-vswitchd.log");
    let mut cmd = in_netns(sw, &bins.vswitchd);
    cmd.arg(&remote)
        .arg(file_opt("pidfile", "ovs-vswitchd.pid"))
        .arg(file_opt("unixctl", "ovs-vswitchd.ctl"))
        .arg(format!("--log-file={}", log.display()))
        .envs(env.iter().copied());
    let mut vswitchd = Daemon::spawn("ovs-vswitchd", cmd, &dir.join("ovs-vswitchd.out"))?;
    vswitchd.check_running()?;
    cleanup.push(vswitchd);

    // Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the change.
    vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
    ])?;
    for p in ports {
        vsctl(&["add-port", "br0", p])?;
    }

    // Say whether ovs-vswitchd really runs with the TSO setting asked for.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let enabled = text.contains("TCP Segmentation Offloading support enabled");
    let mut notes = Vec::new();
    if tso && !enabled {
        return Err(Error::Unexpected(format!(
            "ovs-vswitchd did not log that userspace TSO is enabled (see {})",
            log.display()
        )));
    }
    if tso {
        notes.push("ovs-vswitchd: userspace TSO enabled".to_string());
    }
    Ok(notes)
}
