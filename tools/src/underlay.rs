//! The netlink side of the TAP VTEP backend (`vxlan::tap`): traffic control that moves frames
//! between the TAP and the underlay interface, and the neighbour table that gives each peer's
//! next-hop MAC. Everything goes through rtnetlink ([`Netlink`]); nothing runs `tc` or `ip`.
//!
//! Traffic control (tc-u32(8), tc-mirred(8); the messages `tc` itself sends):
//! - a `clsact` qdisc on both interfaces (its ingress hook);
//! - on the TAP's ingress (what the daemon writes), a u32 filter matching everything with a
//!   `mirred egress redirect` to the underlay: encapsulated frames leave unchanged;
//! - on the underlay's ingress, a u32 filter for IPv4 (no options, not a fragment) UDP to our
//!   VTEP address and port, redirected to the TAP before the host stack sees it.
//!
//! Both filters sit at priority [`FILTER_PRIO`], so they are found, checked and removed by it.
//!
//! Neighbours: the next hop towards a peer is the route's gateway, or the peer itself on a
//! connected subnet (`RTM_GETROUTE`); its MAC comes from the neighbour table (`RTM_GETNEIGH`).
//! A missing, failed or stale entry is (re)resolved with `RTM_NEWNEIGH` carrying `NTF_USE`,
//! which makes the kernel send ARP as if a packet were waiting (`neigh_event_send`): nothing
//! is guessed and nothing is sent to the peer itself.

use crate::netlink::Netlink;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;

/// Priority of our tc filters on both interfaces.
pub const FILTER_PRIO: u16 = 4789;
/// `ETH_P_ALL` and `ETH_P_IP`, as tc's `protocol` (network byte order in `tcm_info`).
const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;

/// The clsact qdisc's handle (`ffff:0`).
const CLSACT_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// The ingress hook of clsact (`ffff:fff2`), where both filters go.
const INGRESS_PARENT: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_INGRESS,
};

fn tc_header(index: u32) -> TcMessage {
    TcMessage::with_index(index as i32)
}

/// `RTM_NEWQDISC` for a clsact qdisc on `index`.
fn clsact_message(index: u32) -> TcMessage {
    let mut m = tc_header(index);
    m.header.handle = CLSACT_HANDLE;
    m.header.parent = TcHandle::CLSACT;
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    m
}

/// One u32 key: `mask`/`val` as the bytes at `off` of the network header read big-endian.
fn key(off: i32, mask: u32, val: u32) -> TcU32Key {
    let mut k = TcU32Key::default();
    k.off = off;
    k.mask = mask;
    k.val = val & mask;
    k
}

/// The u32 keys matching IPv4 UDP to `local`:`port` (header without options, not a
/// fragment): offsets in the IPv4 header (RFC 791 § 3.1) and the UDP header behind it.
pub fn vxlan_keys(local: Ipv4Addr, port: u16) -> Vec<TcU32Key> {
    vec![
        // Version 4, IHL 5: the UDP header is at 20.
        key(0, 0xff00_0000, 0x4500_0000),
        // MF clear, fragment offset 0.
        key(4, 0x0000_3fff, 0),
        // Protocol 17.
        key(8, 0x00ff_0000, 0x0011_0000),
        // Destination address.
        key(16, 0xffff_ffff, u32::from(local)),
        // UDP destination port.
        key(20, 0x0000_ffff, u32::from(port)),
    ]
}

/// `RTM_NEWTFILTER`: a u32 filter on `index`'s ingress with `keys` (none: match all) for
/// `protocol`, redirecting to `to` (mirred egress redirect, then stolen).
fn redirect_filter(index: u32, protocol: u16, keys: Vec<TcU32Key>, to: u32) -> TcMessage {
    let mut m = tc_header(index);
    m.header.parent = INGRESS_PARENT;
    m.header.info = (u32::from(FILTER_PRIO) << 16) | u32::from(protocol.to_be());
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    let keys = if keys.is_empty() {
        vec![key(0, 0, 0)]
    } else {
        keys
    };
    sel.nkeys = keys.len() as u8;
    sel.keys = keys;
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    m
}

/// `RTM_DELTFILTER` of our priority on `index`'s ingress.
fn delete_filter_message(index: u32, protocol: u16) -> TcMessage {
    let mut m = tc_header(index);
    m.header.parent = INGRESS_PARENT;
    m.header.info = (u32::from(FILTER_PRIO) << 16) | u32::from(protocol.to_be());
    m
}

/// Where the TAP path is wired: the two interfaces and the VTEP's address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    /// The TAP's index.
    pub tap: u32,
    /// The underlay interface's index.
    pub underlay: u32,
    /// Our VTEP address.
    pub local: Ipv4Addr,
    /// Our VXLAN port.
    pub port: u16,
}

/// Whether each of our two filters is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterState {
    /// The TAP's ingress redirect to the underlay.
    pub tap: bool,
    /// The underlay's ingress redirect of our VXLAN to the TAP.
    pub underlay: bool,
}

fn is_exists(e: &io::Error) -> bool {
    crate::netlink::errno(e) == Some(libc::EEXIST)
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        crate::netlink::errno(e),
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EINVAL)
    )
}

/// Adds the clsact qdisc on `index` unless it has one.
pub fn ensure_clsact(nl: &mut Netlink, index: u32) -> io::Result<()> {
    let m = RouteNetlinkMessage::NewQueueDiscipline(clsact_message(index));
    match nl.request(
        m,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        "adding the clsact qdisc",
    ) {
        Err(e) if !is_exists(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Installs (or replaces) the TAP's filter.
pub fn install_tap_filter(nl: &mut Netlink, w: &Wiring) -> io::Result<()> {
    ensure_clsact(nl, w.tap)?;
    let _ = remove_filter(nl, w.tap, ETH_P_ALL);
    let m = redirect_filter(w.tap, ETH_P_ALL, Vec::new(), w.underlay);
    nl.request(
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        "adding the TAP's redirect to the underlay (tc u32 + mirred)",
    )
    .map(drop)
}

/// Installs (or replaces) the underlay's filter.
pub fn install_underlay_filter(nl: &mut Netlink, w: &Wiring) -> io::Result<()> {
    ensure_clsact(nl, w.underlay)?;
    let _ = remove_filter(nl, w.underlay, ETH_P_IP);
    let m = redirect_filter(w.underlay, ETH_P_IP, vxlan_keys(w.local, w.port), w.tap);
    nl.request(
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        "adding the underlay's VXLAN redirect to the TAP (tc u32 + mirred)",
    )
    .map(drop)
}

/// Removes our filter (priority [`FILTER_PRIO`]) from `index`'s ingress; a filter or an
/// interface already gone is not an error.
pub fn remove_filter(nl: &mut Netlink, index: u32, protocol: u16) -> io::Result<()> {
    let m = RouteNetlinkMessage::DelTrafficFilter(delete_filter_message(index, protocol));
    match nl.request(
        m,
        NLM_F_REQUEST | NLM_F_ACK,
        "removing the VTEP's tc filter",
    ) {
        Err(e) if !is_gone(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Removes the underlay's filter alone: one a killed TAP daemon left behind would send the
/// VXLAN traffic to a TAP that is gone, away from the socket backend.
pub fn remove_underlay_filter(nl: &mut Netlink, underlay: u32) -> io::Result<()> {
    remove_filter(nl, underlay, ETH_P_IP)
}

/// Removes both filters (when the daemon stops or the VTEP goes).
pub fn remove_filters(nl: &mut Netlink, w: &Wiring) -> io::Result<()> {
    let a = remove_filter(nl, w.underlay, ETH_P_IP);
    let b = remove_filter(nl, w.tap, ETH_P_ALL);
    a.and(b)
}

/// Whether `index`'s ingress holds a filter of our priority.
fn has_filter(nl: &mut Netlink, index: u32) -> io::Result<bool> {
    let mut m = tc_header(index);
    m.header.parent = INGRESS_PARENT;
    let replies = match nl.request(
        RouteNetlinkMessage::GetTrafficFilter(m),
        NLM_F_REQUEST | NLM_F_DUMP,
        "listing tc filters",
    ) {
        Ok(r) => r,
        // No clsact (or no interface): no filter.
        Err(e) if is_gone(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(replies.iter().any(|r| match r {
        // A u32 filter is listed with its hash table: the rule is the one with an action.
        RouteNetlinkMessage::NewTrafficFilter(f) => {
            (f.header.info >> 16) as u16 == FILTER_PRIO
                && f.attributes.iter().any(|a| match a {
                    TcAttribute::Options(opts) => opts.iter().any(|o| {
                        matches!(o, TcOption::U32(TcFilterU32Option::Action(acts)) if !acts.is_empty())
                    }),
                    _ => false,
                })
        }
        _ => false,
    }))
}

/// Which of our two filters are in place.
pub fn check_filters(nl: &mut Netlink, w: &Wiring) -> io::Result<FilterState> {
    Ok(FilterState {
        tap: has_filter(nl, w.tap)?,
        underlay: has_filter(nl, w.underlay)?,
    })
}

/// The next hop towards `peer` (the route's gateway, or the peer on a connected subnet) and
/// the interface the route leaves by.
pub fn next_hop(nl: &mut Netlink, peer: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)> {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(peer)));
    let replies = nl.request(
        RouteNetlinkMessage::GetRoute(m),
        // The answer is one message and no ACK unless asked for: the ACK ends the exchange.
        NLM_F_REQUEST | NLM_F_ACK,
        "looking up the route to a peer",
    )?;
    for r in replies {
        if let RouteNetlinkMessage::NewRoute(route) = r {
            let mut gw = None;
            let mut oif = None;
            for a in &route.attributes {
                match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Some(oif) = oif {
                return Ok((gw.unwrap_or(peer), oif));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no route to peer {peer}"),
    ))
}

/// A neighbour entry: its MAC (when it has one) and whether the kernel considers it usable
/// without a new probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// The link-layer address, if resolved.
    pub mac: Option<[u8; 6]>,
    /// Reachable, permanent or noarp: nothing to refresh.
    pub fresh: bool,
}

/// The IPv4 neighbour entries on `index`, by address: one dump of the table, read for
/// every peer's next hop.
pub fn neighbours(nl: &mut Netlink, index: u32) -> io::Result<HashMap<Ipv4Addr, Neighbour>> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    let replies = nl.request(
        RouteNetlinkMessage::GetNeighbour(m),
        NLM_F_REQUEST | NLM_F_DUMP,
        "listing neighbours",
    )?;
    let mut table = HashMap::new();
    for r in replies {
        let RouteNetlinkMessage::NewNeighbour(n) = r else {
            continue;
        };
        if n.header.ifindex != index {
            continue;
        }
        let Some(dst) = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => Some(*d),
            _ => None,
        }) else {
            continue;
        };
        let state = n.header.state;
        let usable = !matches!(
            state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        );
        let mac = n
            .attributes
            .iter()
            .find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    Some([l[0], l[1], l[2], l[3], l[4], l[5]])
                }
                _ => None,
            })
            .filter(|_| usable);
        let fresh = matches!(
            state,
            NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp
        );
        // The first entry of an address stands, as a lookup of it would have found.
        table.entry(dst).or_insert(Neighbour { mac, fresh });
    }
    Ok(table)
}

/// Asks the kernel to resolve (or confirm) `addr` on `index`, as if a packet waited for it
/// (`NTF_USE`): ARP goes out; [`neighbours`] shows the answer once it came.
pub fn resolve(nl: &mut Netlink, index: u32, addr: Ipv4Addr) -> io::Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = NeighbourState::None;
    m.header.flags = NeighbourFlags::Use;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            addr,
        )));
    nl.request(
        RouteNetlinkMessage::NewNeighbour(m),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        "resolving a next hop (RTM_NEWNEIGH, NTF_USE)",
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

    fn bytes(m: RouteNetlinkMessage) -> Vec<u8> {
        let mut p = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
        p.finalize();
        let mut b = vec![0; p.buffer_len()];
        p.serialize(&mut b);
        b
    }

    #[test]
    fn the_underlay_filter_matches_our_vxlan_only() {
        let keys = vxlan_keys(Ipv4Addr::new(10, 1, 2, 3), 4789);
        let fields: Vec<(i32, u32, u32)> = keys.iter().map(|k| (k.off, k.mask, k.val)).collect();
        assert_eq!(
            fields,
            [
                (0, 0xff00_0000, 0x4500_0000),
                (4, 0x3fff, 0),
                (8, 0x00ff_0000, 0x0011_0000),
                (16, 0xffff_ffff, 0x0a01_0203),
                (20, 0xffff, 4789),
            ]
        );
        // A header of ours matches every key: (word at off) & mask == val.
        let mut ip = [0u8; 24];
        ip[0] = 0x45;
        ip[6] = 0x40; // DF
        ip[9] = 17;
        ip[16..20].copy_from_slice(&[10, 1, 2, 3]);
        ip[22..24].copy_from_slice(&4789u16.to_be_bytes());
        let matches = |ip: &[u8; 24]| {
            keys.iter().all(|k| {
                let o = k.off as usize;
                u32::from_be_bytes([ip[o], ip[o + 1], ip[o + 2], ip[o + 3]]) & k.mask == k.val
            })
        };
        assert!(matches(&ip));
        ip[7] = 1; // a fragment
        assert!(!matches(&ip));
        ip[7] = 0;
        ip[23] ^= 1; // another port
        assert!(!matches(&ip));
    }

    #[test]
    fn the_filter_message_carries_prio_protocol_u32_and_mirred() {
        let m = redirect_filter(7, ETH_P_IP, vxlan_keys(Ipv4Addr::LOCALHOST, 4789), 9);
        assert_eq!(m.header.index, 7);
        assert_eq!(m.header.parent, INGRESS_PARENT);
        assert_eq!(m.header.info, (4789 << 16) | 0x0008);
        let b = bytes(RouteNetlinkMessage::NewTrafficFilter(m.clone()));
        // It parses back the same.
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&b).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(got)) = back.payload
        else {
            panic!("not a filter");
        };
        assert_eq!(got.header, m.header);
        let text = format!("{got:?}");
        assert!(
            text.contains("mirred") && text.contains("ifindex: 9"),
            "{text}"
        );
        assert!(
            text.contains("EgressRedir") && text.contains("Stolen"),
            "{text}"
        );
        // Match-all: one zero key.
        let all = redirect_filter(9, ETH_P_ALL, Vec::new(), 7);
        assert_eq!(all.header.info, (4789 << 16) | 0x0300);
        assert!(format!("{all:?}").contains("nkeys: 1"));
    }
}
