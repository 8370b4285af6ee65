//! The overlay part of the root end-to-end harness: several "hosts", each a network namespace
//! running its own `vswitchd`, joined by an underlay, and sandboxes on overlay networks.
//!
//! ```text
//!   PREFIX-h1 (vswitchd, ul0 10.T.0.1) ─┐
//!   PREFIX-h2 (vswitchd, ul0 10.T.0.2) ─┼── u1, u2, u3 on br0 in PREFIX-u (br0: 10.T.0.99)
//!   PREFIX-h3 (vswitchd, ul0 10.T.0.3) ─┘
//! ```
//!
//! `T` is a number of the test's own (100 + its test number), so every address of a test is its
//! own; all of them live only inside the test's namespaces. The underlay namespace `PREFIX-u`
//! holds a Linux bridge and an address that is no peer of anyone (`10.T.0.99`): the place to
//! capture the underlay and to send forged datagrams from.
//!
//! The daemons run under `nsenter --net=…` (not `ip netns exec`, which gives its command a
//! private mount namespace): the sandboxes a daemon bind-mounts under `/run/netns` must be
//! visible to the test. Sandboxes are global names (`/run/netns/PREFIX-…`); each is held by a
//! [`Netns`] guard made before the daemon creates it, so it is removed even when a test fails.
//!
//! Drop order (fields drop in declaration order): daemons, sandboxes, host namespaces, extra
//! namespaces, the underlay, the temp dir. Nothing sleeps to synchronise: every wait is a
//! condition polled until a deadline.

#![allow(dead_code)] // Not every test uses every helper.

use crate::common::stream::{receive_and_verify, send_stream};
use crate::common::{ip, run, wait_for, Netns, TempDir};
use std::cell::Cell;
use std::fs::{self, File};

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tools::netns::in_netns;

/// How long a condition may take across the overlay (several debug daemons share two cores).
pub const OWAIT: Duration = Duration::from_secs(30);
/// The pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(20);
/// The address on the underlay bridge that is nobody's peer.
pub const STRANGER: u8 = 99;

fn next_test_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn text(out: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

thread_local! {
    /// The VTEP backend the daemons of this test's thread run, when the test chose one.
    static BACKEND: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Runs `test` with every daemon its [`World`] starts on the VTEP `backend` (`tap`, `socket`):
/// the overlay tests run once on the default backend and once on the socket, in one suite.
pub fn on_backend(backend: &'static str, test: impl FnOnce()) {
    BACKEND.set(Some(backend));
    test();
    BACKEND.set(None);
}

/// The VTEP backend the daemons run: the test's choice ([`on_backend`]), else
/// `VSWITCH_VTEP_BACKEND` (inherited by vswitchd), else `auto`.
pub fn vtep_backend() -> String {
    BACKEND
        .get()
        .map(String::from)
        .or_else(|| std::env::var("VSWITCH_VTEP_BACKEND").ok())
        .unwrap_or_else(|| "auto".into())
}

/// `args` with `--vtep-backend` added when the test chose a backend and `args` has none.
fn with_backend(mut args: Vec<&str>) -> Vec<&str> {
    if let Some(backend) = BACKEND.get() {
        if !args.contains(&"--vtep-backend") {
            args.extend(["--vtep-backend", backend]);
        }
    }
    args
}

/// Whether a sandbox's `gso_max_segs` is what the backend asks for: `socket` segments per
/// UDP_SEGMENT send, `tap` as many as keep the outer IPv4 length within 65535 (either under
/// `auto`).
pub fn segs_as_expected(got: &serde_json::Value, socket: u64, tap: u64) -> bool {
    let want: &[u64] = match vtep_backend().as_str() {
        "socket" => &[socket],
        "tap" => &[tap],
        _ => &[socket, tap],
    };
    got.as_u64().is_some_and(|s| want.contains(&s))
}

// ---------------------------------------------------------------------------------------------
// A daemon in a host namespace

/// The daemon of one host: the shared harness's guard (started with `--vtep`).
pub use crate::common::Daemon as HostDaemon;

// ---------------------------------------------------------------------------------------------
// Hosts, sandboxes, the world of one test

/// A sandbox made by a daemon and connected to one network.
pub struct Sandbox {
    /// Guard of `/run/netns/NAME` (made before the daemon creates it).
    pub ns: Netns,
    /// The network it is connected to.
    pub network: String,
    /// Its address on that network (without prefix) and `eth0`'s MAC.
    pub ip: String,
    pub mac: String,
    /// The host end of its veth: its port on the daemon.
    pub port: String,
}

/// A host: its namespace, its daemon (none for a kernel-VXLAN host), its sandboxes.
pub struct OHost {
    pub daemon: Option<HostDaemon>,
    pub sandboxes: Vec<Sandbox>,
    pub ns: Netns,
    /// 1, 2, 3…: the last octet of its underlay address.
    pub index: u8,
    /// `10.T.0.INDEX`.
    pub underlay_ip: String,
}

impl OHost {
    /// The host's daemon.
    pub fn d(&self) -> &HostDaemon {
        self.daemon.as_ref().expect("this host runs vswitchd")
    }

    /// The host's daemon, mutably.
    pub fn d_mut(&mut self) -> &mut HostDaemon {
        self.daemon.as_mut().expect("this host runs vswitchd")
    }
}

/// One test's world: hosts on an underlay.
pub struct World {
    pub hosts: Vec<OHost>,
    /// Namespaces a test adds (kernel hosts' stations); dropped after the hosts.
    pub extra: Vec<Netns>,
    pub under: Netns,
    pub prefix: String,
    /// The second octet of every address of this test.
    pub t: u8,
    pub dir: TempDir,
}

impl World {
    /// `n` hosts, each running vswitchd with `--vtep 10.T.0.i`.
    pub fn new(n: u8) -> World {
        let spec: Vec<bool> = (0..n).map(|_| true).collect();
        World::with_hosts(&spec)
    }

    /// Hosts 1, 2, … on the underlay; `daemons[i]` says whether host i+1 runs vswitchd.
    pub fn with_hosts(daemons: &[bool]) -> World {
        let n = next_test_number();
        let prefix = format!("vso{}t{n}", std::process::id());
        let t = u8::try_from(100 + n).expect("fewer than 156 tests");
        let dir = TempDir::new(&prefix);
        let under = Netns::new(format!("{prefix}-u"));
        ip(&["-n", &under.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &under.name, "link", "set", "br0", "up"]);
        let mut w = World {
            hosts: Vec::new(),
            extra: Vec::new(),
            under,
            prefix,
            t,
            dir,
        };
        let stranger = format!("{}/24", w.underlay_ip(STRANGER));
        ip(&["-n", &w.under.name, "addr", "add", &stranger, "dev", "br0"]);
        for (i, daemon) in daemons.iter().enumerate() {
            w.add_host(i as u8 + 1, *daemon);
        }
        w
    }

    /// `10.T.0.i`, host i's underlay address.
    pub fn underlay_ip(&self, i: u8) -> String {
        format!("10.{}.0.{i}", self.t)
    }

    /// `10.T.NET.0/24`, an overlay subnet of this test.
    pub fn subnet(&self, net: u8) -> String {
        format!("10.{}.{net}.0/24", self.t)
    }

    /// `10.T.NET.i`.
    pub fn addr(&self, net: u8, i: u8) -> String {
        format!("10.{}.{net}.{i}", self.t)
    }

    /// A namespace `PREFIX-SUFFIX` (IPv6 off) removed with the world.
    pub fn netns(&mut self, suffix: &str) -> &Netns {
        self.extra
            .push(Netns::new(format!("{}-{suffix}", self.prefix)));
        self.extra.last().expect("just pushed")
    }

    fn add_host(&mut self, i: u8, daemon: bool) {
        let ns = Netns::new(format!("{}-h{i}", self.prefix));
        self.plug_underlay(&ns.name, i);
        let underlay_ip = self.underlay_ip(i);
        let mut host = OHost {
            daemon: None,
            sandboxes: Vec::new(),
            ns,
            index: i,
            underlay_ip,
        };
        if daemon {
            let dir = self.dir.path.join(format!("h{i}"));
            let vtep = host.underlay_ip.clone();
            let args = with_backend(vec!["--vtep", &vtep]);
            host.daemon = Some(HostDaemon::start_with(&host.ns, &dir, &args));
        }
        self.hosts.push(host);
    }

    /// Joins host i's namespace `ns` to the underlay: a veth `u<i>` in the underlay's bridge,
    /// `ul0` in the host with the host's underlay address, both up.
    fn plug_underlay(&self, ns: &str, i: u8) {
        let under = &self.under.name;
        let u = format!("u{i}");
        ip(&[
            "-n", under, "link", "add", &u, "type", "veth", "peer", "name", "ul0", "netns", ns,
        ]);
        ip(&["-n", under, "link", "set", &u, "master", "br0", "up"]);
        let cidr = format!("{}/24", self.underlay_ip(i));
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "ul0"]);
        ip(&["-n", ns, "link", "set", "ul0", "up"]);
    }

    /// Host i's underlay link made again, as a new interface (a new index), after a test
    /// deleted it.
    pub fn replug_underlay(&self, i: u8) {
        let ns = self.h(i).ns.name.clone();
        self.plug_underlay(&ns, i);
    }

    /// Starts vswitchd on host i (made without one, or whose daemon was stopped) with
    /// `--vtep 10.T.0.i` and `extra` arguments, on the host's own state directory.
    pub fn start_daemon(&mut self, i: u8, extra: &[&str]) {
        let dir = self.dir.path.join(format!("h{i}"));
        let host = self.h_mut(i);
        let vtep = host.underlay_ip.clone();
        let mut args = vec!["--vtep", vtep.as_str()];
        args.extend_from_slice(extra);
        let args = with_backend(args);
        host.daemon = Some(HostDaemon::start_with(&host.ns, &dir, &args));
    }

    /// Host i (1-based).
    pub fn h(&self, i: u8) -> &OHost {
        self.hosts
            .iter()
            .find(|h| h.index == i)
            .unwrap_or_else(|| panic!("no host {i}"))
    }

    /// Host i, mutably.
    pub fn h_mut(&mut self, i: u8) -> &mut OHost {
        self.hosts
            .iter_mut()
            .find(|h| h.index == i)
            .unwrap_or_else(|| panic!("no host {i}"))
    }

    /// Creates overlay network `name` (VNI `vni`, subnet `10.T.NET.0/24`) on every host that
    /// runs vswitchd, each handing out addresses from its own `/28` (`10.T.NET.16i/28`) and
    /// peering with every other host.
    pub fn overlay_everywhere(&self, name: &str, vni: u32, net: u8) {
        for h in self.hosts.iter().filter(|h| h.daemon.is_some()) {
            self.overlay_on(h.index, name, vni, net, &[]);
        }
    }

    /// Creates overlay network `name` on host i as [`World::overlay_everywhere`] does, with
    /// `extra` arguments to `network create`.
    pub fn overlay_on(&self, i: u8, name: &str, vni: u32, net: u8, extra: &[&str]) {
        let vni = vni.to_string();
        let subnet = self.subnet(net);
        let range = format!("{}/28", self.addr(net, i * 16));
        let mut args = vec![
            "network",
            "create",
            name,
            "--driver",
            "overlay",
            "--vni",
            &vni,
            "--subnet",
            &subnet,
            "--ip-range",
            &range,
        ];
        let peers: Vec<&str> = self
            .hosts
            .iter()
            .filter(|o| o.index != i)
            .map(|o| o.underlay_ip.as_str())
            .collect();
        for p in &peers {
            args.extend(["--peer", p]);
        }
        args.extend_from_slice(extra);
        self.h(i).d().ctl_ok(&args);
    }

    /// Creates sandbox `PREFIX-SUFFIX` on host i (IPv6 off, so no stray multicast moves a
    /// counter) and connects it to `network`. Returns the sandbox.
    pub fn sandbox(&mut self, i: u8, network: &str, suffix: &str) -> &Sandbox {
        let name = format!("{}-{suffix}", self.prefix);
        let host = self.h_mut(i);
        // The guard first: whatever happens next, the namespace goes when the test ends.
        let guard = Netns { name: name.clone() };
        let d = host.d();
        d.ctl_ok(&["sandbox", "create", &name]);
        guard.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        guard.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        let before: Vec<String> = d
            .ports()
            .iter()
            .map(|r| r["name"].as_str().unwrap_or("").to_string())
            .collect();
        let ep = d.ctl_json(&["network", "connect", network, &name]);
        let ip = ep["ipv4"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("network connect printed no ipv4: {ep}"))
            .to_string();
        let port = d
            .ports()
            .iter()
            .filter(|r| r["network"] == network)
            .map(|r| r["name"].as_str().unwrap_or("").to_string())
            .find(|n| !before.contains(n))
            .unwrap_or_else(|| panic!("no new port on {network} after connecting {name}"));
        let mac = guard.mac("eth0");
        host.sandboxes.push(Sandbox {
            ns: guard,
            network: network.to_string(),
            ip,
            mac,
            port,
        });
        host.sandboxes.last().expect("just pushed")
    }

    /// The sandbox `PREFIX-SUFFIX`, on whichever host.
    pub fn sb(&self, suffix: &str) -> &Sandbox {
        let name = format!("{}-{suffix}", self.prefix);
        self.hosts
            .iter()
            .flat_map(|h| h.sandboxes.iter())
            .find(|s| s.ns.name == name)
            .unwrap_or_else(|| panic!("no sandbox {name}"))
    }

    /// A file in the test's temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path.join(name)
    }
}

// ---------------------------------------------------------------------------------------------
// Pings

/// One `ping -c1 -W1` from `ns` to `addr` with extra arguments: true if it answered.
pub fn ping1(ns: &Netns, addr: &str, extra: &[&str]) -> bool {
    let mut args = vec!["ping", "-n", "-q", "-c", "1", "-W", "1"];
    args.extend_from_slice(extra);
    args.push(addr);
    ns.exec(&args).status.success()
}

/// Pings until `addr` answers, or panics after [`OWAIT`].
pub fn ping_until(ns: &Netns, addr: &str) {
    let what = format!("{} to reach {addr} by ping", ns.name);
    wait_for(&what, OWAIT, || ping1(ns, addr, &[]).then_some(()));
}

/// `ping -c 3 -W 1` (plus `extra`): true when nothing answered.
pub fn ping_fails(ns: &Netns, addr: &str, extra: &[&str]) -> bool {
    let mut args = vec!["ping", "-n", "-q", "-c", "3", "-W", "1", "-i", "0.3"];
    args.extend_from_slice(extra);
    args.push(addr);
    !ns.exec(&args).status.success()
}

/// Runs every `(from, to)` ping concurrently, each until it answers.
pub fn pings_succeed(pairs: &[(&Netns, &str)]) {
    std::thread::scope(|s| {
        for (from, to) in pairs {
            s.spawn(move || ping_until(from, to));
        }
    });
}

/// Runs every `(from, to)` ping concurrently; all must fail.
pub fn pings_fail(pairs: &[(&Netns, &str)]) {
    std::thread::scope(|s| {
        let checks: Vec<_> = pairs
            .iter()
            .map(|(from, to)| s.spawn(move || (from.name.clone(), *to, ping_fails(from, to, &[]))))
            .collect();
        for c in checks {
            let (from, to, failed) = c.join().unwrap();
            assert!(failed, "{from} reached {to}, which it must not");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// A verified TCP stream (as in e2e_switch.rs): byte `i` is byte `i % 8` of
// splitmix64(SEED + i / 8), so the receiver checks every byte at any offset.

fn accept_within(listener: &TcpListener) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + OWAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        if Instant::now() >= deadline {
            return Err("no client connected in time".into());
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `len` verified bytes over TCP from namespace `from` to `to_addr:port` in namespace
/// `to`, and checks that every byte arrived. Returns the throughput in Mbit/s.
pub fn verified_stream(from: &Netns, to: &Netns, to_addr: &str, port: u16, len: u64) -> f64 {
    let server_addr: SocketAddr = format!("{to_addr}:{port}").parse().unwrap();
    // Sockets stay in the namespace they were made in, whichever thread uses them later.
    let listener = in_netns(&to.open(), || TcpListener::bind(server_addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("listen on {server_addr} in {}: {e}", to.name));
    let started = Instant::now();
    let (received, acknowledged) = std::thread::scope(|s| {
        let server = s.spawn(|| receive_and_verify(accept_within(&listener)?, OWAIT));
        let client = in_netns(&from.open(), || {
            TcpStream::connect_timeout(&server_addr, OWAIT)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("connect from {} to {server_addr}: {e}", from.name));
        let acknowledged = send_stream(client, len, OWAIT);
        (server.join().unwrap(), acknowledged)
    });
    let secs = started.elapsed().as_secs_f64();
    let received = received.unwrap_or_else(|e| panic!("{} → {server_addr}: {e}", from.name));
    assert_eq!(
        received, len,
        "{} → {server_addr}: {received} of {len} bytes",
        from.name
    );
    assert_eq!(
        acknowledged,
        Ok(len),
        "{} → {server_addr}: the sender's view",
        from.name
    );
    let mbits = len as f64 * 8.0 / secs / 1e6;
    println!(
        "{} → {server_addr}: {} MiB verified in {secs:.2} s ({mbits:.0} Mbit/s)",
        from.name,
        len >> 20
    );
    mbits
}

// ---------------------------------------------------------------------------------------------
// Captures with tshark

/// `tshark -i IF -f FILTER -c COUNT -w FILE` inside a namespace, started and waited for until
/// it is capturing. On drop, stopped if still running.
pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
    err: PathBuf,
}

impl Capture {
    /// Starts the capture and waits for tshark's "Capturing on".
    pub fn start(ns: &Netns, iface: &str, filter: &str, count: usize, file: PathBuf) -> Capture {
        let err = file.with_extension("stderr");
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "tshark", "-n", "-i", iface, "-f", filter,
            ])
            .args(["-c", &count.to_string(), "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&err).expect("create tshark's stderr file"))
            .spawn()
            .expect("spawn tshark");
        let mut cap = Capture {
            child: Some(child),
            file,
            err,
        };
        wait_for("tshark to be capturing", OWAIT, || {
            if let Some(status) = cap.exit_status() {
                panic!("tshark exited early ({status}): {}", cap.stderr());
            }
            cap.stderr().contains("Capturing on").then_some(())
        });
        cap
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait on tshark"))
    }

    /// What tshark printed on stderr.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Calls `pump` (which makes traffic) until tshark has its count and exits, or panics after
    /// [`OWAIT`].
    pub fn finish(&mut self, mut pump: impl FnMut()) {
        let deadline = Instant::now() + OWAIT;
        loop {
            if let Some(status) = self.exit_status() {
                assert!(
                    status.success(),
                    "tshark failed ({status}): {}",
                    self.stderr()
                );
                self.child = None;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the capture did not reach its count in {OWAIT:?}: {}",
                self.stderr()
            );
            pump();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory effects; the pid is our own unreaped child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tshark -r FILE -d udp.port==4789,vxlan ARGS…`: its stdout lines (must succeed).
pub fn tshark_read(file: &Path, args: &[&str]) -> Vec<String> {
    let file = file.to_str().expect("UTF-8 path");
    let mut all = vec!["-n", "-r", file, "-d", "udp.port==4789,vxlan"];
    all.extend_from_slice(args);
    let out = run("tshark", &all);
    assert!(out.status.success(), "tshark {all:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Hand-made VXLAN datagrams and a sniffer

/// A MAC address as bytes.
pub fn mac_bytes(mac: &str) -> [u8; 6] {
    let v: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex MAC byte"))
        .collect();
    v.try_into().expect("six MAC bytes")
}

/// An Ethernet frame carrying an ARP request "who has `target`? tell `sender_ip`" from
/// `src`, to `dst` (broadcast for a normal request), padded to 60 bytes.
pub fn arp_request(dst: [u8; 6], src: [u8; 6], sender_ip: &str, target: &str) -> Vec<u8> {
    let sip: std::net::Ipv4Addr = sender_ip.parse().unwrap();
    let tip: std::net::Ipv4Addr = target.parse().unwrap();
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&src);
    f.extend_from_slice(&sip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tip.octets());
    f.resize(60, 0);
    f
}

/// A VXLAN datagram (RFC 7348 § 5): flags, 24 reserved bits, the VNI, 8 reserved bits, then
/// the inner frame.
pub fn vxlan_datagram(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut d = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
    d.extend_from_slice(inner);
    d
}

/// Sends each datagram from `from_ip` (an address in `ns`) to `to`:4789.
pub fn send_udp(ns: &Netns, from_ip: &str, to: &str, datagrams: &[Vec<u8>]) {
    let from: SocketAddr = format!("{from_ip}:0").parse().unwrap();
    let to: SocketAddr = format!("{to}:4789").parse().unwrap();
    in_netns(&ns.open(), || {
        let s = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
        for d in datagrams {
            let n = s
                .send_to(d, to)
                .unwrap_or_else(|e| panic!("send to {to}: {e}"));
            assert_eq!(n, d.len());
        }
    })
    .expect("enter the sender's namespace");
}

/// An AF_PACKET socket on one interface of a namespace that keeps every frame it sees (both
/// directions) until read: frames are queued to it before the stack handles them.
pub struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    pub fn open(ns: &Netns, iface: &str) -> Sniffer {
        let iface = std::ffi::CString::new(iface).unwrap();
        let fd = in_netns(&ns.open(), || -> std::io::Result<OwnedFd> {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: socket(2) with constant arguments; the result is checked.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    proto as libc::c_int,
                )
            };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: `iface` is NUL-terminated and outlives the call.
            let index = unsafe { libc::if_nametoindex(iface.as_ptr()) };
            if index == 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = index as i32;
            // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(fd)
        })
        .expect("enter the sandbox")
        .expect("open an AF_PACKET socket in the sandbox");
        let s = Sniffer { fd };
        s.drain();
        s
    }

    /// Reads every frame waiting; returns their source MACs.
    pub fn drain(&self) -> Vec<[u8; 6]> {
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::new();
        loop {
            // SAFETY: `buf` is writable for its length; the fd is ours.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => return out,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => panic!("recv on the sniffer: {e}"),
                }
            }
            let n = n as usize;
            if n >= 12 {
                out.push(buf[6..12].try_into().unwrap());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checksum offload

/// `ETHTOOL_STXCSUM` from `<linux/ethtool.h>`: set transmit checksum offload.
const ETHTOOL_STXCSUM: u32 = 0x17;
/// `SIOCETHTOOL` from `<linux/sockios.h>`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// Turns off transmit checksum offload on `ifname` in `ns` (`ethtool -K IF tx off`, done by
/// ioctl so the tests need no ethtool), so the kernel completes checksums before the frame
/// leaves, as a physical NIC does on the wire. A veth otherwise hands its peer packets whose
/// checksums are still "partial"; fine inside one kernel, but a UDP socket cannot tell.
pub fn tx_checksum_off(ns: &Netns, ifname: &str) {
    let name = std::ffi::CString::new(ifname).unwrap();
    in_netns(&ns.open(), || -> std::io::Result<()> {
        // SAFETY: socket(2) with constant arguments; the result is checked and owned.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        // SAFETY: an all-zero ifreq is valid; the name and data pointer are set below.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        // SAFETY: `req` names the interface and points at `value`, both alive for the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .expect("enter the namespace")
    .unwrap_or_else(|e| {
        panic!(
            "turning tx checksum offload off on {ifname} in {}: {e}",
            ns.name
        )
    });
}
