//! netsim: virtual hosts without root.
//!
//! A [`VirtualHost`] is a smoltcp `Interface` (MAC 02:00:00:00:00:NN, IPv4 10.0.0.NN/24) whose
//! `phy::Device` is the far end of an in-memory wire ([`MemoryPeer`]): what the host transmits is
//! injected towards the switch, what the switch sends is what the host receives. A [`Net`] owns
//! a [`Datapath`], the hosts plugged into its ports, and a virtual clock. Nothing sleeps: every
//! [`Net::step`] polls each host at the virtual time, lets the datapath move what they sent,
//! and advances the clock by one millisecond.
//!
//! Ports without a host ([`RawPort`]) are driven by hand with frames built by the tests, e.g.
//! tagged frames on a trunk or garbage.
//!
//! Each file under `tests/` is its own crate and uses only part of this module.
#![allow(dead_code)]

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol,
    Ipv4Address, Ipv4Packet, TcpPacket,
};
use std::time::Duration;
use switch::counters::CountersSnapshot;
use switch::datapath::{Datapath, NetworkId, PortHandle};
use switch::port::memory::{self, MemoryPeer};
use switch::{Bridge, BridgeConfig, FdbConfig, Instant, MacAddr, PortId, PortMode};

/// How far the virtual clock moves per [`Net::step`].
pub const STEP: Duration = Duration::from_millis(1);
/// Where the virtual clock starts (not zero, so "long ago" exists).
pub const START: Instant = Instant::from_secs(1_000);
/// The VLAN of a default access port.
pub const DEFAULT_VLAN: u16 = 1;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// The ICMP echo identifier every host's ping service uses.
pub const PING_IDENT: u16 = 0x7653;

/// The MAC address of host number `n`: 02:00:00:00:00:NN.
pub fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

/// The IPv4 address of host number `n`: 10.0.0.NN.
pub fn ip(n: u8) -> Ipv4Address {
    Ipv4Address::new(10, 0, 0, n)
}

/// The virtual clock as smoltcp sees it.
pub fn smol_time(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((now.as_nanos() / 1_000) as i64)
}

/// The parts of one received frame that tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The EtherType (or TPID) right after the addresses; 0 for frames shorter than 14 bytes.
    pub ethertype: u16,
    pub len: usize,
}

impl Seen {
    /// Summarises any bytes (short frames give zero addresses).
    pub fn of(frame: &[u8]) -> Seen {
        if frame.len() < 14 {
            return Seen {
                dst: MacAddr::ZERO,
                src: MacAddr::ZERO,
                ethertype: 0,
                len: frame.len(),
            };
        }
        Seen {
            dst: MacAddr::from_bytes(&frame[0..6]),
            src: MacAddr::from_bytes(&frame[6..12]),
            ethertype: u16::from_be_bytes([frame[12], frame[13]]),
            len: frame.len(),
        }
    }
}

/// A smoltcp device over the host end of an in-memory wire. Records every frame it receives
/// and checks the IPv4 and TCP checksums of what it receives itself: smoltcp is told not to
/// verify TCP checksums, so that a frame damaged in the switch reaches the byte-by-byte check
/// of a [`Transfer`] instead of being quietly dropped and retransmitted.
pub struct WireDevice {
    peer: MemoryPeer,
    /// Every frame the switch delivered to this host, in order.
    pub seen: Vec<Seen>,
    /// IPv4 frames received with a wrong IPv4 header or TCP checksum.
    pub bad_checksums: usize,
}

/// True if an untagged IPv4 frame's header checksum and (for TCP) its TCP checksum are right.
fn checksums_ok(frame: &[u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(&frame[14..]) else {
        return false;
    };
    if !ip.verify_checksum() {
        return false;
    }
    if ip.next_header() != IpProtocol::Tcp {
        return true;
    }
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    match TcpPacket::new_checked(ip.payload()) {
        Ok(tcp) => tcp.verify_checksum(&src, &dst),
        Err(_) => false,
    }
}

impl WireDevice {
    /// A device over `peer`.
    pub fn new(peer: MemoryPeer) -> WireDevice {
        WireDevice {
            peer,
            seen: Vec::new(),
            bad_checksums: 0,
        }
    }

    /// Plugs the device into another wire (the host "moves" to another port).
    pub fn rewire(&mut self, peer: MemoryPeer) -> MemoryPeer {
        std::mem::replace(&mut self.peer, peer)
    }
}

/// Receive token: one frame taken from the wire.
pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

/// Transmit token: the frame goes onto the wire towards the switch.
pub struct TxToken<'a>(&'a MemoryPeer);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.inject(&buf);
        r
    }
}

impl Device for WireDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.peer.take()?;
        let seen = Seen::of(&frame);
        if seen.ethertype == ETHERTYPE_IPV4 && !checksums_ok(&frame) {
            self.bad_checksums += 1;
        }
        self.seen.push(seen);
        Some((RxToken(frame), TxToken(&self.peer)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken(&self.peer))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp counts the Ethernet header in the MTU: 1500 bytes of IP + 14.
        caps.max_transmission_unit = 1514;
        caps.checksum.tcp = Checksum::Tx; // verified in `receive`, see above
        caps
    }
}

/// A host: a smoltcp interface and its sockets behind one switch port.
pub struct VirtualHost {
    pub name: String,
    pub mac: MacAddr,
    pub ip: Ipv4Address,
    /// The switch port the host is plugged into.
    pub port: PortHandle,
    pub iface: Interface,
    pub dev: WireDevice,
    pub sockets: SocketSet<'static>,
    /// The ICMP socket of the host's "ping service" (see [`VirtualHost::serve_icmp`]).
    icmp: SocketHandle,
    /// Echo replies received, as (from, sequence number).
    pub echo_replies: Vec<(Ipv4Address, u16)>,
    /// Echo requests this host answered.
    pub echo_answered: usize,
}

impl VirtualHost {
    fn new(n: u8, name: &str, port: PortHandle, peer: MemoryPeer, now: Instant) -> VirtualHost {
        let mut dev = WireDevice::new(peer);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac(n).0)));
        config.random_seed = 0x5eed_0000 + n as u64;
        let mut iface = Interface::new(config, &mut dev, smol_time(now));
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(ip(n)), 24))
                .expect("one address fits");
        });
        let mut sockets = SocketSet::new(vec![]);
        let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]);
        let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]);
        let mut socket = icmp::Socket::new(rx, tx);
        socket
            .bind(icmp::Endpoint::Ident(PING_IDENT))
            .expect("bind icmp socket");
        let icmp = sockets.add(socket);
        VirtualHost {
            name: name.to_string(),
            mac: mac(n),
            ip: ip(n),
            port,
            iface,
            dev,
            sockets,
            icmp,
            echo_replies: Vec::new(),
            echo_answered: 0,
        }
    }

    /// Lets smoltcp take what arrived and send what it has, at `now`.
    pub fn poll(&mut self, now: Instant) {
        self.iface
            .poll(smol_time(now), &mut self.dev, &mut self.sockets);
    }

    /// Frames received so far that match `pred`.
    pub fn seen_count(&self, pred: impl Fn(&Seen) -> bool) -> usize {
        self.dev.seen.iter().filter(|s| pred(s)).count()
    }

    /// Queues one echo request (identifier [`PING_IDENT`]); false if the queue is full.
    pub fn send_echo(&mut self, to: Ipv4Address, seq: u16) -> bool {
        self.send_icmp(
            to,
            Icmpv4Repr::EchoRequest {
                ident: PING_IDENT,
                seq_no: seq,
                data: &[0xa5; 32],
            },
        )
    }

    fn send_icmp(&mut self, to: Ipv4Address, repr: Icmpv4Repr<'_>) -> bool {
        let socket = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        let Ok(buf) = socket.send(repr.buffer_len(), IpAddress::Ipv4(to)) else {
            return false;
        };
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(buf),
            &ChecksumCapabilities::default(),
        );
        true
    }

    /// The host's ping service, run after each poll: answers echo requests and records echo
    /// replies. (smoltcp answers pings itself only with its `auto-icmp-echo-reply` feature,
    /// which the workspace leaves off, so the harness plays the kernel's part.)
    pub fn serve_icmp(&mut self) {
        let mut requests = Vec::new();
        let socket = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        while let Ok((payload, from)) = socket.recv() {
            #[allow(irrefutable_let_patterns)] // IPv6 is off in the workspace, maybe not forever
            let IpAddress::Ipv4(from) = from
            else {
                continue;
            };
            let Ok(packet) = Icmpv4Packet::new_checked(payload) else {
                continue;
            };
            match Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()) {
                Ok(Icmpv4Repr::EchoRequest { seq_no, data, .. }) => {
                    requests.push((from, seq_no, data.to_vec()))
                }
                Ok(Icmpv4Repr::EchoReply { seq_no, .. }) => self.echo_replies.push((from, seq_no)),
                _ => {}
            }
        }
        for (to, seq_no, data) in requests {
            let reply = Icmpv4Repr::EchoReply {
                ident: PING_IDENT,
                seq_no,
                data: &data,
            };
            if self.send_icmp(to, reply) {
                self.echo_answered += 1;
            }
        }
    }

    /// A TCP socket with `buf` bytes of buffer each way, acknowledging at once.
    pub fn tcp_socket(&mut self, buf: usize) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0; buf]);
        let tx = tcp::SocketBuffer::new(vec![0; buf]);
        let mut socket = tcp::Socket::new(rx, tx);
        socket.set_ack_delay(None);
        self.sockets.add(socket)
    }

    /// A TCP socket by handle.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }
}

/// A port driven by hand: the test injects frames and collects what the switch sends.
#[derive(Debug, Clone)]
pub struct RawPort {
    pub name: String,
    pub handle: PortHandle,
    pub peer: MemoryPeer,
}

/// A switch, its hosts and a virtual clock.
pub struct Net {
    pub dp: Datapath,
    /// Every network made; the first is the default for [`Net::add_host`].
    pub networks: Vec<NetworkId>,
    pub hosts: Vec<VirtualHost>,
    pub now: Instant,
    /// Steps run so far.
    pub steps: u64,
    next_seq: u16,
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Net {
    /// A datapath with one network with default MAC table settings.
    pub fn new() -> Net {
        Net::with_fdb(FdbConfig::default())
    }

    /// A datapath with one network whose MAC table has `fdb` settings.
    pub fn with_fdb(fdb: FdbConfig) -> Net {
        let mut dp = Datapath::new();
        let network = dp.add_network(BridgeConfig { fdb });
        Net {
            dp,
            networks: vec![network],
            hosts: Vec::new(),
            now: START,
            steps: 0,
            next_seq: 0,
        }
    }

    /// The default network.
    pub fn network(&self) -> NetworkId {
        self.networks[0]
    }

    /// Adds another network (its own bridge and MAC table).
    pub fn add_network(&mut self, fdb: FdbConfig) -> NetworkId {
        let id = self.dp.add_network(BridgeConfig { fdb });
        self.networks.push(id);
        id
    }

    /// Plugs host number `n` into a new access port of VLAN 1 of the default network.
    /// Returns its index in `hosts`.
    pub fn add_host(&mut self, n: u8) -> usize {
        let network = self.network();
        self.add_host_on(n, network, PortMode::DEFAULT)
    }

    /// Plugs host number `n` into a new port (`vethN`) of `network` in `mode`.
    pub fn add_host_on(&mut self, n: u8, network: NetworkId, mode: PortMode) -> usize {
        let name = format!("veth{n}");
        let (port, peer) = memory::wire(&name, memory::plain_caps());
        let handle = self
            .dp
            .add_port(network, Box::new(port), mode)
            .unwrap_or_else(|_| panic!("network {network:?} exists"));
        self.hosts
            .push(VirtualHost::new(n, &name, handle, peer, self.now));
        self.hosts.len() - 1
    }

    /// Adds a port with no host behind it, on the default network.
    pub fn add_raw_port(&mut self, name: &str, mode: PortMode) -> RawPort {
        let network = self.network();
        self.add_raw_port_on(name, network, mode)
    }

    /// Adds a port with no host behind it.
    pub fn add_raw_port_on(&mut self, name: &str, network: NetworkId, mode: PortMode) -> RawPort {
        let (port, peer) = memory::wire(name, memory::plain_caps());
        let handle = self
            .dp
            .add_port(network, Box::new(port), mode)
            .unwrap_or_else(|_| panic!("network {network:?} exists"));
        RawPort {
            name: name.to_string(),
            handle,
            peer,
        }
    }

    /// A host by index.
    pub fn host(&mut self, h: usize) -> &mut VirtualHost {
        &mut self.hosts[h]
    }

    /// One tick: every host polls, the datapath moves what they sent, the clock advances.
    pub fn step(&mut self) {
        let now = self.now;
        for host in &mut self.hosts {
            host.poll(now);
            host.serve_icmp();
        }
        self.dp.poll_all(now);
        self.now = self.now + STEP;
        self.steps += 1;
    }

    /// Steps `n` times.
    pub fn run_for(&mut self, n: u64) {
        for _ in 0..n {
            self.step();
        }
    }

    /// Steps until `cond` holds (checked before each step); returns the number of steps it took.
    /// Panics, naming `what`, if it does not hold within `max_steps`.
    pub fn run_until(
        &mut self,
        what: &str,
        max_steps: u64,
        mut cond: impl FnMut(&mut Net) -> bool,
    ) -> u64 {
        for i in 0..=max_steps {
            if cond(self) {
                return i;
            }
            if i < max_steps {
                self.step();
            }
        }
        panic!(
            "{what}: still not true after {max_steps} steps ({} ms of virtual time)",
            max_steps * STEP.as_millis() as u64
        );
    }

    /// Jumps the virtual clock forward without polling anything (hosts and switch idle).
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    /// Host `from` pings `to` (one echo request every 100 ms, like `ping -i 0.1`) until a
    /// reply comes back; returns the steps it took, or `None` if none came within `max_steps`.
    pub fn ping(&mut self, from: usize, to: Ipv4Address, max_steps: u64) -> Option<u64> {
        let first = self.next_seq;
        for i in 0..max_steps {
            if i % 100 == 0 && self.hosts[from].send_echo(to, self.next_seq) {
                self.next_seq = self.next_seq.wrapping_add(1);
            }
            self.step();
            let sent = self.next_seq.wrapping_sub(first);
            let answered = self.hosts[from]
                .echo_replies
                .iter()
                .any(|&(src, seq)| src == to && seq.wrapping_sub(first) < sent);
            if answered {
                return Some(i + 1);
            }
        }
        None
    }

    /// The default network's bridge.
    pub fn bridge(&self) -> &Bridge {
        self.dp.bridge(self.network()).expect("default network")
    }

    /// The default network's bridge, to change its table.
    pub fn bridge_mut(&mut self) -> &mut Bridge {
        let network = self.network();
        self.dp.bridge_mut(network).expect("default network")
    }

    /// The bridge-local id of a port (what the MAC table stores).
    pub fn local(&self, handle: PortHandle) -> PortId {
        self.dp.port_location(handle).expect("port exists").1
    }

    /// Where the default network's table sends `mac` in `vlan` right now.
    pub fn fdb_port(&self, vlan: u16, mac: MacAddr) -> Option<PortId> {
        self.bridge().fdb().lookup(self.now, vlan, mac)
    }

    /// A copy of a port's counters.
    pub fn counters(&self, handle: PortHandle) -> CountersSnapshot {
        self.dp.counters(handle).expect("port exists").snapshot()
    }
}

/// A TCP transfer of a pseudo-random byte stream from one host to another, checked byte by
/// byte on arrival.
pub struct Transfer {
    pub from: usize,
    pub to: usize,
    client: SocketHandle,
    server: SocketHandle,
    data: Vec<u8>,
    sent: usize,
    pub received: usize,
    closed: bool,
}

/// `len` bytes of a xorshift stream seeded with `seed` (the same seed gives the same bytes).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

impl Transfer {
    /// Opens a listener on `to` and connects to it from `from`; `len` bytes of stream `seed`
    /// will go across.
    pub fn start(
        net: &mut Net,
        from: usize,
        to: usize,
        port: u16,
        len: usize,
        seed: u64,
    ) -> Transfer {
        const BUF: usize = 256 * 1024;
        let server = net.hosts[to].tcp_socket(BUF);
        net.hosts[to]
            .tcp(server)
            .listen(port)
            .expect("listen on a fresh socket");
        let client = net.hosts[from].tcp_socket(BUF);
        let remote = (IpAddress::Ipv4(net.hosts[to].ip), port);
        let host = &mut net.hosts[from];
        host.sockets
            .get_mut::<tcp::Socket>(client)
            .connect(host.iface.context(), remote, 40_000 + port)
            .expect("connect");
        Transfer {
            from,
            to,
            client,
            server,
            data: pattern(seed, len),
            sent: 0,
            received: 0,
            closed: false,
        }
    }

    /// Moves bytes in and out of the sockets; panics on the first byte that differs from the
    /// stream sent.
    pub fn pump(&mut self, net: &mut Net) {
        let client = net.hosts[self.from].tcp(self.client);
        if client.can_send() && self.sent < self.data.len() {
            self.sent += client
                .send_slice(&self.data[self.sent..])
                .expect("send on an open socket");
        }
        if self.sent == self.data.len() && !self.closed && client.send_queue() == 0 {
            client.close();
            self.closed = true;
        }
        let server = net.hosts[self.to].tcp(self.server);
        while server.can_recv() {
            let (data, received) = (&self.data, self.received);
            let n = server
                .recv(|buf| {
                    assert!(
                        received + buf.len() <= data.len(),
                        "received {} bytes, more than the {} sent",
                        received + buf.len(),
                        data.len()
                    );
                    let want = &data[received..received + buf.len()];
                    if let Some(i) = (0..buf.len()).find(|&i| buf[i] != want[i]) {
                        panic!(
                            "byte {} of the stream differs: got {:#04x}, sent {:#04x}",
                            received + i,
                            buf[i],
                            want[i]
                        );
                    }
                    (buf.len(), buf.len())
                })
                .expect("recv on a readable socket");
            self.received += n;
        }
    }

    /// True once every byte arrived, was checked, and the sender's FIN reached the receiver.
    pub fn done(&self, net: &mut Net) -> bool {
        self.received == self.data.len() && !net.hosts[self.to].tcp(self.server).may_recv()
    }

    /// Bytes the stream has.
    pub fn len(&self) -> usize {
        self.data.len()
    }
}
