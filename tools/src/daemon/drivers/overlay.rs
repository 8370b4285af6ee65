//! The `overlay` driver: a bridge stretched across hosts over VXLAN (RFC 7348). The network has
//! a VNI, a flood list of peers and a VXLAN port on its bridge; the daemon's one VXLAN endpoint
//! (`--vtep`) is opened with the first overlay network. Endpoints default to the underlay MTU
//! less the VXLAN overhead.
//!
//! The endpoint has two backends (`--vtep-backend`): the UDP socket (`vxlan::socket`: segments
//! cut in user space, UDP GSO/GRO) and the TAP (`vxlan::tap`, Linux 6.17+: whole super-frames
//! with UDP-tunnel GSO, tc moving them between the TAP and the underlay). `auto` probes once
//! and takes the TAP when the kernel has it and `--vtep` names a local address. With the TAP,
//! a watcher thread ([`TapKeeper`]) keeps the path working: next hops from the neighbour
//! table, the tc filters checked and put back, the underlay and the TAP watched; while the
//! path cannot work the socket (bound in both backends) carries the traffic. Nothing of this
//! touches the flat networks.

use super::super::{ApiError, Daemon, NetworkLive, NetworkRecord, PortLive, PortOwner, PortRecord};
use super::{Kind, NetworkDriver};
use crate::api::{NetworkSpec, PortType};
use crate::netlink::Netlink;
use crate::underlay::{self, Wiring};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switch::{Port, PortMode};
use vxlan::tap::TapFault;

/// The TAP the TAP backend makes (in the daemon's namespace).
pub const TAP_NAME: &str = "vs-vtep";
/// How often the watcher looks at the TAP path.
const KEEP_EVERY: Duration = Duration::from_millis(250);

/// Which VTEP backend to use (`--vtep-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VtepBackend {
    /// The TAP when the kernel has UDP-tunnel GSO and `--vtep` is a concrete address, else the
    /// socket.
    #[default]
    Auto,
    /// The TAP, or no overlay.
    Tap,
    /// The UDP socket.
    Socket,
}

impl std::str::FromStr for VtepBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(VtepBackend::Auto),
            "tap" => Ok(VtepBackend::Tap),
            "socket" => Ok(VtepBackend::Socket),
            _ => Err(format!(
                "invalid VTEP backend {s:?}: expected auto, tap or socket"
            )),
        }
    }
}

/// Set once the TAP backend is open: sandboxes then build super-frames as large as the outer
/// IPv4 length allows ([`tap_segments`]) instead of one UDP_SEGMENT send.
static TAP_IN_USE: AtomicBool = AtomicBool::new(false);

/// The most segments of a TCP super-frame whose encapsulation keeps the outer IPv4 length
/// within 65 535 bytes, at inner MTU `mtu`: each segment carries at most `mtu - 40` payload
/// bytes behind at least 40 bytes of IPv4 and TCP headers, and the inner frame adds 14.
pub fn tap_segments(mtu: usize) -> usize {
    let per_segment = mtu.saturating_sub(40).max(1);
    ((vxlan::tap::MAX_INNER_LEN - 54) / per_segment).clamp(1, 65535)
}

/// The `overlay` driver.
pub(super) struct OverlayDriver;

impl NetworkDriver for OverlayDriver {
    fn kind(&self) -> Kind {
        Kind::Bridged
    }

    fn scope(&self) -> &'static str {
        "swarm"
    }

    /// `--vni N` (unused by other overlays) and `--peer IP`s.
    fn check_options(&self, spec: &NetworkSpec, daemon: &Daemon) -> Result<(), ApiError> {
        let vni = spec
            .vni
            .ok_or_else(|| ApiError::invalid("the overlay driver needs --vni"))?;
        crate::api::check_vni(vni.into()).map_err(ApiError::invalid)?;
        if let Some(other) = daemon
            .networks
            .values()
            .find(|n| n.record.driver == super::Driver::Overlay && n.record.spec.vni == Some(vni))
        {
            return Err(ApiError::conflict(format!(
                "VNI {vni} is already used by network {}",
                other.record.name
            )));
        }
        for p in &spec.peers {
            parse_peer(p)?;
        }
        Ok(())
    }

    fn open(&self, daemon: &mut Daemon) -> Result<(), ApiError> {
        open_vtep(daemon)
    }

    /// The VXLAN port, `vxlanVNI`.
    fn own_port(&self, net: &NetworkRecord) -> Option<PortRecord> {
        let vni = net.spec.vni?;
        Some(PortRecord::owned(
            format!("vxlan{vni}"),
            net,
            PortType::Vxlan,
            PortOwner::Overlay,
        ))
    }

    /// The underlay MTU less the VXLAN overhead.
    fn default_mtu(&self, daemon: &Daemon) -> Option<u32> {
        let o = daemon.overlay.as_ref()?;
        Some(o.config().underlay_mtu.saturating_sub(vxlan::OVERHEAD_V4) as u32)
    }

    /// The sandbox builds TCP super-frames no bigger than one UDP_SEGMENT send of the VTEP (see
    /// `vxlan::segments_per_send`), or, with the TAP backend, than the outer IPv4 length allows
    /// ([`tap_segments`]). Only its end: the host end must still take whatever the far VTEP
    /// rebuilt.
    fn sandbox_gso_max_segs(&self, mtu: Option<u32>) -> Option<u32> {
        mtu.map(|mtu| {
            if TAP_IN_USE.load(Ordering::Relaxed) {
                tap_segments(mtu as usize) as u32
            } else {
                vxlan::segments_per_send(mtu as usize) as u32
            }
        })
    }
}

/// A peer's address, as given to `--peer` or `network peer add`.
pub(in crate::daemon) fn parse_peer(text: &str) -> Result<IpAddr, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(format!("invalid peer address {text:?}")))
}

/// Opens the VXLAN endpoint (`--vtep`) the first time an overlay network needs it, and has the
/// datapath poll its socket.
fn open_vtep(d: &mut Daemon) -> Result<(), ApiError> {
    if d.overlay.is_some() {
        return Ok(());
    }
    let addr = d.vtep_addr;
    let config = vxlan::VtepConfig {
        port: addr.port(),
        underlay_mtu: underlay_mtu(*addr.ip()),
        ..vxlan::VtepConfig::default()
    };
    let socket = || {
        vxlan::Overlay::bind(addr, config)
            .map_err(|e| ApiError::internal(format!("opening the VXLAN endpoint on {addr}: {e}")))
    };
    let (overlay, keeper) = match d.vtep_backend {
        VtepBackend::Socket => {
            clear_leftover_filter(*addr.ip());
            (socket()?, None)
        }
        VtepBackend::Tap => {
            let (o, k) = open_tap(addr, config).map_err(|e| {
                ApiError::internal(format!("opening the VXLAN endpoint's TAP backend: {e}"))
            })?;
            (o, Some(k))
        }
        VtepBackend::Auto => match open_tap(addr, config) {
            Ok((o, k)) => (o, Some(k)),
            Err(e) => {
                tracing::info!(reason = %e, "VTEP: the TAP backend is not available here");
                clear_leftover_filter(*addr.ip());
                (socket()?, None)
            }
        },
    };
    let mut fds = vec![overlay.fd()];
    fds.extend(overlay.tap_fd());
    for fd in fds {
        let poller = overlay.clone();
        d.call(move |ctl| ctl.add_poller(fd, Box::new(move |dp, now| poller.poll(dp, now))))?
            .map_err(|e| ApiError::internal(format!("polling the VXLAN endpoint: {e}")))?;
    }
    let backend = overlay.backend();
    tracing::info!(%addr, mtu = config.underlay_mtu, backend, "VXLAN endpoint open");
    if let Some(k) = keeper {
        TAP_IN_USE.store(true, Ordering::Relaxed);
        d.vtep_keeper = Some(k.start(overlay.clone()));
    }
    d.overlay = Some(overlay);
    Ok(())
}

/// Opens the TAP backend: the TAP, the overlay on it, and the tc filters. Fails (and leaves
/// nothing behind) when the kernel lacks UDP-tunnel GSO, `--vtep` is not a local address, or tc
/// refuses the filters.
fn open_tap(
    addr: std::net::SocketAddrV4,
    config: vxlan::VtepConfig,
) -> Result<(vxlan::Overlay, TapSetup), String> {
    let local = *addr.ip();
    if local.is_unspecified() {
        return Err(format!(
            "it needs a concrete --vtep address (the outer source), not {local}"
        ));
    }
    let mut nl = Netlink::new().map_err(|e| e.to_string())?;
    let underlay = underlay_link(&mut nl, local)
        .ok_or_else(|| format!("no interface holds the VTEP address {local}"))?;
    let dev = vxlan::tap::TapDevice::open(TAP_NAME, underlay.mtu).map_err(|e| e.to_string())?;
    // The TAP makes no IPv6 link-local address and sends no router solicitation: whatever the
    // kernel sent out of it would reach us, not the underlay.
    let _ = nl.disable_ipv6_autoconf(TAP_NAME);
    let tap_index = nl
        .link_index(TAP_NAME)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the TAP {TAP_NAME} vanished as it was made"))?;
    let overlay =
        vxlan::Overlay::with_tap(addr, config, dev, underlay.mac).map_err(|e| e.to_string())?;
    let wiring = Wiring {
        tap: tap_index,
        underlay: underlay.index,
        local,
        port: addr.port(),
    };
    underlay::install_tap_filter(&mut nl, &wiring).map_err(|e| e.to_string())?;
    if let Err(e) = underlay::install_underlay_filter(&mut nl, &wiring) {
        let _ = underlay::remove_filters(&mut nl, &wiring);
        return Err(e.to_string());
    }
    tracing::info!(
        tap = TAP_NAME,
        underlay = %underlay.name,
        "VTEP: TAP backend with UDP-tunnel GSO, tc redirects in place"
    );
    Ok((
        overlay,
        TapSetup {
            wiring,
            underlay_name: underlay.name,
        },
    ))
}

/// Before the socket backend opens: removes the underlay filter of an earlier TAP daemon that
/// was killed (`kill -9` leaves it; its TAP went with its descriptor), which would otherwise
/// redirect the VXLAN traffic away from the socket. Best effort: nothing to do for `0.0.0.0`.
fn clear_leftover_filter(local: Ipv4Addr) {
    if local.is_unspecified() {
        return;
    }
    let Ok(mut nl) = Netlink::new() else {
        return;
    };
    if let Some(link) = underlay_link(&mut nl, local) {
        if let Err(e) = underlay::remove_underlay_filter(&mut nl, link.index) {
            tracing::warn!(underlay = %link.name, error = %e, "VTEP: removing a leftover tc filter");
        }
    }
}

/// The interface that holds `local`.
fn underlay_link(nl: &mut Netlink, local: Ipv4Addr) -> Option<crate::netlink::LinkInfo> {
    let links = nl.list_links().ok()?;
    links.into_iter().find(|l| {
        nl.list_addresses(&l.name)
            .unwrap_or_default()
            .iter()
            .any(|(a, _)| *a == local)
    })
}

/// What the watcher starts from.
struct TapSetup {
    wiring: Wiring,
    underlay_name: String,
}

impl TapSetup {
    fn start(self, overlay: vxlan::Overlay) -> TapKeeper {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(self.wiring));
        let (s, st) = (stop.clone(), state.clone());
        let thread = std::thread::Builder::new()
            .name("vtep-tap".into())
            .spawn(move || keep(overlay, self.underlay_name, st, s))
            .map_err(|e| tracing::error!(error = %e, "VTEP: cannot start the TAP watcher"))
            .ok();
        TapKeeper {
            stop,
            wiring: state,
            thread: Mutex::new(thread),
        }
    }
}

/// The TAP path's watcher: a thread that keeps next hops, filters, the underlay and the TAP
/// in order; stopping it removes the filters.
pub struct TapKeeper {
    stop: Arc<AtomicBool>,
    wiring: Arc<Mutex<Wiring>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl TapKeeper {
    /// Stops the watcher and removes the tc filters (idempotent).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
            let w = *self.wiring.lock().unwrap_or_else(|p| p.into_inner());
            match Netlink::new().and_then(|mut nl| underlay::remove_filters(&mut nl, &w)) {
                Ok(()) => tracing::info!("VTEP: tc filters removed"),
                Err(e) => tracing::warn!(error = %e, "VTEP: removing the tc filters"),
            }
        }
    }
}

impl Drop for TapKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the watcher saw last, so each change is logged once.
#[derive(Default)]
struct Seen {
    underlay_missing: bool,
    underlay_down: bool,
    tap_lost: bool,
    unreachable: std::collections::BTreeSet<Ipv4Addr>,
}

/// The watcher's loop.
fn keep(
    overlay: vxlan::Overlay,
    underlay_name: String,
    wiring: Arc<Mutex<Wiring>>,
    stop: Arc<AtomicBool>,
) {
    let mut nl = match Netlink::new() {
        Ok(nl) => nl,
        Err(e) => {
            tracing::error!(error = %e, "VTEP: the TAP watcher has no netlink socket");
            return;
        }
    };
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let mut w = *wiring.lock().unwrap_or_else(|p| p.into_inner());
        keep_once(&mut nl, &overlay, &underlay_name, &mut w, &mut seen);
        *wiring.lock().unwrap_or_else(|p| p.into_inner()) = w;
        // Short sleeps, so a stop is quick; a peer waiting for its next hop is served at once.
        for _ in 0..5 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(KEEP_EVERY / 5);
            let wanted = overlay.take_wanted_next_hops();
            if !wanted.is_empty() && !seen.tap_lost {
                refresh_next_hops(&mut nl, &overlay, w.underlay, &wanted, &mut seen);
            }
        }
    }
}

/// One look at the TAP path: the TAP, the underlay, the filters, the next hops.
fn keep_once(
    nl: &mut Netlink,
    overlay: &vxlan::Overlay,
    underlay_name: &str,
    w: &mut Wiring,
    seen: &mut Seen,
) {
    if seen.tap_lost {
        return;
    }
    // The TAP deleted by hand: the socket takes over for good (the filter that would send
    // VXLAN to a missing TAP goes, so it reaches the socket).
    if !matches!(nl.link_exists(TAP_NAME), Ok(true) | Err(_)) {
        seen.tap_lost = true;
        overlay.set_tap_active(false);
        overlay.count_tap_fault(TapFault::TapLost);
        let _ = underlay::remove_filter(nl, w.underlay, 0x0800);
        tracing::error!(
            tap = TAP_NAME,
            "VTEP: the TAP was deleted; the UDP socket carries the overlay from now on              (restart vswitchd to get the TAP backend back)"
        );
        return;
    }
    let link = match nl.link_info(underlay_name) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "VTEP: reading the underlay link");
            return;
        }
    };
    let Some(link) = link else {
        if !seen.underlay_missing {
            seen.underlay_missing = true;
            overlay.count_tap_fault(TapFault::UnderlayMissing);
            tracing::error!(
                underlay = underlay_name,
                "VTEP: the underlay interface vanished; overlay traffic stops until it is back"
            );
        }
        return;
    };
    if seen.underlay_missing || link.index != w.underlay {
        seen.underlay_missing = false;
        tracing::warn!(
            underlay = underlay_name,
            index = link.index,
            "VTEP: the underlay interface is back; re-wiring the TAP path"
        );
        w.underlay = link.index;
        overlay.set_underlay_mac(link.mac);
        // Both filters name the underlay: put them back.
        let _ = underlay::install_tap_filter(nl, w);
        let _ = underlay::install_underlay_filter(nl, w);
    }
    overlay.set_underlay_mac(link.mac);
    let down = !link.up;
    if down != seen.underlay_down {
        seen.underlay_down = down;
        if seen.underlay_down {
            overlay.count_tap_fault(TapFault::UnderlayDown);
            tracing::error!(
                underlay = underlay_name,
                "VTEP: the underlay interface is down"
            );
        } else {
            tracing::info!(
                underlay = underlay_name,
                "VTEP: the underlay interface is up"
            );
        }
    }
    match underlay::check_filters(nl, w) {
        Ok(state) => {
            for (present, which) in [(state.tap, "TAP"), (state.underlay, "underlay")] {
                if present {
                    continue;
                }
                let put = if which == "TAP" {
                    underlay::install_tap_filter(nl, w)
                } else {
                    underlay::install_underlay_filter(nl, w)
                };
                overlay.count_tap_fault(TapFault::FilterRepaired);
                match put {
                    Ok(()) => tracing::warn!(
                        filter = which,
                        "VTEP: a tc filter of the TAP path was missing; put back"
                    ),
                    Err(e) => tracing::error!(
                        filter = which,
                        error = %e,
                        "VTEP: a tc filter of the TAP path is missing and cannot be put back"
                    ),
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "VTEP: listing tc filters"),
    }
    let peers: Vec<Ipv4Addr> = overlay
        .all_peers()
        .into_iter()
        .filter_map(|p| match p {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    refresh_next_hops(nl, overlay, w.underlay, &peers, seen);
}

/// Looks up (and resolves when needed) the next-hop MAC of each peer.
fn refresh_next_hops(
    nl: &mut Netlink,
    overlay: &vxlan::Overlay,
    underlay: u32,
    peers: &[Ipv4Addr],
    seen: &mut Seen,
) {
    // Read once, at the first peer that needs it: every next hop is on the underlay.
    let mut table = None;
    for &peer in peers {
        let (hop, oif) = match underlay::next_hop(nl, peer) {
            Ok(h) => h,
            Err(e) => {
                if seen.unreachable.insert(peer) {
                    tracing::warn!(%peer, error = %e, "VTEP: no route to the peer");
                }
                overlay.set_next_hop(peer, None);
                continue;
            }
        };
        if oif != underlay {
            if seen.unreachable.insert(peer) {
                tracing::warn!(
                    %peer,
                    "VTEP: the route to the peer leaves by another interface than the underlay"
                );
            }
            overlay.set_next_hop(peer, None);
            continue;
        }
        seen.unreachable.remove(&peer);
        let n = table
            .get_or_insert_with(|| underlay::neighbours(nl, oif).unwrap_or_default())
            .get(&hop)
            .copied();
        let mac = n.and_then(|n| n.mac);
        if mac.is_some() || overlay.next_hop(peer).is_none() {
            overlay.set_next_hop(peer, mac);
        }
        if !n.is_some_and(|n| n.fresh) {
            // Missing, failed or stale: ask the kernel to (re)resolve it; the next look reads
            // the answer. A stale MAC keeps being used meanwhile, as the kernel does.
            if let Err(e) = underlay::resolve(nl, oif, hop) {
                tracing::debug!(%hop, error = %e, "VTEP: resolving a next hop");
            }
        }
    }
}

/// Attaches an overlay network's VXLAN port: the VNI on the endpoint, the port on the bridge,
/// and the network registered with the trace hub.
pub(in crate::daemon) fn attach_vxlan_port(
    d: &Daemon,
    rec: &PortRecord,
    net: &NetworkLive,
    mode: PortMode,
) -> Result<PortLive, ApiError> {
    let overlay = d
        .overlay
        .as_ref()
        .ok_or_else(|| ApiError::internal("the VXLAN endpoint is not open"))?;
    let vni = net
        .record
        .spec
        .vni
        .ok_or_else(|| ApiError::invalid(format!("network {} has no VNI", rec.network)))?;
    let peers: Vec<IpAddr> = net
        .record
        .spec
        .peers
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let (port, counters) = overlay
        .add_vni(vni, &peers)
        .map_err(|e| ApiError::internal(format!("VNI {vni}: {e}")))?;
    let mtu = port.capabilities().mtu;
    let bridge_name = port.name().to_string();
    let network = net.id;
    let attached = d
        .call(move |ctl| ctl.add_port_with_counters(network, Box::new(port), mode, counters))
        .and_then(|r| r.map_err(|e| ApiError::internal(format!("attaching {}: {e}", rec.name))));
    let handle = match attached {
        Ok(h) => h,
        Err(e) => {
            overlay.remove_vni(vni);
            return Err(e);
        }
    };
    overlay.set_handle(vni, handle);
    d.attached(rec, handle, mtu, bridge_name)
}

/// Takes a VXLAN port's VNI off the endpoint (the port leaves the bridge with the caller).
pub(in crate::daemon) fn detach_vxlan_port(d: &Daemon, live: &PortLive) {
    let vni = d
        .networks
        .get(&live.record.network)
        .and_then(|n| n.record.spec.vni);
    if let (Some(o), Some(vni)) = (&d.overlay, vni) {
        o.remove_vni(vni);
    }
}

/// The MTU of the underlay: that of the interface holding `local`, or, for 0.0.0.0, the
/// smallest of the up interfaces with an IPv4 address (1500 if none is found).
fn underlay_mtu(local: Ipv4Addr) -> usize {
    let Ok(mut nl) = Netlink::new() else {
        return 1500;
    };
    let links = nl.list_links().unwrap_or_default();
    let mut best: Option<u32> = None;
    for l in links.iter().filter(|l| l.name != "lo" && l.up) {
        let addrs = nl.list_addresses(&l.name).unwrap_or_default();
        if local.is_unspecified() {
            if !addrs.is_empty() {
                best = Some(best.map_or(l.mtu, |b| b.min(l.mtu)));
            }
        } else if addrs.iter().any(|(a, _)| *a == local) {
            return l.mtu as usize;
        }
    }
    best.map_or(1500, |m| m as usize)
}
