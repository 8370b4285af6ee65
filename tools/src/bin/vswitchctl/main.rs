//! `vswitchctl`: the command line for vswitchd.
//!
//! Each invocation builds one [`Request`] from its arguments, sends it over the daemon's unix
//! socket with [`api::call`], and prints the answer: aligned tables a person reads by default,
//! the daemon's `result` JSON unchanged with `--json`.
//!
//! Exit status: 0 on success, 1 when vswitchd refuses the request or cannot be reached, 2 on a
//! usage error (clap, including the value checks in [`args`]). A refusal's kind (`not_found`,
//! `conflict`, `invalid`, `internal`) is in the daemon's answer for programs that use the API;
//! the CLI prints the message and keeps exit status 1 for all of them (see [`EXIT_STATUS`]).

mod args;
mod cluster;
mod dns;
mod fdb;
mod nat;
mod network;
mod output;
mod port;
mod sandbox;
mod stats;
mod trace;

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tools::api::{self, Request, DEFAULT_SOCKET};

/// What `--help` says about the exit status.
const EXIT_STATUS: &str = "Exit status: 0 on success; 1 when vswitchd refuses the request \
(whether what it names is not found, clashes with what exists, is invalid, or the daemon failed: \
the message on stderr says which) or cannot be reached; 2 on a usage error.";

/// The command line: global options and one subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "vswitchctl",
    version,
    about = "Control vswitchd: ports, the MAC table, counters, networks and sandboxes",
    after_help = EXIT_STATUS,
    arg_required_else_help = true
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "VSWITCH_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    socket: PathBuf,
    /// Print the daemon's result as JSON, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The subcommand groups, one module each.
#[derive(Debug, Subcommand)]
enum Command {
    /// Attach, detach and list switch ports.
    #[command(subcommand)]
    Port(port::PortCmd),
    /// Show and change the MAC table (forwarding database).
    #[command(subcommand)]
    Fdb(fdb::FdbCmd),
    /// Per-port packet and byte counters, and drops by reason.
    Stats(stats::StatsArgs),
    /// Create, remove, list and inspect networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Create, remove and list sandboxes (network namespaces).
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCmd),
    /// The embedded DNS server of the sandboxes (127.0.0.11): its counters.
    #[command(subcommand)]
    Dns(dns::DnsCmd),
    /// Run a frame through the pipeline without side effects, or watch real frames (--live).
    Trace(trace::TraceArgs),
    /// Write the frames a port receives and sends to a pcap file.
    Capture(trace::CaptureArgs),
    /// What the L3 edge programs: outbound NAT, published ports, isolation (nftables).
    #[command(subcommand)]
    Nat(nat::NatCmd),
    /// The cluster vswitchd joined with --cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
}

impl Command {
    /// The request this command sends to vswitchd.
    fn request(&self) -> Request {
        match self {
            Command::Port(c) => c.request(),
            Command::Fdb(c) => c.request(),
            Command::Stats(c) => c.request(),
            Command::Network(c) => c.request(),
            Command::Sandbox(c) => c.request(),
            Command::Dns(c) => c.request(),
            Command::Trace(c) => c.request(),
            Command::Capture(c) => c.request(),
            Command::Nat(c) => c.request(),
            Command::Cluster(c) => c.request(),
        }
    }

    /// What a person reads for a successful `result` (may be empty).
    fn render(&self, result: &Value) -> String {
        match self {
            Command::Port(c) => c.render(result),
            Command::Fdb(c) => c.render(result),
            Command::Stats(c) => c.render(result),
            Command::Network(c) => c.render(result),
            Command::Sandbox(c) => c.render(result),
            Command::Dns(c) => c.render(result),
            Command::Trace(c) => c.render(result),
            Command::Capture(_) => String::new(),
            Command::Nat(c) => c.render(result),
            Command::Cluster(c) => c.render(result),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Streaming commands print as they go.
    match &cli.command {
        Command::Trace(t) if t.is_live() => {
            return finish(trace::live(&cli.socket, &t.request(), cli.json))
        }
        Command::Capture(c) => {
            return match c.run(&cli.socket) {
                Ok((resp, n)) => {
                    let done = finish(Ok(resp));
                    if done == ExitCode::SUCCESS {
                        eprintln!("{n} frames written to {}", c.file().display());
                    }
                    done
                }
                Err(e) => finish(Err(e)),
            };
        }
        _ => {}
    }
    let response = match api::call(&cli.socket, &cli.command.request()) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            return ExitCode::from(1);
        }
    };
    if !response.ok {
        let error = response
            .error
            .as_deref()
            .unwrap_or("vswitchd refused the request without saying why");
        eprintln!("vswitchctl: {error}");
        return ExitCode::from(1);
    }
    let text = match (&response.result, cli.json) {
        (None, _) => String::new(),
        (Some(result), true) => output::json(result),
        (Some(result), false) => cli.command.render(result),
    };
    write_stdout(&text)
}

/// The exit status of a streaming command: 0, or 1 with the error on stderr.
fn finish(resp: io::Result<api::Response>) -> ExitCode {
    match resp {
        Ok(r) if r.ok => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!(
                "vswitchctl: {}",
                r.error.as_deref().unwrap_or("vswitchd refused the request")
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes `text` to stdout; a closed pipe (`vswitchctl … | head`) is not an error.
fn write_stdout(text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchctl: writing output: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use tools::api::{NetworkSpec, PortType};

    /// Parses `vswitchctl ARGS…` and returns the request it would send.
    fn req(args: &[&str]) -> Request {
        let argv = std::iter::once("vswitchctl").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
            .request()
    }

    /// The clap error kind for `vswitchctl ARGS…`, which must not parse.
    fn reject(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("vswitchctl").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => panic!("{args:?} parsed as {cli:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options() {
        let cli =
            Cli::try_parse_from(["vswitchctl", "--socket", "/tmp/s", "port", "list"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
        assert!(!cli.json);
        // Global options may also follow the subcommand.
        let cli = Cli::try_parse_from(["vswitchctl", "port", "list", "--json"]).unwrap();
        assert!(cli.json);
        // Usage errors exit 2 (clap's convention).
        assert_eq!(reject(&["bogus"]).exit_code(), 2);
        assert_eq!(reject(&["port", "add"]).exit_code(), 2);
    }

    #[test]
    fn port_requests() {
        assert_eq!(
            req(&["port", "add", "veth1"]),
            Request::PortAdd {
                name: "veth1".into(),
                network: None,
                port_type: PortType::System,
                vlan: None,
                trunks: None,
            }
        );
        assert_eq!(
            req(&[
                "port",
                "add",
                "tap0",
                "--network",
                "blue",
                "--type",
                "tap",
                "--vlan",
                "10",
                "--trunks",
                "20,30",
                "--trunks",
                "40",
            ]),
            Request::PortAdd {
                name: "tap0".into(),
                network: Some("blue".into()),
                port_type: PortType::Tap,
                vlan: Some(10),
                trunks: Some(vec![20, 30, 40]),
            }
        );
        assert_eq!(
            req(&["port", "remove", "veth1"]),
            Request::PortRemove {
                name: "veth1".into()
            }
        );
        assert_eq!(req(&["port", "list"]), Request::PortList {});
    }

    #[test]
    fn bad_port_arguments_are_rejected() {
        for bad in [
            &["port", "add", "v", "--vlan", "0"][..],
            &["port", "add", "v", "--vlan", "4095"],
            &["port", "add", "v", "--vlan", "ten"],
            &["port", "add", "v", "--trunks", "10,5000"],
            &["port", "add", "v", "--type", "internal"],
            &["port", "add", "a-name-longer-than-15"],
            &["port", "add", "a/b"],
            &["port", "remove"],
        ] {
            let e = reject(bad);
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        let msg = reject(&["port", "add", "v", "--vlan", "5000"]).to_string();
        assert!(msg.contains("1-4094"), "{msg}");
    }

    #[test]
    fn fdb_requests() {
        assert_eq!(req(&["fdb", "show"]), Request::FdbShow { network: None });
        assert_eq!(
            req(&["fdb", "show", "--network", "blue"]),
            Request::FdbShow {
                network: Some("blue".into())
            }
        );
        // MACs are sent in canonical form.
        assert_eq!(
            req(&["fdb", "add", "02-42-AC-11-00-02", "veth1", "--vlan", "7"]),
            Request::FdbAdd {
                mac: "02:42:ac:11:00:02".into(),
                port: "veth1".into(),
                vlan: Some(7),
            }
        );
        assert_eq!(
            req(&["fdb", "del", "02:42:ac:11:00:02", "--network", "blue"]),
            Request::FdbDel {
                mac: "02:42:ac:11:00:02".into(),
                network: Some("blue".into()),
            }
        );
        assert_eq!(req(&["fdb", "flush"]), Request::FdbFlush { network: None });
    }

    #[test]
    fn bad_macs_are_rejected() {
        for mac in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "0242ac110002",
        ] {
            let e = reject(&["fdb", "add", mac, "veth1"]);
            assert_eq!(e.exit_code(), 2, "{mac:?}");
        }
        let msg = reject(&["fdb", "del", "nope"]).to_string();
        assert!(msg.contains("invalid MAC address"), "{msg}");
        assert_eq!(
            reject(&["fdb", "add", "02:42:ac:11:00:02", "p", "--vlan", "4095"]).exit_code(),
            2
        );
    }

    #[test]
    fn stats_requests() {
        assert_eq!(req(&["stats"]), Request::Stats { port: None });
        assert_eq!(
            req(&["stats", "veth1"]),
            Request::Stats {
                port: Some("veth1".into())
            }
        );
    }

    #[test]
    fn network_requests() {
        assert_eq!(
            req(&["network", "create", "n"]),
            Request::NetworkCreate(NetworkSpec {
                name: "n".into(),
                ..NetworkSpec::default()
            })
        );
        assert_eq!(
            req(&["network", "create", "n", "--peer", "10.0.0.1", "--peer", "10.0.0.2"]),
            Request::NetworkCreate(NetworkSpec {
                name: "n".into(),
                peers: vec!["10.0.0.1".into(), "10.0.0.2".into()],
                ..NetworkSpec::default()
            })
        );
        assert_eq!(
            req(&[
                "network",
                "create",
                "ov",
                "--driver",
                "overlay",
                "--subnet",
                "10.10.0.0/24",
                "--gateway",
                "10.10.0.1",
                "--ip-range",
                "10.10.0.128/25",
                "--vni",
                "4242",
                "--peer",
                "192.0.2.2",
                "--mtu",
                "1450",
                "--internal",
            ]),
            Request::NetworkCreate(NetworkSpec {
                name: "ov".into(),
                driver: Some("overlay".into()),
                subnet: Some("10.10.0.0/24".into()),
                gateway: Some("10.10.0.1".into()),
                ip_range: Some("10.10.0.128/25".into()),
                vni: Some(4242),
                peers: vec!["192.0.2.2".into()],
                parent: None,
                mtu: Some(1450),
                internal: true,
                ..NetworkSpec::default()
            })
        );
        assert_eq!(
            req(&["network", "create", "mv", "-d", "macvlan", "--parent", "eth0"]),
            Request::NetworkCreate(NetworkSpec {
                name: "mv".into(),
                driver: Some("macvlan".into()),
                parent: Some("eth0".into()),
                ..NetworkSpec::default()
            })
        );
        for driver in ["bridge", "overlay", "macvlan", "host", "none"] {
            let Request::NetworkCreate(spec) = req(&["network", "create", "x", "--driver", driver])
            else {
                panic!("not a create")
            };
            assert_eq!(spec.driver.as_deref(), Some(driver));
        }
        assert_eq!(
            req(&["network", "rm", "n"]),
            Request::NetworkRm { name: "n".into() }
        );
        assert_eq!(req(&["network", "ls"]), Request::NetworkLs {});
        assert_eq!(
            req(&["network", "inspect", "n"]),
            Request::NetworkInspect { name: "n".into() }
        );
    }

    #[test]
    fn bad_network_arguments_are_rejected() {
        for bad in [
            &["network", "create", "n", "--driver", "ipvlan"][..],
            &["network", "create", "n", "--vni", "0"],
            &["network", "create", "n", "--vni", "16777216"],
            &["network", "create", "n", "--subnet", "10.0.0.0"],
            &["network", "create", "n", "--subnet", "10.0.0.0/33"],
            &["network", "create", "n", "--subnet", "10.0.0/24"],
            &["network", "create", "n", "--ip-range", "fd00::/129"],
            &["network", "create", "n", "--gateway", "10.0.0.256"],
            &["network", "create", "n", "--peer", "host.example"],
            &["network", "create", "n", "--mtu", "20"],
            &[
                "network",
                "create",
                "n",
                "--parent",
                "a-name-longer-than-15",
            ],
            &["network", "create"],
            &["network", "inspect"],
        ] {
            assert_eq!(reject(bad).exit_code(), 2, "{bad:?}");
        }
        assert!(reject(&["network", "create", "n", "--vni", "0"])
            .to_string()
            .contains("1-16777215"));
        // The edges of the VNI range are accepted, IPv6 too.
        req(&["network", "create", "n", "--vni", "1"]);
        req(&["network", "create", "n", "--vni", "16777215"]);
        req(&[
            "network",
            "create",
            "n",
            "--subnet",
            "fd00:1::/64",
            "--peer",
            "fd00::2",
        ]);
    }
}
