//! The control API: one JSON request per line on the unix socket, one JSON response per line.
//!
//! ```text
//! → {"cmd":"port_add","name":"veth1","network":"bridge","type":"system"}
//! ← {"ok":true,"result":{...}}
//! ← {"ok":false,"error":"no such network: blue","kind":"not_found"}
//! ```
//! `vswitchctl` builds a [`Request`], `vswitchd` answers with a [`Response`]. Results are JSON
//! values in the shapes DESIGN.md fixes (`port list --json`, `fdb show --json`, …), so the CLI's
//! `--json` prints them as they come. A refusal carries an [`ErrorKind`] besides its message, so
//! a client (the CLI, the Docker plugin) can map it without reading the text.
//!
//! The limits both ends check (VLAN ids, MTUs, VNIs, network names) are here too, one function
//! each: the CLI checks before sending, the daemon checks what it receives, with the same rule.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Write};
use std::ops::RangeInclusive;
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
    PortList {},
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
    NetworkLs {},
    /// One network in detail, as `docker network inspect`.
    NetworkInspect { name: String },
    /// Connect a sandbox to a network: an endpoint (veth pair, address, routes).
    NetworkConnect {
        network: String,
        sandbox: String,
        #[serde(default)]
        ip: Option<String>,
        /// Published ports, `[HOST_IP:]HOST_PORT:PORT[/tcp|udp]` each (Docker's `-p`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        publish: Vec<String>,
        /// Extra DNS names of the sandbox on this network (`--alias`), besides its own name.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        aliases: Vec<String>,
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
    SandboxLs {},
    /// What the L3 edge has programmed in `table inet vswitch`: rules and published ports.
    NatShow {},
    /// The embedded DNS server's counters.
    DnsStats {},
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
    /// The cluster (`vswitchd --cluster`): etcd endpoints, this node, the other nodes with their
    /// VTEPs and lease ages.
    ClusterStatus,
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
    /// `com.docker.network.bridge.enable_icc`: sandboxes may talk to each other (default yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_icc: Option<bool>,
    /// `com.docker.network.bridge.enable_ip_masquerade`: outbound traffic is masqueraded
    /// (default yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ip_masquerade: Option<bool>,
    /// `com.docker.network.bridge.host_binding_ipv4`: the host address of published ports that
    /// name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_binding_ipv4: Option<String>,
    /// `swarm`: the network exists once for the whole cluster (`vswitchd --cluster`), written
    /// to etcd with a VNI chosen cluster-wide; `local` or none: this host only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Why a request was refused, for clients that act on it (the message is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// What the request names does not exist (network, port, sandbox, interface, peer, MAC).
    NotFound,
    /// The request clashes with what exists (a name taken, a network still in use).
    Conflict,
    /// The request itself is wrong (malformed, a bad name, address or option).
    Invalid,
    /// The daemon or the system failed (netlink, the datapath, the state store).
    Internal,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of refusal `error` is (absent on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

impl Response {
    /// A success carrying `result`.
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
            kind: None,
        }
    }

    /// A refusal of a request that is not valid (malformed, too long): kind `invalid`.
    pub fn err(msg: impl Into<String>) -> Response {
        Response::refused(ErrorKind::Invalid, msg)
    }

    /// A refusal of the given kind, with a message for the user.
    pub fn refused(kind: ErrorKind, msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(msg.into()),
            kind: Some(kind),
        }
    }
}

/// VLAN ids a port may carry (IEEE 802.1Q: 0 and 4095 are reserved).
pub const VLAN_IDS: RangeInclusive<u16> = 1..=4094;
/// MTUs a network may have: the IPv4 minimum (RFC 791) to the largest IP packet.
pub const MTUS: RangeInclusive<u32> = 68..=65535;
/// VXLAN network identifiers an overlay may use: 24 bits (RFC 7348 § 5), 0 left out.
pub const VNIS: RangeInclusive<u32> = 1..=vxlan::MAX_VNI;
/// Longest network name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a VLAN id against [`VLAN_IDS`].
pub fn check_vlan(n: u64) -> Result<u16, String> {
    check_range(n, &VLAN_IDS, "VLAN", "VLAN ids are ")
}

/// Checks an MTU against [`MTUS`].
pub fn check_mtu(n: u64) -> Result<u32, String> {
    check_range(n, &MTUS, "MTU", "")
}

/// Checks a VNI against [`VNIS`].
pub fn check_vni(n: u64) -> Result<u32, String> {
    check_range(n, &VNIS, "VNI", "VNIs are ")
}

/// `n` as a `T` inside `range`, or "`what` N is out of range: `values`START-END".
fn check_range<T>(n: u64, range: &RangeInclusive<T>, what: &str, values: &str) -> Result<T, String>
where
    T: TryFrom<u64> + PartialOrd + std::fmt::Display,
{
    match T::try_from(n) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "{what} {n} is out of range: {values}{}-{}",
            range.start(),
            range.end()
        )),
    }
}

/// Checks a network name: 1-64 letters, digits, `-`, `_` or `.`, not starting with `.`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {name:?}: use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Checks a DNS alias (`network connect --alias`): dot-separated labels of 1-63 letters,
/// digits or `-`, neither starting nor ending with `-` (RFC 1123 § 2.1, RFC 952), 253
/// characters at most (RFC 1035 § 2.3.4); one trailing dot is accepted.
pub fn check_alias(alias: &str) -> Result<(), String> {
    let name = alias.strip_suffix('.').unwrap_or(alias);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid alias {alias:?}: use DNS labels (1-63 letters, digits or '-', not at \
             either end) joined by '.', 253 characters at most"
        ))
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
    /// The deepest the port's receive queue was (frames waiting) in the last second.
    #[serde(default)]
    pub rx_queue_peak: u64,
    /// The deepest the port's receive queue was since the port was attached.
    #[serde(default)]
    pub rx_queue_max: u64,
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
    /// Published ports, as `docker ps` shows them: `0.0.0.0:8080->80/tcp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
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
    fn aliases_are_dns_names() {
        for ok in [
            "web",
            "db-1",
            "svc.internal",
            "a.b.c.",
            "X9",
            &"a".repeat(63),
        ] {
            assert_eq!(check_alias(ok), Ok(()), "{ok}");
        }
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(long.len(), 254);
        for bad in [
            "",
            ".",
            "-web",
            "web-",
            "a..b",
            "we b",
            "web_1",
            "ü",
            &"a".repeat(64),
            &long,
        ] {
            assert!(check_alias(bad).is_err(), "{bad:?}");
        }
        // Old clients send no aliases; the field is left out when empty.
        let old = r#"{"cmd":"network_connect","network":"n","sandbox":"s"}"#;
        let r: Request = serde_json::from_str(old).unwrap();
        assert!(matches!(&r, Request::NetworkConnect { aliases, .. } if aliases.is_empty()));
        assert!(!serde_json::to_string(&r).unwrap().contains("aliases"));
        let dns: Request = serde_json::from_str(r#"{"cmd":"dns_stats"}"#).unwrap();
        assert_eq!(dns, Request::DnsStats {});
    }

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

    #[test]
    fn argument_less_commands_refuse_unknown_fields() {
        for (cmd, req) in [
            ("port_list", Request::PortList {}),
            ("network_ls", Request::NetworkLs {}),
            ("sandbox_ls", Request::SandboxLs {}),
        ] {
            let bare = format!(r#"{{"cmd":"{cmd}"}}"#);
            assert_eq!(serde_json::from_str::<Request>(&bare).unwrap(), req);
            assert_eq!(serde_json::to_string(&req).unwrap(), bare);
            for extra in [r#""name":"x""#, r#""bogus":1"#, r#""cmd2":null"#] {
                let line = format!(r#"{{"cmd":"{cmd}",{extra}}}"#);
                let err = serde_json::from_str::<Request>(&line).unwrap_err();
                assert!(err.to_string().contains("unknown field"), "{line}: {err}");
            }
        }
    }

    #[test]
    fn refusals_carry_their_kind() {
        let r = Response::refused(ErrorKind::NotFound, "no such network: blue");
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"ok":false,"error":"no such network: blue","kind":"not_found"}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
        // An answer without a kind (an older daemon) still parses.
        let old: Response = serde_json::from_str(r#"{"ok":false,"error":"x"}"#).unwrap();
        assert_eq!(old.kind, None);
        assert_eq!(Response::err("bad").kind, Some(ErrorKind::Invalid));
        assert!(!serde_json::to_string(&Response::ok(serde_json::json!(1)))
            .unwrap()
            .contains("kind"));
    }

    #[test]
    fn limits_are_checked_in_one_place() {
        assert_eq!(check_vlan(1), Ok(1));
        assert_eq!(check_vlan(4094), Ok(4094));
        for bad in [0, 4095, 65536 + 10] {
            assert!(check_vlan(bad).unwrap_err().contains("1-4094"), "{bad}");
        }
        assert_eq!(check_vni(16_777_215), Ok(16_777_215));
        assert!(check_vni(0).is_err() && check_vni(16_777_216).is_err());
        assert!(check_vni(1 << 32).unwrap_err().contains("1-16777215"));
        assert_eq!(check_mtu(68), Ok(68));
        assert!(check_mtu(67).is_err() && check_mtu(65536).is_err());
        assert!(check_name("network", "blue-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name("network", bad).is_err(), "{bad:?}");
        }
    }
}
