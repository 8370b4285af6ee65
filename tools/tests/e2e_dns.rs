//! End-to-end tests of the embedded DNS server, as root: the service runs in a "daemon"
//! namespace of the test's, serves `127.0.0.11:53` in sandbox namespaces of the test's, and
//! forwards to a `dnsmasq` the test runs in an "upstream" namespace joined to the daemon's by a
//! veth pair. The machine's own resolver is never asked.
//!
//! Every namespace is named `vsdns<pid>t<N>-…` and removed by its guard, also on failure; so
//! is `/etc/netns/<sandbox>/`. Without root each test prints `skipped: needs root` (and fails
//! under `CI=true`).

mod common;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tools::daemon::dns::{DnsService, ForwardConfig};

/// The resolver's address in every sandbox.
const DNS: &str = "127.0.0.11:53";

/// How long one test query may wait for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A unique prefix for this test's namespaces.
fn prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "vsdns{}t{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// True if `tool` runs; else prints how to install it (a failure under `CI=true`).
fn have_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs {tool} (apt-get install {package}), and CI=true requires it");
        }
        println!("skipped: needs {tool} (apt-get install {package})");
    }
    found
}

/// Sends raw `bytes` over UDP to 127.0.0.11 inside `ns`; the answer, or None on timeout.
fn udp_raw(ns: &File, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    tools::netns::in_netns(ns, || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(timeout)).unwrap();
        socket.send_to(bytes, DNS).unwrap();
        let mut buf = vec![0u8; 65535];
        socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    })
    .unwrap()
}

/// Asks 127.0.0.11 inside `ns` over UDP; panics on timeout.
fn ask(ns: &File, name: &str, qtype: RecordType) -> Message {
    let answer = udp_raw(ns, &query_msg(0x4242, name, qtype), QUERY_TIMEOUT)
        .unwrap_or_else(|| panic!("no answer for {name} {qtype:?}"));
    let msg = Message::from_vec(&answer).unwrap();
    assert_eq!(msg.metadata.id, 0x4242);
    msg
}

/// Asks 127.0.0.11 inside `ns` over TCP (RFC 7766 framing).
fn ask_tcp(ns: &File, name: &str, qtype: RecordType) -> Message {
    let q = query_msg(0x5151, name, qtype);
    let answer = tools::netns::in_netns(ns, || {
        let addr: SocketAddr = DNS.parse().unwrap();
        let mut stream = TcpStream::connect_timeout(&addr, QUERY_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        stream.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).unwrap();
        answer
    })
    .unwrap();
    let msg = Message::from_vec(&answer).unwrap();
    assert_eq!(msg.metadata.id, 0x5151);
    msg
}

fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The test's world: a daemon namespace, an upstream namespace with dnsmasq (optional), sandboxes.
struct World {
    /// Dropped first: the service, then dnsmasq, then the namespaces.
    service: DnsService,
    _dnsmasq: Option<ChildGuard>,
    sandboxes: Vec<Netns>,
    _upstream: Netns,
    _daemon: Netns,
    _tmp: TempDir,
}

impl World {
    /// Makes the namespaces, dnsmasq answering `hosts` (a hosts file) when asked, and a service
    /// forwarding to dnsmasq (or to a silent address) with `timeout`.
    fn new(sandboxes: usize, hosts: Option<&str>, timeout: Duration) -> World {
        World::with_dnsmasq_args(sandboxes, hosts, timeout, &[])
    }

    /// As [`World::new`], with extra `dnsmasq` arguments.
    fn with_dnsmasq_args(
        sandboxes: usize,
        hosts: Option<&str>,
        timeout: Duration,
        dnsmasq_args: &[&str],
    ) -> World {
        let prefix = prefix();
        let tmp = TempDir::new(&prefix);
        let daemon = Netns::new(format!("{prefix}-d"));
        let upstream = Netns::new(format!("{prefix}-u"));
        ip(&["-n", &daemon.name, "link", "set", "lo", "up"]);
        ip(&["-n", &upstream.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &daemon.name,
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &upstream.name,
        ]);
        ip(&[
            "-n",
            &daemon.name,
            "addr",
            "add",
            "10.253.0.1/24",
            "dev",
            "up0",
        ]);
        ip(&["-n", &daemon.name, "link", "set", "up0", "up"]);
        ip(&[
            "-n",
            &upstream.name,
            "addr",
            "add",
            "10.253.0.2/24",
            "dev",
            "eth0",
        ]);
        ip(&["-n", &upstream.name, "link", "set", "eth0", "up"]);

        let dnsmasq = hosts.map(|hosts| {
            let hosts_file = tmp.path.join("hosts");
            std::fs::write(&hosts_file, hosts).unwrap();
            let pid_file = tmp.path.join("dnsmasq.pid");
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &upstream.name,
                    "dnsmasq",
                    "--no-daemon",
                    "--no-resolv",
                    "--no-hosts",
                ])
                .arg(format!("--addn-hosts={}", hosts_file.display()))
                .args([
                    "--listen-address=10.253.0.2",
                    "--bind-interfaces",
                    "--port",
                    "53",
                ])
                .arg(format!("--pid-file={}", pid_file.display()))
                .args(dnsmasq_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let guard = ChildGuard(child);
            // Ready once it answers a name of its hosts file over UDP from the daemon's side.
            let daemon_ns = daemon.open();
            wait_for("dnsmasq to answer", WAIT, || {
                tools::netns::in_netns(&daemon_ns, || {
                    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    socket
                        .send_to(&query_msg(1, "ready.test", RecordType::A), "10.253.0.2:53")
                        .ok()?;
                    let mut buf = [0u8; 512];
                    socket.recv(&mut buf).ok().map(|_| ())
                })
                .unwrap()
            });
            guard
        });

        let mut config = ForwardConfig::from_args(&["10.253.0.2".into()]).unwrap();
        config.timeout = timeout;
        let service = tools::netns::in_netns(&daemon.open(), || DnsService::start(config))
            .unwrap()
            .expect("start the DNS service");
        let sandboxes = (0..sandboxes)
            .map(|i| {
                let ns = Netns::new(format!("{prefix}-s{i}"));
                service
                    .add_sandbox(&ns.name, &ns.open())
                    .expect("serve DNS in a sandbox");
                ns
            })
            .collect();
        World {
            service,
            _dnsmasq: dnsmasq,
            sandboxes,
            _upstream: upstream,
            _daemon: daemon,
            _tmp: tmp,
        }
    }

    fn sandbox(&self, i: usize) -> File {
        self.sandboxes[i].open()
    }

    fn name(&self, i: usize) -> &str {
        &self.sandboxes[i].name
    }
}

const HOSTS: &str = "10.99.0.7 ready.test\n10.99.0.8 far.test\n";

#[test]
fn names_and_aliases_within_a_network_and_nxdomain_across() {
    if !root_or_skip() {
        return;
    }
    let w = World::new(4, None, Duration::from_millis(500));
    let t = w.service.table();
    // s0 and s1 on "front", s2 on "back", s3 only on the default bridge (no names).
    t.add_endpoint(
        "front",
        w.name(0),
        Ipv4Addr::new(10, 1, 0, 2),
        &["web".into(), "svc".into()],
    )
    .unwrap();
    t.add_endpoint(
        "front",
        w.name(1),
        Ipv4Addr::new(10, 1, 0, 3),
        &["svc".into()],
    )
    .unwrap();
    t.add_endpoint(
        "back",
        w.name(2),
        Ipv4Addr::new(10, 2, 0, 2),
        &["db".into()],
    )
    .unwrap();
    let s0 = w.sandbox(0);
    let s1 = w.sandbox(1);

    let msg = ask(&s1, "WEB.", RecordType::A);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&msg), vec![Ipv4Addr::new(10, 1, 0, 2)]);
    assert_eq!(
        a_records(&ask(&s1, w.name(0), RecordType::A)),
        vec![Ipv4Addr::new(10, 1, 0, 2)]
    );
    assert_eq!(
        a_records(&ask(&s0, w.name(1), RecordType::A)),
        vec![Ipv4Addr::new(10, 1, 0, 3)]
    );

    // Round robin over the two endpoints of "svc".
    let first = a_records(&ask(&s0, "svc", RecordType::A));
    let second = a_records(&ask(&s0, "svc", RecordType::A));
    assert_eq!(first.len(), 2);
    assert_eq!(first.iter().rev().copied().collect::<Vec<_>>(), second);

    // AAAA: the name exists, no records.
    let msg = ask(&s1, "web", RecordType::AAAA);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());

    // Another network's names are NXDOMAIN; the default bridge sandbox sees none.
    assert_eq!(
        ask(&s1, "db", RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(&s1, w.name(2), RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(&w.sandbox(3), "web", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        a_records(&ask(&w.sandbox(2), "db", RecordType::A)),
        vec![Ipv4Addr::new(10, 2, 0, 2)]
    );

    // PTR for an address we handed out, from the same network only.
    let msg = ask(&s1, "2.0.1.10.in-addr.arpa.", RecordType::PTR);
    match &msg.answers[..] {
        [rec] => match &rec.data {
            RData::PTR(ptr) => assert_eq!(ptr.0.to_ascii(), format!("{}.", w.name(0))),
            other => panic!("not a PTR: {other:?}"),
        },
        other => panic!("expected one PTR, got {other:?}"),
    }
    assert_eq!(
        ask(&s1, "2.0.2.10.in-addr.arpa.", RecordType::PTR)
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );

    // TCP.
    assert_eq!(
        a_records(&ask_tcp(&s1, "web", RecordType::A)),
        vec![Ipv4Addr::new(10, 1, 0, 2)]
    );

    // Disconnect removes the name at once; sandbox removal removes them all.
    assert!(t.remove_endpoint("front", w.name(1)));
    assert_eq!(
        a_records(&ask(&s0, "svc", RecordType::A)),
        vec![Ipv4Addr::new(10, 1, 0, 2)]
    );
    w.service.remove_sandbox(w.name(0)).unwrap();
    assert_eq!(t.name_count(), 2, "only back's names are left");
    // s0 is not served any more.
    assert!(udp_raw(
        &s0,
        &query_msg(1, "web", RecordType::A),
        Duration::from_millis(300)
    )
    .is_none());

    let stats = w.service.stats();
    assert!(stats.answered_locally >= 10, "{stats:?}");
    assert_eq!(stats.nxdomain, 4, "{stats:?}");
}

#[test]
fn forwarding_to_an_upstream_and_servfail_when_it_is_down() {
    if !root_or_skip() || !have_tool("dnsmasq", "dnsmasq") {
        return;
    }
    let w = World::new(1, Some(HOSTS), Duration::from_millis(600));
    let s0 = w.sandbox(0);
    let msg = ask(&s0, "far.test", RecordType::A);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&msg), vec![Ipv4Addr::new(10, 99, 0, 8)]);
    // TCP queries are forwarded over TCP.
    assert_eq!(
        a_records(&ask_tcp(&s0, "far.test", RecordType::A)),
        vec![Ipv4Addr::new(10, 99, 0, 8)]
    );
    // Reverse lookups of addresses not ours go upstream too (dnsmasq knows its hosts file).
    let msg = ask(&s0, "8.0.99.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(msg.answers.len(), 1, "{msg:?}");
    let stats = w.service.stats();
    assert_eq!(
        (stats.forwarded, stats.forward_answers),
        (3, 3),
        "{stats:?}"
    );

    // The upstream goes away: SERVFAIL within the timeout (600 ms), over UDP and TCP.
    w.kill_upstream();
    for tcp in [false, true] {
        let started = Instant::now();
        let msg = if tcp {
            ask_tcp(&s0, "far.test", RecordType::A)
        } else {
            ask(&s0, "far.test", RecordType::A)
        };
        assert_eq!(
            msg.metadata.response_code,
            ResponseCode::ServFail,
            "tcp={tcp}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(w.service.stats().failures, 2);
}

impl World {
    /// Kills dnsmasq now (the upstream is down).
    fn kill_upstream(&self) {
        let out = run("ip", &["netns", "pids", &self._upstream.name]);
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let pid: i32 = pid.parse().expect("a pid");
            // SAFETY: kill has no memory effects; the pid is a process in the test's namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        wait_for("dnsmasq to exit", WAIT, || {
            let out = run("ip", &["netns", "pids", &self._upstream.name]);
            out.stdout.iter().all(u8::is_ascii_whitespace).then_some(())
        });
    }
}

#[test]
fn a_truncated_upstream_answer_is_asked_again_over_tcp() {
    if !root_or_skip() || !have_tool("dnsmasq", "dnsmasq") {
        return;
    }
    // 60 addresses for one name: about 1 KB, more than dnsmasq sends over UDP when limited to
    // 512 bytes, less than the 4096 the client takes.
    let hosts: String = HOSTS.to_owned()
        + &(0..60)
            .map(|i| format!("10.98.0.{i} big.test\n"))
            .collect::<String>();
    let w = World::with_dnsmasq_args(
        1,
        Some(&hosts),
        Duration::from_secs(1),
        &["--edns-packet-max=512"],
    );
    let mut msg = Message::new(77, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_str("big.test").unwrap(),
        RecordType::A,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(4096);
    msg.set_edns(edns);
    let answer = udp_raw(&w.sandbox(0), &msg.to_vec().unwrap(), QUERY_TIMEOUT).expect("an answer");
    let answer = Message::from_vec(&answer).unwrap();
    assert!(!answer.metadata.truncation, "the full answer came over TCP");
    assert_eq!(a_records(&answer).len(), 60);
    // Without EDNS the client takes 512 bytes: it gets the truncated answer (and asks over TCP).
    let answer = ask(&w.sandbox(0), "big.test", RecordType::A);
    assert!(answer.metadata.truncation);
    assert_eq!(
        a_records(&ask_tcp(&w.sandbox(0), "big.test", RecordType::A)).len(),
        60
    );
}

#[test]
fn getent_and_dig_work_with_the_written_resolv_conf() {
    if !root_or_skip() || !have_tool("dig", "dnsutils") || !have_tool("dnsmasq", "dnsmasq") {
        return;
    }
    let w = World::new(2, Some(HOSTS), Duration::from_secs(1));
    let _etc = [
        EtcNetnsGuard(w.name(0).into()),
        EtcNetnsGuard(w.name(1).into()),
    ];
    let t = w.service.table();
    t.add_endpoint("n", w.name(0), Ipv4Addr::new(10, 3, 0, 2), &["api".into()])
        .unwrap();
    t.add_endpoint("n", w.name(1), Ipv4Addr::new(10, 3, 0, 3), &[])
        .unwrap();
    let path = w.service.write_resolv_conf(w.name(1)).unwrap();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("nameserver 127.0.0.11"));

    let out = ns_exec(w.name(1), &["getent", "hosts", "api"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("10.3.0.2"),
        "getent hosts api: {text:?} {out:?}"
    );
    let out = ns_exec(w.name(1), &["getent", "hosts", "far.test"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.99.0.8"),
        "{out:?}"
    );

    for extra in ["+notcp", "+tcp"] {
        let out = ns_exec(
            w.name(1),
            &["dig", "+short", "+time=2", "+tries=1", extra, "API"],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "10.3.0.2",
            "dig {extra}: {out:?}"
        );
    }
    let out = ns_exec(
        w.name(1),
        &["dig", "+short", "+time=2", "+tries=1", "-x", "10.3.0.2"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}.", w.name(0))
    );

    // Removing the sandbox removes its resolv.conf.
    w.service.remove_sandbox(w.name(1)).unwrap();
    assert!(!path.exists());
}

#[test]
fn ten_thousand_queries_from_several_sandboxes_all_answered() {
    if !root_or_skip() || !have_tool("dnsmasq", "dnsmasq") {
        return;
    }
    const SANDBOXES: usize = 4;
    const PER_SANDBOX: usize = 2500;
    let w = World::new(SANDBOXES, Some(HOSTS), Duration::from_secs(2));
    for i in 0..SANDBOXES {
        let addr = Ipv4Addr::new(10, 4, 0, 2 + i as u8);
        w.service
            .table()
            .add_endpoint("n", w.name(i), addr, &[])
            .unwrap();
    }
    let names: Vec<String> = (0..SANDBOXES).map(|i| w.name(i).to_owned()).collect();
    let answered = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for i in 0..SANDBOXES {
            let ns = w.sandbox(i);
            let names = &names;
            let answered = &answered;
            scope.spawn(move || {
                tools::netns::in_netns(&ns, || {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
                    socket.connect(DNS).unwrap();
                    let mut buf = [0u8; 1500];
                    for q in 0..PER_SANDBOX {
                        // One query in ten is forwarded to dnsmasq; the rest are local.
                        let (name, want) = if q % 10 == 0 {
                            ("far.test".to_owned(), Ipv4Addr::new(10, 99, 0, 8))
                        } else {
                            let j = q % SANDBOXES;
                            (names[j].clone(), Ipv4Addr::new(10, 4, 0, 2 + j as u8))
                        };
                        let id = q as u16;
                        socket.send(&query_msg(id, &name, RecordType::A)).unwrap();
                        let n = socket.recv(&mut buf).expect("an answer");
                        let msg = Message::from_vec(&buf[..n]).unwrap();
                        assert_eq!(msg.metadata.id, id);
                        assert_eq!(a_records(&msg), vec![want], "{name}");
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .unwrap();
            });
        }
    });
    assert_eq!(answered.load(Ordering::Relaxed), SANDBOXES * PER_SANDBOX);
    let stats = w.service.stats();
    assert_eq!(stats.queries, (SANDBOXES * PER_SANDBOX) as u64, "{stats:?}");
    assert_eq!(
        stats.forward_answers,
        (SANDBOXES * PER_SANDBOX / 10) as u64,
        "{stats:?}"
    );
}

#[test]
fn malformed_packets_get_an_answer_or_a_counted_drop() {
    if !root_or_skip() {
        return;
    }
    let w = World::new(1, None, Duration::from_millis(300));
    w.service
        .table()
        .add_endpoint("n", w.name(0), Ipv4Addr::new(10, 5, 0, 2), &["me".into()])
        .unwrap();
    let s0 = w.sandbox(0);
    let good = query_msg(9, "me", RecordType::A);
    let mut response = good.clone();
    response[2] |= 0x80;
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut chaos = query_msg(9, "version.bind", RecordType::TXT);
    let class_at = chaos.len() - 2;
    chaos[class_at..].copy_from_slice(&3u16.to_be_bytes());
    let short = vec![0u8; 5];
    // A name of 60 labels of 63 bytes (RFC 1035 § 2.3.4 allows 255 bytes), 3.8 KB.
    let mut huge = good[..12].to_vec();
    for _ in 0..60 {
        huge.push(63);
        huge.extend_from_slice(&[b'a'; 63]);
    }
    huge.extend_from_slice(&[0, 0, 1, 0, 1]);
    let truncated = good[..good.len() - 3].to_vec();
    let drops = [short.as_slice(), &response];
    let answered = [looped.as_slice(), &two_questions, &chaos, &huge, &truncated];
    for bad in drops {
        assert!(udp_raw(&s0, bad, Duration::from_millis(200)).is_none());
    }
    for bad in answered {
        let answer = udp_raw(&s0, bad, QUERY_TIMEOUT).expect("an error answer");
        let code = Message::from_vec(&answer).unwrap().metadata.response_code;
        assert!(
            matches!(
                code,
                ResponseCode::FormErr | ResponseCode::Refused | ResponseCode::NotImp
            ),
            "{code:?}"
        );
    }
    // Still serving.
    assert_eq!(
        a_records(&ask(&s0, "me", RecordType::A)),
        vec![Ipv4Addr::new(10, 5, 0, 2)]
    );
    let stats = w.service.stats();
    assert_eq!(stats.dropped_malformed, 2, "{stats:?}");
    assert_eq!(stats.rejected, 5, "{stats:?}");
}

/// The TTL of the first answer record.
fn first_ttl(msg: &Message) -> u32 {
    msg.answers
        .first()
        .map(|r| r.ttl)
        .expect("an answer record")
}

#[test]
fn forwarded_answers_are_cached_aged_negative_too_and_expire() {
    if !root_or_skip() || !have_tool("dnsmasq", "dnsmasq") {
        return;
    }
    // dnsmasq answers the zone cache.test authoritatively (with an SOA in negative answers),
    // every TTL and the SOA's MINIMUM being TTL seconds.
    const TTL: u32 = 6;
    let w = World::with_dnsmasq_args(
        1,
        Some(HOSTS),
        Duration::from_millis(500),
        &[
            "--auth-zone=cache.test",
            "--auth-server=ns.cache.test,eth0",
            &format!("--auth-ttl={TTL}"),
            "--host-record=x.cache.test,10.99.1.5",
            "--host-record=z.cache.test,10.99.1.6",
        ],
    );
    let s0 = w.sandbox(0);
    let x = ask(&s0, "x.cache.test", RecordType::A);
    let stored = Instant::now();
    assert_eq!(a_records(&x), vec![Ipv4Addr::new(10, 99, 1, 5)]);
    assert_eq!(first_ttl(&x), TTL);
    let nx = ask(&s0, "nope.cache.test", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities.len(), 1, "an SOA: {nx:?}");
    ask(&s0, "z.cache.test", RecordType::A);
    let stats = w.service.stats();
    assert_eq!((stats.forwarded, stats.cache_misses), (3, 3), "{stats:?}");
    assert_eq!(stats.cache_entries, 3, "{stats:?}");

    // The upstream goes away: the cache still answers, positive and negative, in any case.
    w.kill_upstream();
    let mut mixed = Message::new(0x4343, MessageType::Query, OpCode::Query);
    mixed.metadata.recursion_desired = true;
    mixed.add_query(Query::query(
        Name::from_ascii("X.Cache.Test.").unwrap(),
        RecordType::A,
    ));
    let again = udp_raw(&s0, &mixed.to_vec().unwrap(), QUERY_TIMEOUT).expect("an answer");
    let again = Message::from_vec(&again).unwrap();
    assert_eq!(again.metadata.id, 0x4343);
    assert_eq!(a_records(&again), vec![Ipv4Addr::new(10, 99, 1, 5)]);
    assert_eq!(
        again.queries[0].name().to_ascii(),
        "X.Cache.Test.",
        "the client's question, as asked"
    );
    let nx = ask(&s0, "nope.cache.test", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let stats = w.service.stats();
    assert_eq!((stats.forwarded, stats.cache_hits), (3, 2), "{stats:?}");
    assert!(
        stored.elapsed() < Duration::from_secs(u64::from(TTL)),
        "the machine is too slow for this test's TTL"
    );

    // A name that becomes local is flushed: once it is local no more, it is forwarded again
    // (and fails, the upstream being down) instead of answered from the cache.
    let t = w.service.table();
    t.add_endpoint(
        "n",
        w.name(0),
        Ipv4Addr::new(10, 6, 0, 2),
        &["z.cache.test".into()],
    )
    .unwrap();
    assert_eq!(
        a_records(&ask(&s0, "z.cache.test", RecordType::A)),
        vec![Ipv4Addr::new(10, 6, 0, 2)]
    );
    assert!(t.remove_endpoint("n", w.name(0)));
    assert_eq!(
        ask(&s0, "z.cache.test", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::ServFail
    );

    // The TTL served goes down with the time spent in the cache...
    wait_for("a lower TTL from the cache", WAIT, || {
        let msg = ask(&s0, "x.cache.test", RecordType::A);
        assert_eq!(a_records(&msg), vec![Ipv4Addr::new(10, 99, 1, 5)]);
        (first_ttl(&msg) < TTL).then_some(())
    });
    // ... and the answer expires with it (then the dead upstream means SERVFAIL).
    wait_for("the cached answer to expire", WAIT, || {
        let msg = ask(&s0, "x.cache.test", RecordType::A);
        match msg.metadata.response_code {
            ResponseCode::ServFail => Some(()),
            _ => {
                assert!(
                    stored.elapsed() < Duration::from_secs(u64::from(TTL) + 1),
                    "served after its TTL: {msg:?}"
                );
                None
            }
        }
    });
    let stats = w.service.stats();
    assert!(stats.cache_hits >= 3, "{stats:?}");
    assert_eq!(stats.cache_evictions, 0, "{stats:?}");
}
