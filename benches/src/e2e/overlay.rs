//! The overlay scenario: two "hosts" joined by an underlay, a sandbox behind a switch on each,
//! the sandboxes' traffic carried between the hosts over VXLAN (VNI 42, UDP 4789).
//!
//! ```text
//!  sA eth0 ══veth══ [hA: switch ─ VTEP 10.78.0.1] ══ u0 ═underlay veth═ u0 ══ [hB: VTEP 10.78.0.2 ─ switch] ══veth══ eth0 sB
//! ```
//!
//! Built three ways, each measured from sandbox A to sandbox B:
//! - `kernel`: in each host a Linux bridge `br0` with a kernel VXLAN device
//!   (`ip link add vx0 type vxlan id 42 dstport 4789 local OWN remote OTHER dev u0`) and the host
//!   end of the sandbox's veth; inner MTU 1450, sandboxes 10.79.0.1/24 and 10.79.0.2/24;
//! - `vswitchd`: a vswitchd in each host (started with `nsenter --net`, so the sandboxes it
//!   mounts under /run/netns are visible here), `network create ov --driver overlay --vni 42
//!   --subnet 10.79.0.0/24 --ip-range 10.79.0.16/28 (hB: .32/28) --peer OTHER`, a sandbox made
//!   by the daemon (`sandbox create`, global name `vsb<pid>-ovA|B`) and `network connect ov`;
//!   the addresses are those the daemons hand out;
//! - `ovs-*`: Open vSwitch's userspace tunnelling in each host: the sandbox's veth and a
//!   `type=vxlan options:remote_ip=OTHER options:key=42` port on an integration bridge `br-int`,
//!   and the underlay veth on a bridge `br-phy` that holds the underlay address (its internal
//!   port's MAC set to the veth's), so OVS's tunnel route and neighbour tables resolve the
//!   remote VTEP (Open vSwitch's "userspace-tunneling" documentation). A best-effort row: if it
//!   cannot be made to forward within the harness's deadlines it is reported as
//!   "ovs overlay: skipped (reason)", never with a number that is not a measurement.

use super::cleanup::{Cleanup, TempDir};
use super::ethtool;
use super::netns::Netns;
use super::proc::{run, wait_until};
use super::scenario::{Deployment, Endpoint, Env, Scenario};
use super::switches::{spawn_vswitchd_with, vswitchctl, Ovs, Variant, VswitchBins, VswitchSandbox};
use super::{Error, Result};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The VXLAN network identifier of every variant.
pub const VNI: u32 = 42;
/// The inner interfaces' MTU: the underlay's 1500 less the 50 bytes of VXLAN over IPv4.
pub const INNER_MTU: u32 = 1450;
/// The underlay prefix length.
const UNDERLAY_LEN: u8 = 24;
/// The inner prefix length.
const INNER_LEN: u8 = 24;
/// What ovs-vswitchd (before 3.3) logs when it drops a packet with offload flags at tunnel push.
const TSO_TUNNEL_DROP: &str = "Tunneling packets with HW offload flags is not supported";
/// How long OVS gets to learn the underlay route from the kernel.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(5);

/// One side of the overlay.
#[derive(Debug, Clone, Copy)]
struct Side {
    /// "A" or "B".
    tag: &'static str,
    /// The host's underlay address (its VTEP).
    underlay: Ipv4Addr,
    /// The other host's underlay address.
    peer: Ipv4Addr,
    /// The sandbox's address in the kernel and OVS variants.
    inner: Ipv4Addr,
    /// The vswitchd variant's `--ip-range` on this host (disjoint per host: each daemon's IPAM
    /// is its own).
    ip_range: &'static str,
}

const SIDES: [Side; 2] = [
    Side {
        tag: "A",
        underlay: Overlay::UNDERLAY_A,
        peer: Overlay::UNDERLAY_B,
        inner: Ipv4Addr::new(10, 79, 0, 1),
        ip_range: "10.79.0.16/28",
    },
    Side {
        tag: "B",
        underlay: Overlay::UNDERLAY_B,
        peer: Overlay::UNDERLAY_A,
        inner: Ipv4Addr::new(10, 79, 0, 2),
        ip_range: "10.79.0.32/28",
    },
];

/// Two hosts over VXLAN, a sandbox behind each (see the module documentation).
pub struct Overlay;

impl Overlay {
    /// Host A's underlay address.
    pub const UNDERLAY_A: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
    /// Host B's underlay address.
    pub const UNDERLAY_B: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
    /// The inner subnet.
    pub const INNER_SUBNET: &'static str = "10.79.0.0/24";
}

impl Scenario for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn describe(&self) -> String {
        format!(
            "sA ══veth══ [hA switch, VTEP {}] ══underlay veth, VXLAN VNI {VNI}══ [hB switch, VTEP \
             {}] ══veth══ sB (inner {}, MTU {INNER_MTU})",
            Overlay::UNDERLAY_A,
            Overlay::UNDERLAY_B,
            Overlay::INNER_SUBNET
        )
    }

    fn label(&self, variant: Variant) -> String {
        match variant {
            Variant::Kernel => "kernel bridge + VXLAN",
            Variant::Vswitchd => "vswitchd overlay, default VTEP",
            Variant::VswitchdSocket => "vswitchd overlay, socket VTEP",
            Variant::VswitchdRt => "vswitchd overlay, real-time datapath",
            Variant::OvsNoTso => "ovs userspace VXLAN, no TSO",
            Variant::OvsTso => "ovs userspace VXLAN, TSO",
        }
        .to_string()
    }

    fn path(&self) -> &'static str {
        "sandbox A → sandbox B"
    }

    fn runs(&self, _variant: Variant) -> bool {
        true
    }

    fn best_effort(&self, variant: Variant) -> Option<&'static str> {
        variant.is_ovs().then_some("ovs overlay")
    }

    fn skip_reason(&self, variant: Variant, env: &Env) -> Option<String> {
        if !variant.is_ovs() {
            return None;
        }
        let bins = env.ovs.as_ref()?;
        if bins.appctl.is_none() {
            return Some("ovs overlay: skipped (ovs-appctl is not installed)".into());
        }
        if variant == Variant::OvsTso {
            // Before 3.3, OVS's userspace datapath cannot encapsulate a packet that carries
            // offload flags (a TSO super-frame, or a partial checksum): with userspace TSO on,
            // every TCP segment and UDP datagram from the sandbox is such a packet and is
            // dropped at tunnel push (only ICMP gets through; TCP stalls). Detected by the
            // message in the binary, so a newer OVS is measured.
            let binary = std::fs::read(&bins.vswitchd).unwrap_or_default();
            if contains(&binary, TSO_TUNNEL_DROP.as_bytes()) {
                let version = bins.version().unwrap_or_else(|| "this version".into());
                return Some(format!(
                    "ovs overlay: skipped (userspace TSO with tunnels: {version} drops every \
                     packet carrying offload flags at tunnel push, \"{TSO_TUNNEL_DROP}\"; the \
                     no-TSO row is OVS's overlay figure)"
                ));
            }
        }
        None
    }

    fn setup(&self, variant: Variant, env: &Env) -> Result<Deployment> {
        let mut cleanup = Cleanup::new();
        let dir = TempDir::create(env.workdir.join(format!("overlay-{}", variant.key())))?;
        let dir_path = dir.path().to_path_buf();
        cleanup.push(dir);

        // The two hosts and the underlay between them, made in hA with its peer straight in
        // hB: no name is ever taken in the namespace the harness runs in.
        let mut hosts = Vec::new();
        for side in SIDES {
            let n = Netns::create(&format!("{}-h{}", env.prefix, side.tag))?;
            hosts.push(n.name().to_string());
            cleanup.push(n);
        }
        ip(
            &hosts[0],
            &[
                "link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &hosts[1],
            ],
        )?;
        for (host, side) in hosts.iter().zip(SIDES) {
            if !variant.is_ovs() {
                // OVS moves the address to its br-phy instead.
                let addr = format!("{}/{UNDERLAY_LEN}", side.underlay);
                ip(host, &["addr", "add", &addr, "dev", "u0"])?;
            }
            ip(host, &["link", "set", "u0", "up"])?;
        }

        let mut notes = Vec::new();
        let mut ends = Vec::new();
        let mut busy = Vec::new();
        for (host, side) in hosts.iter().zip(SIDES) {
            let end = match variant {
                Variant::Kernel => kernel_side(host, side, env, &mut cleanup)?,
                Variant::Vswitchd | Variant::VswitchdSocket | Variant::VswitchdRt => {
                    let bins = env.vswitch.as_ref().ok_or_else(|| {
                        Error::Unexpected("vswitchd binaries not configured".into())
                    })?;
                    let d = dir_path.join(format!("h{}", side.tag));
                    std::fs::create_dir(&d).map_err(|source| Error::Io {
                        context: format!("creating {}", d.display()),
                        source,
                    })?;
                    let (end, pid) =
                        vswitchd_side(host, side, bins, variant, env, &d, &mut cleanup)?;
                    busy.push(pid);
                    end
                }
                Variant::OvsNoTso | Variant::OvsTso => {
                    let bins = env
                        .ovs
                        .as_ref()
                        .ok_or_else(|| Error::Unexpected("openvswitch not installed".into()))?;
                    let d = dir_path.join(format!("h{}", side.tag));
                    std::fs::create_dir(&d).map_err(|source| Error::Io {
                        context: format!("creating {}", d.display()),
                        source,
                    })?;
                    let tso = variant == Variant::OvsTso;
                    let ovs = Ovs::start(host, bins, tso, &d, &mut cleanup)?;
                    let end = ovs_side(host, side, &ovs, variant, env, &mut cleanup)?;
                    // It says so once it has a datapath (after the first bridge).
                    if tso && !ovs.tso_enabled() {
                        return Err(Error::Unexpected(format!(
                            "ovs-vswitchd did not log that userspace TSO is enabled (see {})",
                            ovs.log().display()
                        )));
                    }
                    end
                }
            };
            ends.push(end);
        }
        match variant {
            Variant::Kernel => {}
            Variant::Vswitchd | Variant::VswitchdSocket | Variant::VswitchdRt => {
                notes.push(format!(
                    "vswitchd: overlay network `ov` (VNI {VNI}) on each host, sandboxes made by \
                     the daemons, addresses from their IPAM ({} and {})",
                    ends[0].addr, ends[1].addr
                ));
                let backends: Vec<String> = SIDES
                    .iter()
                    .map(|side| {
                        let log = dir_path.join(format!("h{}", side.tag)).join("vswitchd.log");
                        vtep_backend_in_log(&std::fs::read_to_string(log).unwrap_or_default())
                            .unwrap_or("unknown")
                            .to_string()
                    })
                    .collect();
                notes.push(format!(
                    "vswitchd VTEP backend (--vtep-backend {}): {} (hA), {} (hB)",
                    if variant == Variant::VswitchdSocket {
                        "socket"
                    } else {
                        "auto"
                    },
                    backends[0],
                    backends[1]
                ));
            }
            Variant::OvsNoTso | Variant::OvsTso => {
                if variant.needs_host_tx_offload_off() {
                    notes.push(
                        "sandboxes' eth0: tx offload off (ethtool -K eth0 tx off, as OVS's own \
                         userspace tests do)"
                            .to_string(),
                    );
                }
                notes.push(
                    "ovs: br-int (sandbox veth + vxlan port) and br-phy (underlay veth, holds \
                     the VTEP address) on the netdev datapath in each host"
                        .to_string(),
                );
            }
        }
        let server = ends.pop().expect("two sides");
        let client = ends.pop().expect("two sides");
        Ok(Deployment {
            client,
            server,
            connect_to: None,
            notes,
            // The kernel's work is in the iperf3 ends and softirq; OVS's daemons are not
            // tracked.
            busy: (!variant.is_ovs()).then_some(busy),
            workdir: dir_path,
            cleanup,
        })
    }
}

/// The VTEP backend a vswitchd log says it opened (`VXLAN endpoint open … backend="tap"`).
fn vtep_backend_in_log(log: &str) -> Option<&'static str> {
    let line = log.lines().find(|l| l.contains("VXLAN endpoint open"))?;
    if line.contains("backend=\"tap\"") {
        Some("tap")
    } else if line.contains("backend=\"socket\"") {
        Some("socket")
    } else {
        None
    }
}

/// `ip -n NS ARGS`.
fn ip(ns: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(["-n", ns]).args(args)).map(drop)
}

/// A sandbox namespace of the run with `eth0` (MTU [`INNER_MTU`], the side's inner address),
/// its peer `s0` (same MTU, up) left in the host for the switch to take.
fn plain_sandbox(host: &str, side: Side, env: &Env, cleanup: &mut Cleanup) -> Result<Endpoint> {
    let sb = Netns::create(&format!("{}-s{}", env.prefix, side.tag))?;
    let name = sb.name().to_string();
    cleanup.push(sb);
    let mtu = INNER_MTU.to_string();
    ip(
        host,
        &[
            "link", "add", "s0", "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu,
            "netns", &name,
        ],
    )?;
    let addr = format!("{}/{INNER_LEN}", side.inner);
    ip(&name, &["addr", "add", &addr, "dev", "eth0"])?;
    ip(&name, &["link", "set", "eth0", "up"])?;
    ip(host, &["link", "set", "s0", "up"])?;
    Ok(Endpoint {
        netns: name,
        addr: side.inner,
    })
}

/// Kernel: `br0` with the kernel VXLAN device and the sandbox's veth.
fn kernel_side(host: &str, side: Side, env: &Env, cleanup: &mut Cleanup) -> Result<Endpoint> {
    let end = plain_sandbox(host, side, env, cleanup)?;
    let (local, remote, vni) = (
        side.underlay.to_string(),
        side.peer.to_string(),
        VNI.to_string(),
    );
    ip(host, &["link", "add", "br0", "type", "bridge"])?;
    ip(
        host,
        &[
            "link", "add", "vx0", "type", "vxlan", "id", &vni, "dstport", "4789", "local", &local,
            "remote", &remote, "dev", "u0",
        ],
    )?;
    for port in ["vx0", "s0"] {
        ip(host, &["link", "set", port, "master", "br0"])?;
        ip(host, &["link", "set", port, "up"])?;
    }
    ip(host, &["link", "set", "br0", "up"])?;
    Ok(end)
}

/// vswitchd: the daemon in the host, an overlay network, a sandbox of its own connected to it.
fn vswitchd_side(
    host: &str,
    side: Side,
    bins: &VswitchBins,
    variant: Variant,
    env: &Env,
    dir: &Path,
    cleanup: &mut Cleanup,
) -> Result<(Endpoint, u32)> {
    let backend = if variant == Variant::VswitchdSocket {
        "socket"
    } else {
        "auto"
    };
    let socket = dir.join("vswitchd.sock");
    // The VTEP on the underlay address: the TAP backend needs a concrete one (the outer source).
    let vtep = format!("{}:4789", side.underlay);
    let daemon = spawn_vswitchd_with(
        host,
        bins,
        &socket,
        &dir.join("state"),
        &dir.join("vswitchd.log"),
        &[
            &["--vtep", &vtep, "--vtep-backend", backend],
            variant.vswitchd_args(),
        ]
        .concat(),
    )?;
    let pid = daemon.pid();
    cleanup.push(daemon);
    let ctl = |args: &[&str]| vswitchctl(bins, &socket, args);
    let (vni, peer) = (VNI.to_string(), side.peer.to_string());
    ctl(&[
        "network",
        "create",
        "ov",
        "--driver",
        "overlay",
        "--vni",
        &vni,
        "--subnet",
        Overlay::INNER_SUBNET,
        "--ip-range",
        side.ip_range,
        "--peer",
        &peer,
    ])?;
    let name = format!("{}-ov{}", env.prefix, side.tag);
    // The guard first: whatever happens from here, the sandbox is removed.
    cleanup.push(VswitchSandbox::guard(&name, bins, &socket));
    ctl(&["sandbox", "create", &name])?;
    let out = ctl(&["--json", "network", "connect", "ov", &name])?;
    let addr = connect_address(&out)?;
    Ok((Endpoint { netns: name, addr }, pid))
}

/// The address in `network connect --json`'s output (`"ipv4": "10.79.0.16/24"`).
fn connect_address(out: &str) -> Result<Ipv4Addr> {
    let v: Value = serde_json::from_str(out).map_err(|e| {
        Error::Unexpected(format!(
            "network connect --json printed bad JSON ({e}): {out}"
        ))
    })?;
    v.get("ipv4")
        .and_then(Value::as_str)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::Unexpected(format!(
                "network connect --json: no \"ipv4\" address in {out}"
            ))
        })
}

/// Open vSwitch userspace tunnelling on one host (see the module documentation).
fn ovs_side(
    host: &str,
    side: Side,
    ovs: &Ovs,
    variant: Variant,
    env: &Env,
    cleanup: &mut Cleanup,
) -> Result<Endpoint> {
    let end = plain_sandbox(host, side, env, cleanup)?;
    if variant.needs_host_tx_offload_off() {
        ethtool::set_tx_offload(&end.netns, "eth0", false)?;
    }
    // br-phy takes the underlay veth and, on its internal port (a TAP OVS makes in the host,
    // given the veth's MAC), the VTEP address: the kernel's route to the underlay subnet then
    // points at br-phy, which is what OVS's tunnel route table caches.
    let mac = link_mac(host, "u0")?;
    ovs.vsctl(&[
        "add-br",
        "br-phy",
        "--",
        "set",
        "bridge",
        "br-phy",
        "datapath_type=netdev",
        &format!("other_config:hwaddr={mac}"),
    ])?;
    ovs.vsctl(&["add-port", "br-phy", "u0"])?;
    let addr = format!("{}/{UNDERLAY_LEN}", side.underlay);
    ip(host, &["addr", "add", &addr, "dev", "br-phy"])?;
    ip(host, &["link", "set", "br-phy", "up"])?;

    let (remote, key) = (
        format!("options:remote_ip={}", side.peer),
        format!("options:key={VNI}"),
    );
    ovs.vsctl(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "bridge",
        "br-int",
        "datapath_type=netdev",
    ])?;
    ovs.vsctl(&["add-port", "br-int", "s0"])?;
    ovs.vsctl(&[
        "add-port",
        "br-int",
        "vx0",
        "--",
        "set",
        "interface",
        "vx0",
        "type=vxlan",
        &remote,
        &key,
    ])?;

    // OVS reads the kernel's routes of its namespace; wait for the underlay route to be there,
    // and add it by hand if it does not come.
    let subnet = format!("{}/{UNDERLAY_LEN}", network_of(side.underlay, UNDERLAY_LEN));
    let has_route = || -> Result<bool> {
        let table = ovs.appctl(&["ovs/route/show"])?;
        Ok(table
            .lines()
            .any(|l| l.contains(&subnet) && l.contains("br-phy")))
    };
    if wait_until("OVS to cache the underlay route", ROUTE_TIMEOUT, has_route).is_err() {
        ovs.appctl(&["ovs/route/add", &subnet, "br-phy"])?;
        if !has_route()? {
            return Err(Error::Unexpected(format!(
                "OVS's tunnel route table has no route to {subnet} via br-phy"
            )));
        }
    }
    Ok(end)
}

/// A link's MAC address, from `ip -j link show`.
fn link_mac(ns: &str, ifname: &str) -> Result<String> {
    let out = run(Command::new("ip").args(["-n", ns, "-j", "link", "show", ifname]))?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| Error::Unexpected(format!("ip -j link show {ifname}: bad JSON ({e})")))?;
    v.get(0)
        .and_then(|l| l.get("address"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Unexpected(format!("ip -j link show {ifname}: no address")))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The network address of `addr`/`len`.
fn network_of(addr: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_output_gives_the_address() {
        let out = r#"{"endpoint":"e1","network":"ov","sandbox":"s","interface":"eth0",
                      "ipv4":"10.79.0.16/24","mac":"02:42:0a:4f:00:10"}"#;
        assert_eq!(connect_address(out).unwrap(), Ipv4Addr::new(10, 79, 0, 16));
        assert!(connect_address(r#"{"ipv4":null}"#).is_err());
        assert!(connect_address("not json").is_err());
    }

    #[test]
    fn the_backend_is_read_from_the_log() {
        let log = "x\n2026 INFO VXLAN endpoint open addr=10.78.0.1:4789 mtu=1500 backend=\"tap\"\n";
        assert_eq!(vtep_backend_in_log(log), Some("tap"));
        assert_eq!(
            vtep_backend_in_log("VXLAN endpoint open backend=\"socket\""),
            Some("socket")
        );
        assert_eq!(vtep_backend_in_log("nothing"), None);
    }

    #[test]
    fn finds_bytes() {
        assert!(contains(b"xx Tunneling packets yy", b"Tunneling"));
        assert!(!contains(b"Tunnel", b"Tunneling"));
        assert!(!contains(b"abc", b""));
    }

    #[test]
    fn underlay_subnet() {
        assert_eq!(
            network_of(Overlay::UNDERLAY_B, 24),
            Ipv4Addr::new(10, 78, 0, 0)
        );
        assert_eq!(network_of(Overlay::UNDERLAY_B, 0), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn the_sides_do_not_overlap() {
        assert_ne!(SIDES[0].ip_range, SIDES[1].ip_range);
        assert_eq!(SIDES[0].peer, SIDES[1].underlay);
        assert_eq!(SIDES[1].peer, SIDES[0].underlay);
    }
}
