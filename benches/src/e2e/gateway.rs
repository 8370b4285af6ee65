//! The gateway scenario: a sandbox and an "outside" namespace, through the host's routing and
//! nftables NAT, TCP only, in two directions measured as two tables:
//!
//! - `gateway-nat`: from the sandbox to the outside server, masqueraded as the host's uplink
//!   address;
//! - `gateway-publish`: from the outside to the host's uplink address, port
//!   [`IPERF_PORT`](super::measure::IPERF_PORT), DNAT to the sandbox (a published port).
//!
//! ```text
//! sandbox 10.79.0.2/24 ══ switch ══ gateway 10.79.0.1 │ host: forwarding, NAT │ up0 10.78.0.1/24 ══veth══ outside 10.78.0.2/24
//! ```
//!
//! Built two ways in the host namespace `vsb<pid>-gh` (the outside is `vsb<pid>-go`):
//! - `kernel`: Docker's own recipe: a Linux bridge `br0` holding the gateway, the sandbox's veth
//!   on it, IPv4 forwarding on and an nftables table with the same NAT (masquerade out of the
//!   subnet unless it goes back to `br0`, DNAT of the published port from outside and from the
//!   host, forward accepted);
//! - `vswitchd`: the daemon in the host (`nsenter --net`), `network create gw --subnet
//!   10.79.0.0/24`, a sandbox it makes, `network connect gw SB [-p 10.78.0.1:5201:5201]`: the
//!   daemon turns forwarding on and writes `table inet vswitch` itself.
//!
//! The outside has no route to 10.79.0.0/24: only NATed traffic is answered.

use super::cleanup::{Cleanup, TempDir};
use super::measure::IPERF_PORT;
use super::netns::Netns;
use super::proc::{in_netns, run};
use super::scenario::{Deployment, Endpoint, Env, Scenario};
use super::switches::{spawn_vswitchd_in, vswitchctl, Variant, VswitchSandbox};
use super::{Error, Result};
use serde_json::Value;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The host's uplink address.
const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// The outside server's address.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
/// The sandboxes' subnet, gateway and (kernel) sandbox address.
const SUBNET: &str = "10.79.0.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const SANDBOX: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);

/// One direction through the gateway.
pub struct Gateway {
    /// Into a published port (else out through masquerade).
    pub inbound: bool,
}

impl Scenario for Gateway {
    fn name(&self) -> &'static str {
        if self.inbound {
            "gateway-publish"
        } else {
            "gateway-nat"
        }
    }

    fn describe(&self) -> String {
        format!(
            "sandbox {SANDBOX}/24 ══ switch ══ gateway {GATEWAY} | host (forwarding, nftables NAT) \
             | up0 {UPLINK}/24 ══veth══ outside {OUTSIDE}/24"
        )
    }

    fn path(&self) -> &'static str {
        if self.inbound {
            "outside → host:5201 (DNAT) → sandbox"
        } else {
            "sandbox → outside (masquerade)"
        }
    }

    fn skip_reason(&self, variant: Variant, _env: &Env) -> Option<String> {
        (variant.is_ovs() || variant == Variant::VswitchdRt)
            .then(|| "not part of the gateway scenario (kernel recipe and vswitchd)".to_string())
    }

    fn tcp_only(&self) -> bool {
        true
    }

    fn setup(&self, variant: Variant, env: &Env) -> Result<Deployment> {
        let mut cleanup = Cleanup::new();
        let host = Netns::create(&format!("{}-gh", env.prefix))?;
        let outside = Netns::create(&format!("{}-go", env.prefix))?;
        let (h, o) = (host.name().to_string(), outside.name().to_string());
        cleanup.push(host);
        cleanup.push(outside);
        ip(
            &h,
            &[
                "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &o,
            ],
        )?;
        ip(&h, &["addr", "add", &format!("{UPLINK}/24"), "dev", "up0"])?;
        ip(
            &o,
            &["addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"],
        )?;
        ip(&h, &["link", "set", "up0", "up"])?;
        ip(&o, &["link", "set", "eth0", "up"])?;
        let dir = TempDir::create(
            env.workdir
                .join(format!("{}-{}", self.name(), variant.key())),
        )?;
        let dir_path = dir.path().to_path_buf();
        cleanup.push(dir);

        let (sandbox, notes) = match variant {
            Variant::Kernel => {
                let sb = Netns::create(&format!("{}-gsb", env.prefix))?;
                let name = sb.name().to_string();
                cleanup.push(sb);
                kernel_recipe(&h, &name)?;
                let note = "Docker's recipe: br0 holds the gateway, forwarding on, \
                            nftables masquerade and DNAT (table ip bench_docker)";
                (
                    Endpoint {
                        netns: name,
                        addr: SANDBOX,
                    },
                    vec![note.to_string()],
                )
            }
            Variant::Vswitchd => {
                let bins = env
                    .vswitch
                    .as_ref()
                    .ok_or_else(|| Error::Unexpected("vswitchd binaries not configured".into()))?;
                let socket = dir_path.join("vswitchd.sock");
                let daemon = spawn_vswitchd_in(
                    &h,
                    bins,
                    &socket,
                    &dir_path.join("state"),
                    &dir_path.join("vswitchd.log"),
                )?;
                cleanup.push(daemon);
                let ctl = |args: &[&str]| vswitchctl(bins, &socket, args);
                ctl(&["network", "create", "gw", "--subnet", SUBNET])?;
                let name = format!("{}-gsb", env.prefix);
                cleanup.push(VswitchSandbox::guard(&name, bins, &socket));
                ctl(&["sandbox", "create", &name])?;
                let publish = format!("{UPLINK}:{IPERF_PORT}:{IPERF_PORT}");
                let mut args = vec!["--json", "network", "connect", "gw", &name];
                if self.inbound {
                    args.extend(["--publish", &publish]);
                }
                let out = ctl(&args)?;
                let addr = connect_address(&out)?;
                let note = "bridge network gw, the daemon's table inet vswitch";
                (Endpoint { netns: name, addr }, vec![note.to_string()])
            }
            other => {
                return Err(Error::Unexpected(format!(
                    "{} is not part of the gateway scenario",
                    other.label()
                )))
            }
        };
        let outside_end = Endpoint {
            netns: o,
            addr: OUTSIDE,
        };
        let (client, server, connect_to) = if self.inbound {
            (outside_end, sandbox, Some(UPLINK))
        } else {
            (sandbox, outside_end, None)
        };
        Ok(Deployment {
            client,
            server,
            connect_to,
            notes,
            busy: None,
            workdir: dir_path,
            cleanup,
        })
    }
}

/// Docker's recipe in the host namespace `h`, the sandbox namespace `sb` behind it.
fn kernel_recipe(h: &str, sb: &str) -> Result<()> {
    ip(h, &["link", "add", "br0", "type", "bridge"])?;
    ip(h, &["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"])?;
    ip(h, &["link", "set", "br0", "up"])?;
    ip(
        h,
        &[
            "link", "add", "vb1", "type", "veth", "peer", "name", "eth0", "netns", sb,
        ],
    )?;
    ip(h, &["link", "set", "vb1", "master", "br0"])?;
    ip(h, &["link", "set", "vb1", "up"])?;
    ip(
        sb,
        &["addr", "add", &format!("{SANDBOX}/24"), "dev", "eth0"],
    )?;
    ip(sb, &["link", "set", "eth0", "up"])?;
    ip(
        sb,
        &["route", "add", "default", "via", &GATEWAY.to_string()],
    )?;
    run(in_netns(h, "sysctl").args(["-q", "-w", "net.ipv4.ip_forward=1"]))?;
    let p = IPERF_PORT;
    let rules = format!(
        "table ip bench_docker {{
  chain prerouting {{ type nat hook prerouting priority -100;
    fib daddr type local tcp dport {p} dnat to {SANDBOX}:{p}
  }}
  chain output {{ type nat hook output priority -100;
    fib daddr type local ip daddr != 127.0.0.0/8 tcp dport {p} dnat to {SANDBOX}:{p}
  }}
  chain postrouting {{ type nat hook postrouting priority 100;
    ip saddr {SUBNET} oifname != \"br0\" masquerade
  }}
  chain forward {{ type filter hook forward priority 0; policy accept;
  }}
}}
"
    );
    let mut child = in_netns(h, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Unexpected(format!("running nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| Error::Unexpected(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Unexpected(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: "nft -f - (Docker's recipe)".into(),
            status: out.status.to_string(),
            detail: format!(": {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// `ip -n NS ARGS`.
fn ip(ns: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(["-n", ns]).args(args)).map(drop)
}

/// The address in `network connect --json`'s output.
fn connect_address(out: &str) -> Result<Ipv4Addr> {
    serde_json::from_str::<Value>(out)
        .ok()
        .and_then(|v| {
            v.get("ipv4")
                .and_then(Value::as_str)
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse().ok())
        })
        .ok_or_else(|| Error::Unexpected(format!("network connect --json: no address in {out}")))
}
