//! A scenario is a topology: a setup function that builds it with a given switch variant and
//! hands back where to measure from and to, and a teardown function that removes all of it.
//!
//! [`Flat`]: two hosts on one switch. [`Overlay`](super::overlay::Overlay) (in its own module):
//! two host namespaces joined by an underlay veth, a sandbox behind a switch in each, the
//! sandboxes' traffic carried over VXLAN between the hosts; it implements [`Scenario`] the same
//! way and the harness measures it with the same code, as does
//! [`Gateway`](super::gateway::Gateway) (a sandbox and the outside, through the host's NAT).

use super::cleanup::{Cleanup, TempDir};
use super::ethtool;
use super::netns::Netns;
use super::proc::run;
use super::switches::{self, OvsBins, Variant, VswitchBins};
use super::{Error, Result};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// What the scenarios need from the run.
pub struct Env {
    /// Prefix of every namespace name: `vsb<pid>`.
    pub prefix: String,
    /// The run's temp dir (daemon sockets, state and logs go in subdirectories).
    pub workdir: PathBuf,
    /// vswitchd and vswitchctl, when the vswitchd row is selected.
    pub vswitch: Option<VswitchBins>,
    /// Open vSwitch, when installed and selected.
    pub ovs: Option<OvsBins>,
}

/// A host end of the topology: a namespace and its address.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host's namespace.
    pub netns: String,
    /// The host's IPv4 address.
    pub addr: Ipv4Addr,
}

/// A topology that is up: measure from `client` to `server`, then hand it back to
/// [`Scenario::teardown`] (or drop it: the same cleanup runs).
pub struct Deployment {
    /// The host that sends (iperf3 client, ping-pong client).
    pub client: Endpoint,
    /// The host that receives (iperf3 server, echo server).
    pub server: Endpoint,
    /// Where the client connects when it is not the server's own address (a published port:
    /// the host's address, DNAT to the server).
    pub connect_to: Option<Ipv4Addr>,
    /// Remarks about the setup, for the report.
    pub notes: Vec<String>,
    /// The switch's processes whose CPU time the TCP test adds to the iperf3 ends' (`None`:
    /// not tracked in this setup; empty: the switch is the kernel).
    pub busy: Option<Vec<u32>>,
    /// A directory for the measurements' files (removed with the deployment).
    pub workdir: PathBuf,
    /// Everything the setup made.
    pub cleanup: Cleanup,
}

/// A topology the harness can build with each switch variant.
pub trait Scenario {
    /// Its name in the report.
    fn name(&self) -> &'static str;
    /// One line describing it.
    fn describe(&self) -> String;
    /// The row name of `variant` in this scenario's table.
    fn label(&self, variant: Variant) -> String {
        variant.label().to_string()
    }
    /// What the traffic goes from and to, for the table's legend.
    fn path(&self) -> &'static str {
        "h1 → h2"
    }
    /// Why `variant` is not run in this scenario, if it is not (checked before any setup).
    fn skip_reason(&self, _variant: Variant, _env: &Env) -> Option<String> {
        None
    }
    /// For a best-effort variant, the name its failure to set up or to connect is reported
    /// under as a skip ("NAME: skipped (why)"), rather than as a failure of the run.
    fn best_effort(&self, _variant: Variant) -> Option<&'static str> {
        None
    }
    /// Whether `variant` has a row in this scenario's table (the socket VTEP only in the
    /// overlay).
    fn runs(&self, variant: Variant) -> bool {
        variant != Variant::VswitchdSocket
    }
    /// Only TCP is measured (the path carries a published TCP port, not the UDP probes).
    fn tcp_only(&self) -> bool {
        false
    }
    /// Builds it with `variant` as the switch.
    fn setup(&self, variant: Variant, env: &Env) -> Result<Deployment>;
    /// Removes everything `setup` made; returns every failure (teardown does not stop at one).
    fn teardown(&self, d: Deployment) -> Vec<Error> {
        d.cleanup.release_all()
    }
}

/// Two hosts, h1 and h2, each a namespace with one veth (`eth0`) to the switch namespace, where
/// the other ends (`p1`, `p2`) are the switch's ports.
pub struct Flat;

impl Flat {
    /// h1's address.
    pub const H1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    /// h2's address.
    pub const H2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    /// The hosts' prefix length.
    pub const PREFIX_LEN: u8 = 24;
}

impl Scenario for Flat {
    fn name(&self) -> &'static str {
        "flat"
    }

    fn describe(&self) -> String {
        format!(
            "h1 {}/{len} ══veth══ switch ══veth══ h2 {}/{len} (three namespaces, one host)",
            Flat::H1,
            Flat::H2,
            len = Flat::PREFIX_LEN
        )
    }

    fn setup(&self, variant: Variant, env: &Env) -> Result<Deployment> {
        let mut cleanup = Cleanup::new();
        let mut ns = |role: &str| -> Result<String> {
            let n = Netns::create(&format!("{}-{role}", env.prefix))?;
            let name = n.name().to_string();
            cleanup.push(n);
            Ok(name)
        };
        let h1 = ns("h1")?;
        let h2 = ns("h2")?;
        let sw = ns("sw")?;

        let ip = |netns: &str, args: &[&str]| {
            run(Command::new("ip").args(["-n", netns]).args(args)).map(drop)
        };
        for (host, port, addr) in [(&h1, "p1", Flat::H1), (&h2, "p2", Flat::H2)] {
            // Made in the switch namespace with its peer straight in the host's: no name is ever
            // taken in the namespace the harness runs in.
            ip(
                &sw,
                &[
                    "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host,
                ],
            )?;
            ip(
                host,
                &[
                    "addr",
                    "add",
                    &format!("{addr}/{}", Flat::PREFIX_LEN),
                    "dev",
                    "eth0",
                ],
            )?;
            ip(host, &["link", "set", "eth0", "up"])?;
            ip(&sw, &["link", "set", port, "up"])?;
        }
        let ports = ["p1", "p2"];
        let mut notes = Vec::new();
        if variant.needs_host_tx_offload_off() {
            for host in [&h1, &h2] {
                ethtool::set_tx_offload(host, "eth0", false)?;
            }
            notes.push(
                "hosts' eth0: tx offload off (ethtool -K eth0 tx off, as OVS's own userspace \
                 tests do), so TCP is segmented by the hosts' kernels"
                    .to_string(),
            );
        }

        let dir = TempDir::create(env.workdir.join(variant.key()))?;
        let dir_path = dir.path().to_path_buf();
        cleanup.push(dir);

        // The switch's processes, for the CPU figures: none for the kernel (its work is in the
        // hosts' system calls and softirq); OVS's daemons are not tracked.
        let mut busy = None;
        notes.extend(match variant {
            Variant::Kernel => {
                busy = Some(Vec::new());
                switches::kernel_bridge(&sw, &ports)?
            }
            Variant::Vswitchd | Variant::VswitchdSocket | Variant::VswitchdRt => {
                let bins = env
                    .vswitch
                    .as_ref()
                    .ok_or_else(|| Error::Unexpected("vswitchd binaries not configured".into()))?;
                let (notes, pid) = switches::vswitchd(
                    &sw,
                    &ports,
                    bins,
                    &dir_path,
                    variant.vswitchd_args(),
                    &mut cleanup,
                )?;
                busy = Some(vec![pid]);
                notes
            }
            Variant::OvsNoTso | Variant::OvsTso => {
                let bins = env
                    .ovs
                    .as_ref()
                    .ok_or_else(|| Error::Unexpected("openvswitch not installed".into()))?;
                let tso = variant == Variant::OvsTso;
                switches::ovs(&sw, &ports, bins, tso, &dir_path, &mut cleanup)?
            }
        });
        Ok(Deployment {
            client: Endpoint {
                netns: h1,
                addr: Flat::H1,
            },
            server: Endpoint {
                netns: h2,
                addr: Flat::H2,
            },
            connect_to: None,
            notes,
            busy,
            workdir: dir_path,
            cleanup,
        })
    }
}
