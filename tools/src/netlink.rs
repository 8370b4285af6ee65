//! Synchronous rtnetlink: links, veth pairs, addresses and routes.
//!
//! A [`Netlink`] is one `NETLINK_ROUTE` socket (rtnetlink, RFC 3549 § 3) living in the network
//! namespace of the thread that opened it. Every change is sent with `NLM_F_ACK` and the call
//! waits for the kernel's answer, so it returns only once the kernel has done the change or said
//! why not. A kernel refusal becomes an `io::Error` that names what was tried, carries the errno
//! (see [`errno`]) and, when the kernel gave one, its extended-ack explanation.
//!
//! The messages are the ones iproute2 sends (`ip link add … type veth peer …`, `ip addr add`,
//! `ip route add`); this module never runs `ip`. The message builders are plain functions so the
//! unit tests check them without root; the tests that talk to a kernel run as root inside network
//! namespaces of their own.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use netlink_packet_core::{
    ErrorMessage, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK,
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The longest interface alias the kernel accepts (`IFALIASZ` - 1).
pub const MAX_IFALIAS_LEN: usize = 255;

/// Receive buffer size: the kernel packs dump replies into datagrams of up to 32 KiB.
const RECV_BUFFER_LEN: usize = 64 * 1024;

/// How often a dump is retried when the kernel reports it was interrupted by a change.
const DUMP_ATTEMPTS: usize = 3;

/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Size of `struct nlmsghdr`.
const NLMSG_HEADER_LEN: usize = 16;

/// Operational state of a link (RFC 2863 `ifOperStatus`, the kernel's `IF_OPER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    /// The kernel cannot tell (loopback and TAPs report this while they work).
    Unknown,
    /// Some component is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because a lower layer is down (e.g. a veth whose peer is down).
    LowerLayerDown,
    /// In a test mode.
    Testing,
    /// Waiting for an external event.
    Dormant,
    /// Up and able to pass packets.
    Up,
    /// A state this code does not know.
    Other(u8),
}

impl From<State> for OperState {
    fn from(state: State) -> OperState {
        match state {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            State::Other(n) => OperState::Other(n),
            _ => OperState::Unknown,
        }
    }
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperState::Unknown => f.write_str("unknown"),
            OperState::NotPresent => f.write_str("notpresent"),
            OperState::Down => f.write_str("down"),
            OperState::LowerLayerDown => f.write_str("lowerlayerdown"),
            OperState::Testing => f.write_str("testing"),
            OperState::Dormant => f.write_str("dormant"),
            OperState::Up => f.write_str("up"),
            OperState::Other(n) => write!(f, "other({n})"),
        }
    }
}

/// One network interface as the kernel reports it (`RTM_NEWLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index, unique within its namespace.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The MTU in bytes.
    pub mtu: u32,
    /// The most segments of one TCP super-frame the stack builds for this link
    /// (`IFLA_GSO_MAX_SEGS`); 0 when the kernel did not say.
    pub gso_max_segs: u32,
    /// The hardware address; all zeros for links without one (e.g. a TUN device).
    pub mac: [u8; 6],
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operational state (`IFLA_OPERSTATE`).
    pub oper_state: OperState,
    /// The link kind (`veth`, `tun`, `bridge`…), absent for physical devices and `lo`.
    pub kind: Option<String>,
    /// The interface alias (`IFLA_IFALIAS`, `ip link set NAME alias TEXT`), when it has one.
    pub alias: Option<String>,
    /// IPv6 address generation is off (`IFLA_INET6_ADDR_GEN_MODE` is `NONE`): the link makes
    /// no link-local address and sends no router solicitation.
    pub ipv6_autoconf_off: bool,
}

impl LinkInfo {
    /// Reads the fields this crate cares about out of a kernel link message.
    fn from_message(message: &LinkMessage) -> LinkInfo {
        let mut info = LinkInfo {
            index: message.header.index,
            name: String::new(),
            mtu: 0,
            gso_max_segs: 0,
            mac: [0; 6],
            up: message.header.flags.contains(LinkFlags::Up),
            oper_state: OperState::Unknown,
            kind: None,
            alias: None,
            ipv6_autoconf_off: false,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => info.name = name.clone(),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => {
                    info.alias = Some(alias.clone());
                }
                LinkAttribute::AfSpecUnspec(families) => {
                    info.ipv6_autoconf_off = families.iter().any(|f| match f {
                        AfSpecUnspec::Inet6(attrs) => {
                            attrs.contains(&AfSpecInet6::AddrGenMode(In6AddrGenMode::None))
                        }
                        _ => false,
                    });
                }
                LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
                LinkAttribute::GsoMaxSegs(segs) => info.gso_max_segs = *segs,
                LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                    info.mac.copy_from_slice(bytes);
                }
                LinkAttribute::OperState(state) => info.oper_state = (*state).into(),
                LinkAttribute::LinkInfo(infos) => {
                    for item in infos {
                        if let NlLinkInfo::Kind(kind) = item {
                            info.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// A kernel refusal (or socket failure) with what was being done and the kernel's own words.
#[derive(Debug)]
pub struct NetlinkError {
    /// What was being attempted, e.g. `create veth pair v0/v1`.
    pub what: String,
    /// The underlying OS error (from the kernel's negative errno).
    pub source: io::Error,
    /// The kernel's extended-ack message, when it sent one.
    pub detail: Option<String>,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Returns the errno behind an error from this module, if there is one.
pub fn errno(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<NetlinkError>())
            .and_then(|nl| nl.source.raw_os_error())
    })
}

/// Wraps `source` with what was being attempted; "no such device" becomes `NotFound`.
fn with_context(source: io::Error, what: &str, detail: Option<String>) -> io::Error {
    let kind = match source.raw_os_error() {
        Some(libc::ENODEV | libc::ESRCH) => io::ErrorKind::NotFound,
        _ => source.kind(),
    };
    io::Error::new(
        kind,
        NetlinkError {
            what: what.to_string(),
            source,
            detail,
        },
    )
}

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub fn validate_ifname(name: &str) -> io::Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}: it {problem}"),
        )),
        None => Ok(()),
    }
}

/// Checks that `prefix_len` fits IPv4 and `addr` has no bits set past it (a network address).
fn validate_cidr(addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid prefix length /{prefix_len} for an IPv4 address"),
        ));
    }
    if u32::from(addr) & !prefix_mask(prefix_len) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr}/{prefix_len} has host bits set: not a network address"),
        ));
    }
    Ok(())
}

/// The netmask of an IPv4 prefix length (0..=32) as a host-order integer.
fn prefix_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

/// A link message that names a link by its name (the kernel looks it up for us).
fn link_by_name(name: &str) -> LinkMessage {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_string()));
    message
}

/// A link message that addresses a link by its index.
fn link_by_index(index: u32) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
}

/// The `RTM_NEWLINK` body creating a veth pair whose peer is born named, addressed and moved.
///
/// Layout: `IFLA_IFNAME host, IFLA_MTU, IFLA_LINKINFO { IFLA_INFO_KIND "veth", IFLA_INFO_DATA {
/// VETH_INFO_PEER { ifinfomsg, IFLA_IFNAME peer, IFLA_ADDRESS, IFLA_MTU, IFLA_GSO_MAX_SEGS,
/// IFLA_NET_NS_FD } } }`.
fn veth_message(
    host_name: &str,
    peer_name: &str,
    peer_netns_fd: Option<RawFd>,
    mtu: Option<u32>,
    peer_mac: Option<[u8; 6]>,
    peer_gso_max_segs: Option<u32>,
) -> LinkMessage {
    let mut peer = link_by_name(peer_name);
    if let Some(mac) = peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(mtu) = mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(segs) = peer_gso_max_segs {
        peer.attributes.push(LinkAttribute::GsoMaxSegs(segs));
    }
    if let Some(fd) = peer_netns_fd {
        peer.attributes.push(LinkAttribute::NetNsFd(fd));
    }

    let mut message = link_by_name(host_name);
    if let Some(mtu) = mtu {
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        NlLinkInfo::Kind(InfoKind::Veth),
        NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    message
}

/// Checks an interface alias: at most 255 bytes, no NUL (the kernel stores it as a C string).
pub fn validate_alias(alias: &str) -> io::Result<()> {
    if alias.len() > MAX_IFALIAS_LEN || alias.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface alias {alias:?}: longer than 255 bytes or contains NUL"),
        ));
    }
    Ok(())
}

/// The `RTM_SETLINK` body that marks link `index` with `alias` and/or turns its IPv6
/// address generation off: `IFLA_IFALIAS`, `IFLA_AF_SPEC { AF_INET6 {
/// IFLA_INET6_ADDR_GEN_MODE = IN6_ADDR_GEN_MODE_NONE } }`.
fn mark_message(index: u32, alias: Option<&str>, ipv6_autoconf_off: bool) -> LinkMessage {
    let mut message = link_by_index(index);
    if let Some(alias) = alias {
        message
            .attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
    }
    if ipv6_autoconf_off {
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
    }
    message
}

/// What [`Netlink::create_veth_with`] makes: a veth pair, its peer configured at birth.
#[derive(Debug, Clone, Copy, Default)]
pub struct VethSpec<'a> {
    /// The end that stays in this namespace.
    pub host_name: &'a str,
    /// The other end's name.
    pub peer_name: &'a str,
    /// The namespace the peer is born in (this one when `None`).
    pub peer_netns_fd: Option<BorrowedFd<'a>>,
    /// The MTU of both ends.
    pub mtu: Option<u32>,
    /// The peer's hardware address.
    pub peer_mac: Option<[u8; 6]>,
    /// The most segments of a TCP super-frame the peer's stack builds.
    pub peer_gso_max_segs: Option<u32>,
    /// The host end's alias (`IFLA_IFALIAS`): who made it.
    pub host_alias: Option<&'a str>,
}

/// The `RTM_NEWADDR`/`RTM_DELADDR` body for `addr/prefix_len` on link `index`.
fn address_message(index: u32, addr: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix_len;
    message.header.scope = AddressScope::Universe;
    message.header.index = index;
    message
        .attributes
        .push(AddressAttribute::Local(addr.into()));
    message
        .attributes
        .push(AddressAttribute::Address(addr.into()));
    if prefix_len < 31 {
        let broadcast = u32::from(addr) | !prefix_mask(prefix_len);
        message
            .attributes
            .push(AddressAttribute::Broadcast(broadcast.into()));
    }
    message
}

/// The `RTM_NEWROUTE` body for an IPv4 unicast route in the main table, as `ip route add` sends.
fn route_message(dst: (Ipv4Addr, u8), via: Option<Ipv4Addr>, oif: Option<u32>) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = dst.1;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Boot;
    // A route through a gateway reaches beyond the link; one without is on the link itself.
    message.header.scope = if via.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    message.header.kind = RouteType::Unicast;
    if dst.1 > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst.0)));
    }
    if let Some(gateway) = via {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    }
    if let Some(index) = oif {
        message.attributes.push(RouteAttribute::Oif(index));
    }
    message
}

/// Serializes one request with the given flags and sequence number.
fn encode(message: RouteNetlinkMessage, flags: u16, sequence_number: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = sequence_number;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// Extracts the kernel's extended-ack text (`NLMSGERR_ATTR_MSG`) from an error reply.
///
/// `payload` is what follows the errno: the echoed request (only its header when
/// `NLM_F_CAPPED`), then attributes when `NLM_F_ACK_TLVS`.
fn ext_ack_message(payload: &[u8], reply_flags: u16) -> Option<String> {
    if reply_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if reply_flags & NLM_F_CAPPED != 0 {
        NLMSG_HEADER_LEN
    } else {
        let len = payload.get(0..4)?;
        u32::from_ne_bytes(len.try_into().ok()?) as usize
    };
    let mut rest = payload.get(align4(echoed)..)?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & netlink_packet_core::NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &rest[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    None
}

/// Rounds up to the 4-byte alignment of netlink messages and attributes.
fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Turns a kernel error reply into an `io::Error` with context.
fn kernel_error(error: &ErrorMessage, reply_flags: u16, what: &str) -> io::Error {
    let source = io::Error::from_raw_os_error(error.raw_code().abs());
    with_context(source, what, ext_ack_message(&error.header, reply_flags))
}

/// A synchronous rtnetlink handle: one `NETLINK_ROUTE` socket in one network namespace.
pub struct Netlink {
    socket: Socket,
    sequence_number: u32,
    buffer: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.socket.as_raw_fd())
            .field("sequence_number", &self.sequence_number)
            .finish()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn new() -> io::Result<Netlink> {
        let what = "open NETLINK_ROUTE socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| with_context(e, what, None))?;
        socket
            .bind_auto()
            .map_err(|e| with_context(e, what, None))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| with_context(e, what, None))?;
        // Short error replies (no echo of our request) that carry the kernel's explanation.
        // Both are conveniences: older kernels without them still work.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            sequence_number: 0,
            buffer: Vec::with_capacity(RECV_BUFFER_LEN),
        })
    }

    /// Sends a change with `NLM_F_ACK` (plus `flags`) and waits for the kernel's ACK.
    fn ack(&mut self, message: RouteNetlinkMessage, flags: u16, what: &str) -> io::Result<()> {
        self.exchange(message, NLM_F_REQUEST | NLM_F_ACK | flags, what)
            .map(|_| ())
    }

    /// Sends a `NLM_F_DUMP` request and returns every message of the answer.
    fn dump(
        &mut self,
        message: RouteNetlinkMessage,
        what: &str,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut attempt = 1;
        loop {
            match self.exchange(message.clone(), NLM_F_REQUEST | NLM_F_DUMP, what) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && attempt < DUMP_ATTEMPTS => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Sends one request and collects the messages answering it, up to the ACK or `NLMSG_DONE`.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence_number = self.sequence_number.wrapping_add(1);
        let sequence_number = self.sequence_number;
        let request = encode(message, flags, sequence_number);
        loop {
            match self.socket.send(&request, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(with_context(e, what, None)),
            }
        }

        let is_dump = flags & NLM_F_DUMP != 0;
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            self.buffer.clear();
            // With MSG_TRUNC the kernel returns the datagram's real length, so a reply larger
            // than the buffer is noticed instead of being silently cut.
            let received = match self.socket.recv(&mut self.buffer, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(with_context(e, what, None)),
            };
            if received > self.buffer.len() {
                let e = io::Error::new(io::ErrorKind::InvalidData, "netlink reply truncated");
                return Err(with_context(e, what, None));
            }

            let mut rest = &self.buffer[..];
            while !rest.is_empty() {
                let frame = NetlinkBuffer::new_checked(rest).map_err(|e| {
                    let e = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                    with_context(e, what, None)
                })?;
                let len = frame.length() as usize;
                let reply_flags = frame.flags();
                let reply_sequence = frame.sequence_number();
                let bytes = &rest[..len];
                rest = rest.get(align4(len)..).unwrap_or_default();
                if reply_sequence != sequence_number {
                    // The late answer to an earlier request that gave up: not ours.
                    continue;
                }
                if reply_flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }

                let reply = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                    Ok(reply) => reply,
                    Err(e) if is_dump => {
                        tracing::warn!(error = %e, what, "skipping undecodable netlink message");
                        continue;
                    }
                    Err(e) => {
                        let e = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                        return Err(with_context(e, what, None));
                    }
                };
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(error) if error.code.is_none() => return Ok(replies),
                    NetlinkPayload::Error(error) => {
                        return Err(kernel_error(&error, reply_flags, what))
                    }
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        let e = io::Error::from_raw_os_error(-done.code);
                        return Err(with_context(e, what, None));
                    }
                    NetlinkPayload::Done(_) if interrupted => {
                        let e = io::Error::new(
                            io::ErrorKind::Interrupted,
                            "dump interrupted by a concurrent change",
                        );
                        return Err(with_context(e, what, None));
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }

    /// Sends one request built elsewhere (tc, neighbours: `underlay.rs`) with `flags`, and
    /// returns the messages answering it.
    pub(crate) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(message, flags, what)
    }

    /// Returns the index of the link called `name`, or `None` if there is none.
    ///
    /// Asked with `SIOCGIFINDEX` on the netlink socket (the kernel answers socket ioctls it
    /// does not know from the socket's own namespace), not with `RTM_GETLINK`: a veth whose
    /// peer is in another namespace is answered with that namespace's id, which the kernel
    /// finds by walking every peer namespace's id, so with 10,000 sandboxes a `GETLINK` of a
    /// host end costs 10,000 steps where this lookup is one hash probe.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        validate_ifname(name)?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        // validate_ifname: at most IFNAMSIZ - 1 bytes, so the name stays NUL-terminated.
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        let fd = self.socket.as_raw_fd();
        // SAFETY: `fd` is our open netlink socket and `req` a valid ifreq with a NUL-terminated
        // name; SIOCGIFINDEX only writes an int into its union.
        let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX as _, &mut req as *mut libc::ifreq) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODEV) => Ok(None),
                _ => Err(with_context(
                    e,
                    &format!("get the index of link {name}"),
                    None,
                )),
            };
        }
        // SAFETY: SIOCGIFINDEX succeeded, so the union holds the index.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        Ok(u32::try_from(index).ok().filter(|i| *i > 0))
    }

    /// Tells whether a link called `name` exists in this namespace.
    pub fn link_exists(&mut self, name: &str) -> io::Result<bool> {
        Ok(self.link_info(name)?.is_some())
    }

    /// Returns what the kernel knows of the link called `name`, or `None` if there is none.
    pub fn link_info(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        validate_ifname(name)?;
        let what = format!("get link {name}");
        let request = RouteNetlinkMessage::GetLink(link_by_name(name));
        match self.exchange(request, NLM_F_REQUEST | NLM_F_ACK, &what) {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(LinkInfo::from_message(link)),
                _ => None,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Returns every link of this namespace.
    pub fn list_links(&mut self) -> io::Result<Vec<LinkInfo>> {
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let replies = self.dump(request, "list links")?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(LinkInfo::from_message(link)),
                _ => None,
            })
            .collect())
    }

    /// Returns the index of `name`, or a `NotFound` error that says which link is missing.
    fn require_index(&mut self, name: &str) -> io::Result<u32> {
        self.link_index(name)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link named {name}")))
    }

    /// Creates a veth pair in one request, the peer already named, addressed and in its netns;
    /// the host end has IPv6 autoconfiguration off (see [`Netlink::create_veth_with`]).
    ///
    /// `mtu` applies to both ends; `peer_mac` and `peer_gso_max_segs` (the most segments of a
    /// TCP super-frame the peer's stack builds) to the peer. With `peer_netns_fd` the peer is
    /// born inside that namespace, so it never appears in this one (no race with other tools).
    pub fn create_veth(
        &mut self,
        host_name: &str,
        peer_name: &str,
        peer_netns_fd: Option<BorrowedFd<'_>>,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
        peer_gso_max_segs: Option<u32>,
    ) -> io::Result<()> {
        self.create_veth_with(&VethSpec {
            host_name,
            peer_name,
            peer_netns_fd,
            mtu,
            peer_mac,
            peer_gso_max_segs,
            host_alias: None,
        })
    }

    /// Creates a veth pair (`RTM_NEWLINK`), then marks its host end (`RTM_SETLINK`, before it
    /// is ever up): the alias, and IPv6 address generation off, so the host end never makes a
    /// link-local address nor sends router solicitations. The kernel ignores both attributes
    /// in a creating request, hence the second one. If the marking fails, the pair is deleted.
    /// Last, IPv6 is turned off on the host end altogether (see [`disable_ipv6`]).
    pub fn create_veth_with(&mut self, spec: &VethSpec<'_>) -> io::Result<()> {
        let (host_name, peer_name) = (spec.host_name, spec.peer_name);
        validate_ifname(host_name)?;
        validate_ifname(peer_name)?;
        if let Some(alias) = spec.host_alias {
            validate_alias(alias)?;
        }
        let message = veth_message(
            host_name,
            peer_name,
            spec.peer_netns_fd.map(|fd| fd.as_raw_fd()),
            spec.mtu,
            spec.peer_mac,
            spec.peer_gso_max_segs,
        );
        let what = format!("create veth pair {host_name}/{peer_name}");
        self.ack(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &what,
        )?;
        let marked = self
            .require_index(host_name)
            .and_then(|index| self.mark(index, host_name, spec.host_alias, true));
        if let Err(e) = marked {
            let _ = self.delete_link(host_name);
            return Err(e);
        }
        disable_ipv6(host_name);
        Ok(())
    }

    /// Sets the alias and/or turns IPv6 autoconfiguration off on link `index`. A kernel
    /// without IPv6 (`EAFNOSUPPORT`) has nothing to turn off: only the alias is set then.
    fn mark(
        &mut self,
        index: u32,
        name: &str,
        alias: Option<&str>,
        ipv6_autoconf_off: bool,
    ) -> io::Result<()> {
        let what = match alias {
            Some(alias) => format!("set alias {alias:?} on link {name}"),
            None => format!("turn IPv6 autoconfiguration off on link {name}"),
        };
        let message = mark_message(index, alias, ipv6_autoconf_off);
        match self.ack(RouteNetlinkMessage::SetLink(message), 0, &what) {
            Err(e) if ipv6_autoconf_off && errno(&e) == Some(libc::EAFNOSUPPORT) => match alias {
                Some(_) => {
                    let message = mark_message(index, alias, false);
                    self.ack(RouteNetlinkMessage::SetLink(message), 0, &what)
                }
                None => Ok(()),
            },
            result => result,
        }
    }

    /// Sets the link's alias (`ip link set NAME alias TEXT`); an empty text removes it.
    pub fn set_alias(&mut self, name: &str, alias: &str) -> io::Result<()> {
        validate_alias(alias)?;
        let index = self.require_index(name)?;
        self.mark(index, name, Some(alias), false)
    }

    /// Turns IPv6 address generation off on the link (`ip link set NAME addrgenmode none`):
    /// no link-local address, so no router solicitation or MLD report from it. A link already
    /// up is taken down and up again, which drops the link-local address it already made.
    /// Without IPv6 in the kernel there is nothing to do.
    pub fn disable_ipv6_autoconf(&mut self, name: &str) -> io::Result<()> {
        let link = self.link_info(name)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no link named {name}"))
        })?;
        self.mark(link.index, name, None, true)?;
        if link.up {
            self.set_down(name)?;
            self.set_up(name)?;
        }
        Ok(())
    }

    /// Deletes the link called `name` (both ends for a veth); a missing one is `NotFound`.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        validate_ifname(name)?;
        let what = format!("delete link {name}");
        self.ack(RouteNetlinkMessage::DelLink(link_by_name(name)), 0, &what)
    }

    /// Sets the link administratively up (`ip link set NAME up`).
    pub fn set_up(&mut self, name: &str) -> io::Result<()> {
        self.set_admin_state(name, true)
    }

    /// Sets the link administratively down (`ip link set NAME down`).
    pub fn set_down(&mut self, name: &str) -> io::Result<()> {
        self.set_admin_state(name, false)
    }

    /// Flips `IFF_UP` on the link, leaving its other flags alone (`change_mask`).
    fn set_admin_state(&mut self, name: &str, up: bool) -> io::Result<()> {
        let index = self.require_index(name)?;
        let mut message = link_by_index(index);
        message.header.change_mask = LinkFlags::Up;
        if up {
            message.header.flags = LinkFlags::Up;
        }
        let what = format!("set link {name} {}", if up { "up" } else { "down" });
        self.ack(RouteNetlinkMessage::SetLink(message), 0, &what)
    }

    /// Sets the link's MTU.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> io::Result<()> {
        let index = self.require_index(name)?;
        let mut message = link_by_index(index);
        message.attributes.push(LinkAttribute::Mtu(mtu));
        let what = format!("set mtu {mtu} on link {name}");
        self.ack(RouteNetlinkMessage::SetLink(message), 0, &what)
    }

    /// Sets the link's hardware address.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let index = self.require_index(name)?;
        let mut message = link_by_index(index);
        message
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
        let what = format!("set address {} on link {name}", format_mac(mac));
        self.ack(RouteNetlinkMessage::SetLink(message), 0, &what)
    }

    /// Renames the link (`ip link set NAME name NEW`; older kernels want it down first).
    pub fn rename(&mut self, name: &str, new_name: &str) -> io::Result<()> {
        validate_ifname(new_name)?;
        let index = self.require_index(name)?;
        let mut message = link_by_index(index);
        message
            .attributes
            .push(LinkAttribute::IfName(new_name.to_string()));
        let what = format!("rename link {name} to {new_name}");
        self.ack(RouteNetlinkMessage::SetLink(message), 0, &what)
    }

    /// Moves the link into the network namespace `netns_fd` refers to.
    pub fn move_to_netns(&mut self, name: &str, netns_fd: BorrowedFd<'_>) -> io::Result<()> {
        let index = self.require_index(name)?;
        let mut message = link_by_index(index);
        message
            .attributes
            .push(LinkAttribute::NetNsFd(netns_fd.as_raw_fd()));
        let what = format!("move link {name} to another network namespace");
        self.ack(RouteNetlinkMessage::SetLink(message), 0, &what)
    }

    /// Adds `addr/prefix_len` to the link (`ip addr add ADDR/LEN dev IFNAME`).
    pub fn add_address(&mut self, ifname: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        if prefix_len > 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid prefix length /{prefix_len} for an IPv4 address"),
            ));
        }
        let index = self.require_index(ifname)?;
        let message = address_message(index, addr, prefix_len);
        let what = format!("add address {addr}/{prefix_len} to link {ifname}");
        self.ack(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &what,
        )
    }

    /// Removes `addr/prefix_len` from the link (`ip addr del ADDR/LEN dev IFNAME`).
    pub fn del_address(&mut self, ifname: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let index = self.require_index(ifname)?;
        let message = address_message(index, addr, prefix_len);
        let what = format!("delete address {addr}/{prefix_len} from link {ifname}");
        self.ack(RouteNetlinkMessage::DelAddress(message), 0, &what)
    }

    /// Returns the IPv4 addresses of the link with their prefix lengths.
    pub fn list_addresses(&mut self, ifname: &str) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let index = self.require_index(ifname)?;
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let what = format!("list addresses of link {ifname}");
        let replies = self.dump(RouteNetlinkMessage::GetAddress(request), &what)?;
        let mut addresses = Vec::new();
        for reply in &replies {
            let RouteNetlinkMessage::NewAddress(message) = reply else {
                continue;
            };
            if message.header.index != index || message.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
            // point-to-point links and the same as IFA_LOCAL otherwise.
            let mut local = None;
            let mut address = None;
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Local(std::net::IpAddr::V4(a)) => local = Some(*a),
                    AddressAttribute::Address(std::net::IpAddr::V4(a)) => address = Some(*a),
                    _ => {}
                }
            }
            if let Some(addr) = local.or(address) {
                addresses.push((addr, message.header.prefix_len));
            }
        }
        Ok(addresses)
    }

    /// Adds the IPv4 default route of the main table via `gateway` (`ip route add default via GW`).
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        self.add_route((Ipv4Addr::UNSPECIFIED, 0), Some(gateway), None)
    }

    /// Adds an IPv4 route to `dst` in the main table, through `via` and/or out of `dev`.
    pub fn add_route(
        &mut self,
        dst: (Ipv4Addr, u8),
        via: Option<Ipv4Addr>,
        dev: Option<&str>,
    ) -> io::Result<()> {
        validate_cidr(dst.0, dst.1)?;
        if via.is_none() && dev.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("route to {}/{} needs a gateway or a device", dst.0, dst.1),
            ));
        }
        let oif = match dev {
            Some(name) => Some(self.require_index(name)?),
            None => None,
        };
        let message = route_message(dst, via, oif);
        let mut what = format!("add route {}/{}", dst.0, dst.1);
        if let Some(gateway) = via {
            what += &format!(" via {gateway}");
        }
        if let Some(name) = dev {
            what += &format!(" dev {name}");
        }
        self.ack(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &what,
        )
    }

    /// Returns the destinations of the IPv4 unicast routes of the main table (default included).
    pub fn list_routes_v4(&mut self) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetRoute(request), "list IPv4 routes")?;
        let mut routes = Vec::new();
        for reply in &replies {
            let RouteNetlinkMessage::NewRoute(message) = reply else {
                continue;
            };
            if message.header.address_family != AddressFamily::Inet
                || message.header.kind != RouteType::Unicast
            {
                continue;
            }
            // Table ids above 255 only fit the RTA_TABLE attribute; it wins when present.
            let mut table = u32::from(message.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                    _ => {}
                }
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                routes.push((dst, message.header.destination_prefix_length));
            }
        }
        Ok(routes)
    }
}

/// Turns IPv6 off on link `name` of the calling thread's namespace (`net.ipv6.conf.NAME.
/// disable_ipv6`), before it is first up: no address, and none of the multicast route
/// (`ff00::/8`) the kernel adds for every link it brings up. Those routes all hang on one FIB
/// node, which each new one walks, so with 10,000 switch ports bringing one up cost 10,000
/// steps. A switch port has no use for IPv6. Best effort: a kernel without IPv6 has nothing to
/// turn off, and a failure only costs that walk, so it is logged, not returned.
fn disable_ipv6(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => {}
        Err(_) if !std::path::Path::new("/proc/sys/net/ipv6").exists() => {}
        Err(e) => tracing::warn!(link = name, error = %e, "cannot turn IPv6 off on the link"),
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
fn format_mac(mac: [u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{in_netns, new_netns, test_support::run_as_root_in_new_netns};
    use std::os::fd::AsFd;

    /// Serializes a message as a request and parses it back, as the kernel would read it.
    fn round_trip(message: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let bytes = encode(message, NLM_F_REQUEST | NLM_F_ACK, 7);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(parsed.header.sequence_number, 7);
        assert_eq!(parsed.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(parsed.header.length as usize, bytes.len());
        match parsed.payload {
            NetlinkPayload::InnerMessage(inner) => inner,
            other => panic!("unexpected payload {other:?}"),
        }
    }

    #[test]
    fn ifname_validation_follows_the_kernel() {
        for good in ["eth0", "veth1234567890a", "lo", "vs-br.10", "a"] {
            assert!(validate_ifname(good).is_ok(), "{good} should be valid");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "veth1234567890ab",
            "tab\t",
        ] {
            let err = validate_ifname(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn cidr_validation_rejects_host_bits_and_long_prefixes() {
        assert!(validate_cidr(Ipv4Addr::new(10, 1, 0, 0), 16).is_ok());
        assert!(validate_cidr(Ipv4Addr::UNSPECIFIED, 0).is_ok());
        assert!(validate_cidr(Ipv4Addr::new(10, 1, 2, 3), 32).is_ok());
        assert!(validate_cidr(Ipv4Addr::new(10, 1, 0, 1), 16).is_err());
        assert!(validate_cidr(Ipv4Addr::new(10, 1, 0, 0), 33).is_err());
        assert_eq!(prefix_mask(24), 0xffff_ff00);
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(32), u32::MAX);
    }

    #[test]
    fn veth_request_carries_the_peer_name_mac_mtu_gso_limit_and_netns() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        let message = veth_message("vs-h0", "eth0", Some(42), Some(1400), Some(mac), Some(44));
        let RouteNetlinkMessage::NewLink(link) =
            round_trip(RouteNetlinkMessage::NewLink(message.clone()))
        else {
            panic!("not a NewLink");
        };
        assert_eq!(link, message);
        assert!(link
            .attributes
            .contains(&LinkAttribute::IfName("vs-h0".into())));
        assert!(link.attributes.contains(&LinkAttribute::Mtu(1400)));
        let infos = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert_eq!(infos[0], NlLinkInfo::Kind(InfoKind::Veth));
        let NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = &infos[1] else {
            panic!("no VETH_INFO_PEER in {infos:?}");
        };
        assert_eq!(
            peer.attributes,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Address(mac.to_vec()),
                LinkAttribute::Mtu(1400),
                LinkAttribute::GsoMaxSegs(44),
                LinkAttribute::NetNsFd(42),
            ]
        );
    }

    /// `ip link add a type veth peer name b`, byte for byte (little-endian host).
    #[rustfmt::skip]
    static VETH_REQUEST: [u8; 88] = [
        0x58, 0x00, 0x00, 0x00, // nlmsg_len = 88
        0x10, 0x00,             // nlmsg_type = RTM_NEWLINK
        0x01, 0x00,             // nlmsg_flags = NLM_F_REQUEST
        0x01, 0x00, 0x00, 0x00, // nlmsg_seq = 1
        0x00, 0x00, 0x00, 0x00, // nlmsg_pid = 0
        // ifinfomsg: family, pad, type, index, flags, change: all zero
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x03, 0x00, b'a', 0x00, 0x00, 0x00, // IFLA_IFNAME "a"
        0x30, 0x00, 0x12, 0x00, // IFLA_LINKINFO, 48 bytes
        0x09, 0x00, 0x01, 0x00, b'v', b'e', b't', b'h', 0x00, 0x00, 0x00, 0x00, // IFLA_INFO_KIND
        0x20, 0x00, 0x02, 0x00, // IFLA_INFO_DATA, 32 bytes
        0x1c, 0x00, 0x01, 0x00, // VETH_INFO_PEER, 28 bytes: an ifinfomsg and the peer's attributes
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x03, 0x00, b'b', 0x00, 0x00, 0x00, // IFLA_IFNAME "b"
    ];

    #[test]
    #[cfg(target_endian = "little")]
    fn veth_request_bytes_nest_the_peer_inside_linkinfo() {
        let message = veth_message("a", "b", None, None, None, None);
        let bytes = encode(RouteNetlinkMessage::NewLink(message), NLM_F_REQUEST, 1);
        assert_eq!(bytes, VETH_REQUEST);
    }

    #[test]
    fn mark_request_carries_the_alias_and_addr_gen_mode_none() {
        let message = mark_message(7, Some("vswitch:0123"), true);
        let RouteNetlinkMessage::SetLink(parsed) =
            round_trip(RouteNetlinkMessage::SetLink(message.clone()))
        else {
            panic!("not a SetLink");
        };
        assert_eq!(parsed, message);
        assert_eq!(parsed.header.index, 7);
        assert!(parsed
            .attributes
            .contains(&LinkAttribute::IfAlias("vswitch:0123".into())));
        let info = LinkInfo::from_message(&parsed);
        assert_eq!(info.alias.as_deref(), Some("vswitch:0123"));
        assert!(info.ipv6_autoconf_off);
        let plain = mark_message(7, None, false);
        assert!(plain.attributes.is_empty());
        assert!(!LinkInfo::from_message(&plain).ipv6_autoconf_off);
        assert!(validate_alias(&"a".repeat(255)).is_ok());
        assert!(validate_alias(&"a".repeat(256)).is_err());
        assert!(validate_alias("a\0b").is_err());
    }

    #[test]
    fn address_request_sets_local_address_and_broadcast() {
        let message = address_message(3, Ipv4Addr::new(172, 17, 0, 2), 16);
        let RouteNetlinkMessage::NewAddress(parsed) =
            round_trip(RouteNetlinkMessage::NewAddress(message))
        else {
            panic!("not a NewAddress");
        };
        assert_eq!(parsed.header.index, 3);
        assert_eq!(parsed.header.prefix_len, 16);
        assert_eq!(parsed.header.family, AddressFamily::Inet);
        assert!(parsed
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(
                172, 17, 255, 255
            ))));
        assert!(parsed.attributes.contains(&AddressAttribute::Local(
            Ipv4Addr::new(172, 17, 0, 2).into()
        )));
        let point_to_point = address_message(3, Ipv4Addr::new(10, 0, 0, 1), 31);
        assert!(!point_to_point
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Broadcast(_))));
    }

    #[test]
    fn default_route_request_has_a_gateway_and_no_destination() {
        let message = route_message(
            (Ipv4Addr::UNSPECIFIED, 0),
            Some(Ipv4Addr::new(10, 0, 0, 1)),
            None,
        );
        let RouteNetlinkMessage::NewRoute(parsed) =
            round_trip(RouteNetlinkMessage::NewRoute(message))
        else {
            panic!("not a NewRoute");
        };
        assert_eq!(parsed.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(parsed.header.destination_prefix_length, 0);
        assert_eq!(parsed.header.scope, RouteScope::Universe);
        assert_eq!(
            parsed.attributes,
            vec![RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                10, 0, 0, 1
            )))]
        );
        let on_link = route_message((Ipv4Addr::new(10, 9, 0, 0), 16), None, Some(5));
        assert_eq!(on_link.header.scope, RouteScope::Link);
        assert!(on_link.attributes.contains(&RouteAttribute::Oif(5)));
    }

    #[test]
    fn kernel_errors_keep_errno_context_and_extended_ack() {
        // An error reply as the kernel sends it with NETLINK_CAP_ACK and NETLINK_EXT_ACK:
        // the echoed request header (16 bytes), then NLMSGERR_ATTR_MSG "boom".
        let mut payload = vec![0u8; 16];
        payload.extend_from_slice(&[9, 0, 1, 0, b'b', b'o', b'o', b'm', 0, 0, 0, 0]);
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-libc::ENODEV);
        error.header = payload;
        let err = kernel_error(&error, NLM_F_CAPPED | NLM_F_ACK_TLVS, "delete link x");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(errno(&err), Some(libc::ENODEV));
        let text = err.to_string();
        assert!(text.starts_with("delete link x: "), "{text}");
        assert!(text.ends_with("(boom)"), "{text}");

        error.code = std::num::NonZeroI32::new(-libc::EEXIST);
        let err = kernel_error(&error, 0, "create veth pair a/b");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!err.to_string().contains("boom"));
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(format_mac([2, 0x42, 0xac, 0x11, 0, 2]), "02:42:ac:11:00:02");
    }

    #[test]
    fn root_veth_pair_is_created_with_its_peer_in_another_netns() {
        run_as_root_in_new_netns(|| {
            let mut nl = Netlink::new().unwrap();
            let peer_ns = new_netns().unwrap();
            let mac = [0x02, 0x42, 0x0a, 0x63, 0x00, 0x02];
            nl.create_veth(
                "vst-h0",
                "vst-p0",
                Some(peer_ns.as_fd()),
                Some(1400),
                Some(mac),
                Some(44),
            )
            .unwrap();

            let host = nl.link_info("vst-h0").unwrap().expect("host end");
            assert_eq!(host.mtu, 1400);
            assert!(host.gso_max_segs > 44, "the limit is the peer's alone");
            assert_eq!(host.kind.as_deref(), Some("veth"));
            assert!(!host.up);
            assert!(!nl.link_exists("vst-p0").unwrap(), "peer must not be here");

            let peer = in_netns(&peer_ns, || {
                Netlink::new().unwrap().link_info("vst-p0").unwrap()
            })
            .unwrap()
            .expect("peer end in its namespace");
            assert_eq!(peer.mtu, 1400);
            assert_eq!(peer.gso_max_segs, 44);
            assert_eq!(peer.mac, mac);

            // The same pair again is refused and says so.
            let err = nl
                .create_veth("vst-h0", "vst-p1", None, None, None, None)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            assert!(err.to_string().contains("vst-h0"), "{err}");

            // Changes on the host end.
            nl.set_mtu("vst-h0", 1300).unwrap();
            nl.set_mac("vst-h0", [0x02, 0, 0, 0, 0, 9]).unwrap();
            nl.rename("vst-h0", "vst-h1").unwrap();
            nl.set_up("vst-h1").unwrap();
            let host = nl.link_info("vst-h1").unwrap().unwrap();
            assert_eq!(
                (host.mtu, host.mac, host.up),
                (1300, [2, 0, 0, 0, 0, 9], true)
            );
            assert_eq!(nl.link_index("vst-h1").unwrap(), Some(host.index));
            nl.set_down("vst-h1").unwrap();
            assert!(!nl.link_info("vst-h1").unwrap().unwrap().up);

            nl.delete_link("vst-h1").unwrap();
            assert_eq!(nl.link_index("vst-h1").unwrap(), None);
            let gone = in_netns(&peer_ns, || {
                Netlink::new().unwrap().link_exists("vst-p0").unwrap()
            })
            .unwrap();
            assert!(!gone, "deleting one end deletes the peer");
        });
    }

    /// The IPv6 addresses of `ifname` in the calling thread's namespace (`if_inet6`, which
    /// lists tentative addresses too).
    fn ipv6_addresses(ifname: &str) -> Vec<String> {
        std::fs::read_to_string("/proc/thread-self/net/if_inet6")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().last() == Some(ifname))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits (up to 10 s) until `ifname` has an IPv6 address.
    fn wait_for_ipv6(ifname: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ipv6_addresses(ifname).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{ifname} never got a link-local address"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn root_veth_host_end_is_marked_and_makes_no_ipv6_link_local() {
        run_as_root_in_new_netns(|| {
            if !std::path::Path::new("/proc/thread-self/net/if_inet6").exists() {
                println!("skipped: needs a kernel with IPv6");
                return;
            }
            let mut nl = Netlink::new().unwrap();
            nl.create_veth_with(&VethSpec {
                host_name: "vst-v6h",
                peer_name: "vst-v6p",
                host_alias: Some("vswitch:test"),
                ..VethSpec::default()
            })
            .unwrap();
            let host = nl.link_info("vst-v6h").unwrap().unwrap();
            assert_eq!(host.alias.as_deref(), Some("vswitch:test"));
            assert!(host.ipv6_autoconf_off);
            let peer = nl.link_info("vst-v6p").unwrap().unwrap();
            assert_eq!(peer.alias, None);
            assert!(!peer.ipv6_autoconf_off);
            let listed = nl.list_links().unwrap();
            let host_row = listed.iter().find(|l| l.name == "vst-v6h").unwrap();
            assert_eq!(host_row.alias.as_deref(), Some("vswitch:test"));

            nl.set_up("vst-v6h").unwrap();
            nl.set_up("vst-v6p").unwrap();
            // The peer (autoconfiguration on) gets its link-local address once both ends have
            // carrier; by then the host end would have one too if it made one.
            wait_for_ipv6("vst-v6p");
            assert_eq!(ipv6_addresses("vst-v6h"), Vec::<String>::new());

            nl.set_alias("vst-v6p", "other").unwrap();
            let peer = nl.link_info("vst-v6p").unwrap().unwrap();
            assert_eq!(peer.alias.as_deref(), Some("other"));
            nl.set_alias("vst-v6p", "").unwrap();
            assert_eq!(nl.link_info("vst-v6p").unwrap().unwrap().alias, None);

            // A link that already made its link-local address loses it.
            nl.disable_ipv6_autoconf("vst-v6p").unwrap();
            assert_eq!(ipv6_addresses("vst-v6p"), Vec::<String>::new());
            assert!(nl.link_info("vst-v6p").unwrap().unwrap().up);
            let err = nl.disable_ipv6_autoconf("vst-none").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
            nl.delete_link("vst-v6h").unwrap();
        });
    }

    #[test]
    fn root_tap_loses_its_ipv6_link_local() {
        run_as_root_in_new_netns(|| {
            if !std::path::Path::new("/proc/thread-self/net/if_inet6").exists() {
                println!("skipped: needs a kernel with IPv6");
                return;
            }
            let tap = switch::port::tap::TapPort::create("vst-tap6", None).unwrap();
            wait_for_ipv6("vst-tap6");
            let mut nl = Netlink::new().unwrap();
            nl.disable_ipv6_autoconf("vst-tap6").unwrap();
            assert_eq!(ipv6_addresses("vst-tap6"), Vec::<String>::new());
            let link = nl.link_info("vst-tap6").unwrap().unwrap();
            assert!(link.up && link.ipv6_autoconf_off, "{link:?}");
            drop(tap);
        });
    }

    #[test]
    fn root_move_to_netns_moves_a_link() {
        run_as_root_in_new_netns(|| {
            let mut nl = Netlink::new().unwrap();
            let other = new_netns().unwrap();
            nl.create_veth("vst-m0", "vst-m1", None, None, None, None)
                .unwrap();
            nl.move_to_netns("vst-m1", other.as_fd()).unwrap();
            assert!(!nl.link_exists("vst-m1").unwrap());
            let names: Vec<String> = in_netns(&other, || Netlink::new().unwrap().list_links())
                .unwrap()
                .unwrap()
                .into_iter()
                .map(|l| l.name)
                .collect();
            assert_eq!(names, ["lo", "vst-m1"]);
        });
    }

    #[test]
    fn root_address_and_default_route_read_back() {
        run_as_root_in_new_netns(|| {
            let mut nl = Netlink::new().unwrap();
            let sandbox = new_netns().unwrap();
            nl.create_veth("vst-a0", "eth0", Some(sandbox.as_fd()), None, None, None)
                .unwrap();
            nl.set_up("vst-a0").unwrap();

            in_netns(&sandbox, || {
                let mut nl = Netlink::new().unwrap();
                let addr = Ipv4Addr::new(10, 99, 0, 2);
                let gateway = Ipv4Addr::new(10, 99, 0, 1);
                nl.set_up("eth0").unwrap();
                nl.add_address("eth0", addr, 24).unwrap();
                assert_eq!(nl.list_addresses("eth0").unwrap(), vec![(addr, 24)]);
                let err = nl.add_address("eth0", addr, 24).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");

                nl.add_default_route(gateway).unwrap();
                nl.add_route((Ipv4Addr::new(10, 98, 0, 0), 16), None, Some("eth0"))
                    .unwrap();
                nl.add_route(
                    (Ipv4Addr::new(10, 97, 0, 0), 16),
                    Some(gateway),
                    Some("eth0"),
                )
                .unwrap();
                let mut routes = nl.list_routes_v4().unwrap();
                routes.sort();
                assert_eq!(
                    routes,
                    vec![
                        (Ipv4Addr::UNSPECIFIED, 0),
                        (Ipv4Addr::new(10, 97, 0, 0), 16),
                        (Ipv4Addr::new(10, 98, 0, 0), 16),
                        (Ipv4Addr::new(10, 99, 0, 0), 24),
                    ]
                );
                let err = nl
                    .add_route((Ipv4Addr::new(10, 98, 0, 1), 16), None, Some("eth0"))
                    .unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

                nl.del_address("eth0", addr, 24).unwrap();
                assert!(nl.list_addresses("eth0").unwrap().is_empty());
                // The gateway is unreachable now: the kernel dropped the default route too.
                assert!(!nl
                    .list_routes_v4()
                    .unwrap()
                    .contains(&(Ipv4Addr::UNSPECIFIED, 0)));
            })
            .unwrap();
            nl.delete_link("vst-a0").unwrap();
        });
    }

    #[test]
    fn root_missing_links_are_not_found() {
        run_as_root_in_new_netns(|| {
            let mut nl = Netlink::new().unwrap();
            let err = nl.delete_link("vst-nothing").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
            assert!(err.to_string().contains("vst-nothing"), "{err}");
            assert_eq!(nl.link_info("vst-nothing").unwrap(), None);
            let err = nl.set_up("vst-nothing").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
            let err = nl
                .add_address("vst-nothing", Ipv4Addr::LOCALHOST, 8)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        });
    }
}
