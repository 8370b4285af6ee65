//! The control API: one JSON request per line on the unix socket, one JSON response per line.
//!
//! ```text
//! → {"cmd":"port_add","name":"veth1","network":"bridge","type":"system"}
//! ← {"ok":true,"result":{...}}
//! ← {"ok":false,"error":"no such network: blue"}
//! ```
//! `vswitchctl` builds a [`Request`], `vswitchd` answers with a [`Response`]. Results are JSON
//! values in the shapes DESIGN.md fixes (`port list --json`, `fdb show --json`, …), so the CLI's
//! `--json` prints them as they come.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";
/// Where the daemon keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vswitch";
/// Longest request line the daemon reads.
pub const MAX_REQUEST_LEN: usize = 1 << 20;

/// How a port reaches its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PortType {
    /// An existing interface, through AF_PACKET (e.g. the host end of a veth).
    #[default]
    System,
    /// A TAP device the daemon creates (and deletes when the port is removed).
    Tap,
    /// The switch's own end of a network's gateway (created by the daemon).
    Internal,
    /// An overlay network's VXLAN port (created by the daemon).
    Vxlan,
}

impl std::fmt::Display for PortType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortType::System => "system",
            PortType::Tap => "tap",
            PortType::Internal => "internal",
            PortType::Vxlan => "vxlan",
        })
    }
}

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Attach an interface (or create a TAP) on a network.
    PortAdd {
        name: String,
        #[serde(default)]
        network: Option<String>,
        #[serde(default, rename = "type")]
        port_type: PortType,
        /// Access VLAN (default 1).
        #[serde(default)]
        vlan: Option<u16>,
        /// Make it a trunk carrying these VLANs (tagged).
        #[serde(default)]
        trunks: Option<Vec<u16>>,
    },
    /// Detach a port (a TAP the daemon made is deleted).
    PortRemove { name: String },
    /// Every port with its counters.
    PortList,
    /// The MAC table of one network, or of all.
    FdbShow {
        #[serde(default)]
        network: Option<String>,
    },
    /// A static MAC entry on a port.
    FdbAdd {
        mac: String,
        port: String,
        #[serde(default)]
        vlan: Option<u16>,
    },
    /// Remove a MAC from the table(s).
    FdbDel {
        mac: String,
        #[serde(default)]
        network: Option<String>,
    },
    /// Remove every learned entry.
    FdbFlush {
        #[serde(default)]
        network: Option<String>,
    },
    /// Counters of one port or all.
    Stats {
        #[serde(default)]
        port: Option<String>,
    },
    /// Create a network.
    NetworkCreate(NetworkSpec),
    /// Remove a network (refused while it has ports or endpoints).
    NetworkRm { name: String },
    /// List networks.
    NetworkLs,
    /// One network in detail, as `docker network inspect`.
    NetworkInspect { name: String },
    /// Connect a sandbox to a network: an endpoint (veth pair, address, routes).
    NetworkConnect {
        network: String,
        sandbox: String,
        #[serde(default)]
        ip: Option<String>,
    },
    /// Undo `network_connect`: remove the endpoint and release its address.
    NetworkDisconnect { network: String, sandbox: String },
    /// Add a VXLAN peer to an overlay network.
    NetworkPeerAdd { network: String, ip: String },
    /// Remove a VXLAN peer from an overlay network.
    NetworkPeerRm { network: String, ip: String },
    /// Create a sandbox: a network namespace at /run/netns/NAME (or adopt one).
    SandboxCreate {
        name: String,
        #[serde(default)]
        netns: Option<String>,
    },
    /// Remove a sandbox (its endpoints are disconnected first).
    SandboxRm { name: String },
    /// List sandboxes.
    SandboxLs,
    /// Run one frame through the pipeline with no side effects and say what each stage decided.
    Trace {
        in_port: String,
        /// The frame as hex bytes.
        #[serde(default)]
        frame: Option<String>,
        /// Or an Open vSwitch style flow spec to build it from.
        #[serde(default)]
        flow: Option<String>,
    },
    /// Stream the trace of real frames (one JSON line each) until `count`, or until the client
    /// hangs up.
    TraceLive {
        #[serde(default)]
        port: Option<String>,
        #[serde(default)]
        count: Option<u64>,
    },
    /// Stream the frames a port receives and sends (one JSON line each) until `count`, or until
    /// the client hangs up.
    Capture {
        port: String,
        #[serde(default)]
        count: Option<u64>,
    },
}

/// What `network create` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub vni: Option<u32>,
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub internal: bool,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success carrying `result`.
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure with a message for the user.
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

/// One row of `port list --json` (DESIGN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortRow {
    pub name: String,
    #[serde(rename = "type")]
    pub port_type: PortType,
    pub network: String,
    pub state: String,
    pub mtu: usize,
    pub vlan: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub drops: u64,
}

/// One row of `fdb show --json` (DESIGN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbRow {
    pub mac: String,
    pub port: String,
    pub vlan: u16,
    pub age_s: u64,
    #[serde(rename = "static")]
    pub is_static: bool,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// One port's counters for `stats --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    pub port: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub learn_refused: u64,
    /// Drops by reason (only reasons seen).
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// One row of `network ls --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRow {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub ports: usize,
}

/// One row of `sandbox ls --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRow {
    pub name: String,
    pub netns: String,
    /// Networks it is connected to, with the endpoint's address.
    pub endpoints: Vec<EndpointRow>,
}

/// One endpoint of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRow {
    pub network: String,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// One captured frame, as `capture` streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedFrame {
    /// Unix time in nanoseconds.
    pub ts_ns: u64,
    /// `rx` (received by the switch) or `tx` (sent by it).
    pub dir: String,
    /// The frame, hex.
    pub frame: String,
}

/// Sends one streaming request and calls `each` with every line that follows the first answer,
/// until the daemon ends the stream or `each` returns false.
pub fn stream(
    socket: &Path,
    req: &Request,
    mut each: impl FnMut(&serde_json::Value) -> bool,
) -> io::Result<Response> {
    let stream = send_request(socket, req)?;
    let mut reader = io::BufReader::new(&stream);
    let resp = read_response(&mut reader)?;
    if !resp.ok {
        return Ok(resp);
    }
    let mut next = String::new();
    loop {
        next.clear();
        if reader.read_line(&mut next)? == 0 {
            break;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&next) else {
            continue;
        };
        if v.get("end").is_some() || !each(&v) {
            break;
        }
    }
    Ok(resp)
}

/// The socket path: the flag, else `VSWITCH_SOCKET`, else the default (clap handles the first
/// two; this is the fallback for library users).
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("VSWITCH_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Sends one request and reads one response (what `vswitchctl` does).
pub fn call(socket: &Path, req: &Request) -> io::Result<Response> {
    let stream = send_request(socket, req)?;
    read_response(&mut io::BufReader::new(&stream))
}

/// Connects to the daemon and writes one request line.
fn send_request(socket: &Path, req: &Request) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach vswitchd at {}: {e} (is vswitchd running? see --socket)",
                socket.display()
            ),
        )
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    match (&stream).write_all(&line) {
        // A daemon that refuses a client (too many of them) writes its reason and closes
        // before reading: the reason is still there to be read.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(stream)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(stream),
    }
}

/// Reads the daemon's one-line answer.
fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "vswitchd closed the connection without answering",
        ));
    }
    serde_json::from_str(&answer).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer from vswitchd: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_shape() {
        let r = Request::PortAdd {
            name: "veth1".into(),
            network: Some("blue".into()),
            port_type: PortType::Tap,
            vlan: Some(10),
            trunks: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(
            s.contains(r#""cmd":"port_add""#) && s.contains(r#""type":"tap""#),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let minimal: Request = serde_json::from_str(r#"{"cmd":"port_add","name":"v"}"#).unwrap();
        assert!(matches!(
            minimal,
            Request::PortAdd {
                port_type: PortType::System,
                ..
            }
        ));
    }

    #[test]
    fn malformed_requests_are_errors() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"cmd":"nope"}"#,
            r#"{"cmd":"port_add"}"#,
            r#"{"cmd":"port_add","name":"v","bogus":1}"#,
            r#"{"cmd":"port_add","name":"v","vlan":70000}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }
}
