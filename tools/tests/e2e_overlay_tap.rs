//! End-to-end tests of the VTEP's TAP backend (Linux 6.17+, `--vtep-backend tap`), as root:
//! whole super-frames through the TAP and tc, and the faults the daemon must survive (tc
//! filters removed by hand, the TAP deleted, the underlay down), with the flat networks
//! forwarding throughout. The overlay tests of `e2e_overlay.rs` run on the default backend and
//! again on the socket (their `…_on_the_socket_vtep` twins); these force the TAP. Without root
//! each test prints
//! `skipped: needs root`; on an older kernel `skipped: needs Linux 6.17+`.

mod common;
#[path = "common/overlay.rs"]
mod overlay;

use common::{root_or_skip, run, wait_for};
use overlay::*;

/// Whether this kernel has UDP-tunnel GSO on TAPs (6.17+).
fn kernel_has_tunnel_gso() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < (6, 17) {
        println!("skipped: needs Linux 6.17+ (UDP-tunnel GSO on TAPs)");
        return false;
    }
    true
}

/// Two hosts whose daemons run the TAP backend, an overlay `ov` (VNI 4600) with a sandbox on
/// each, and a flat bridge network `flat` with two sandboxes on host 1.
fn tap_world() -> World {
    let mut w = World::with_hosts(&[false, false]);
    for i in 1..=2 {
        w.start_daemon(i, &["--vtep-backend", "tap"]);
    }
    w.overlay_everywhere("ov", 4600, 1);
    w.sandbox(1, "ov", "o1");
    w.sandbox(2, "ov", "o2");
    let flat = w.subnet(9);
    w.h(1)
        .d()
        .ctl_ok(&["network", "create", "flat", "--subnet", &flat]);
    w.sandbox(1, "flat", "f1");
    w.sandbox(1, "flat", "f2");
    w
}

/// The VTEP's counter `name` on host i (`stats vtep`).
fn vtep_count(w: &World, i: u8, name: &str) -> u64 {
    w.h(i).d().drops("vtep", name)
}

/// `tc -j filter show dev IF ingress` in host i's namespace: how many filters of our
/// priority (4789) it lists.
fn our_filters(w: &World, i: u8, ifname: &str) -> usize {
    let ns = &w.h(i).ns.name;
    let out = run(
        "ip",
        &[
            "netns", "exec", ns, "tc", "-j", "filter", "show", "dev", ifname, "ingress",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .map(|a| {
            // A u32 filter lists its hash table too: count the rules (they have actions).
            a.iter()
                .filter(|f| f["pref"] == 4789 && f["options"]["actions"].is_array())
                .count()
        })
        .unwrap_or(0)
}

fn tc(w: &World, i: u8, args: &[&str]) {
    let ns = &w.h(i).ns.name;
    let mut all = vec!["netns", "exec", ns, "tc"];
    all.extend_from_slice(args);
    let out = run("ip", &all);
    assert!(out.status.success(), "tc {args:?}: {out:?}");
}

fn both_ways(w: &World) {
    let (a, b) = (w.sb("o1"), w.sb("o2"));
    pings_succeed(&[(&a.ns, b.ip.as_str()), (&b.ns, a.ip.as_str())]);
}

fn flat_pings(w: &World) {
    let (a, b) = (w.sb("f1"), w.sb("f2"));
    assert!(
        ping1(&a.ns, &b.ip, &[]),
        "the flat network stopped forwarding"
    );
}

#[test]
fn the_tap_backend_carries_whole_super_frames_and_removes_its_filters_on_stop() {
    if !root_or_skip() || !kernel_has_tunnel_gso() {
        return;
    }
    let mut w = tap_world();
    for i in 1..=2 {
        assert!(
            w.h(i).d().log_text().contains("backend=\"tap\"")
                || w.h(i)
                    .d()
                    .log_text()
                    .contains("TAP backend with UDP-tunnel GSO"),
            "host {i} did not open the TAP backend"
        );
        assert_eq!(
            our_filters(&w, i, "ul0"),
            1,
            "the underlay's redirect on host {i}"
        );
        assert_eq!(
            our_filters(&w, i, "vs-vtep"),
            1,
            "the TAP's redirect on host {i}"
        );
    }
    both_ways(&w);
    // 8 MiB verified both ways: super-frames of up to 46 segments cross whole.
    let (a, b) = (w.sb("o1"), w.sb("o2"));
    verified_stream(&a.ns, &b.ns, &b.ip, 5301, 8 << 20);
    verified_stream(&b.ns, &a.ns, &a.ip, 5302, 8 << 20);
    // Nothing went through the socket, no write was refused.
    for i in 1..=2 {
        assert_eq!(vtep_count(&w, i, "tap_socket_rx"), 0, "host {i}");
        assert_eq!(vtep_count(&w, i, "tap_fallback_tx"), 0, "host {i}");
        assert_eq!(vtep_count(&w, i, "tap_write_errors"), 0, "host {i}");
        assert_eq!(vtep_count(&w, i, "tap_bad_header"), 0, "host {i}");
    }
    // Stopping the daemon takes its filters away.
    w.h_mut(1).daemon = None;
    assert_eq!(
        our_filters(&w, 1, "ul0"),
        0,
        "the underlay's filter outlived the daemon"
    );
}

#[test]
fn tc_filters_removed_by_hand_are_put_back() {
    if !root_or_skip() || !kernel_has_tunnel_gso() {
        return;
    }
    let w = tap_world();
    both_ways(&w);
    tc(
        &w,
        1,
        &["filter", "del", "dev", "ul0", "ingress", "pref", "4789"],
    );
    tc(
        &w,
        1,
        &["filter", "del", "dev", "vs-vtep", "ingress", "pref", "4789"],
    );
    wait_for("the filters to be put back", OWAIT, || {
        (our_filters(&w, 1, "ul0") == 1 && our_filters(&w, 1, "vs-vtep") == 1).then_some(())
    });
    assert!(vtep_count(&w, 1, "tap_filter_repaired") >= 2);
    both_ways(&w);
    flat_pings(&w);
    // The whole clsact qdisc removed: put back too.
    tc(&w, 1, &["qdisc", "del", "dev", "ul0", "clsact"]);
    wait_for("the underlay's filter to be put back", OWAIT, || {
        (our_filters(&w, 1, "ul0") == 1).then_some(())
    });
    both_ways(&w);
}

#[test]
fn a_deleted_tap_hands_the_overlay_to_the_socket() {
    if !root_or_skip() || !kernel_has_tunnel_gso() {
        return;
    }
    let mut w = tap_world();
    both_ways(&w);
    common::ip(&["-n", &w.h(1).ns.name, "link", "del", "vs-vtep"]);
    wait_for("the daemon to notice the TAP is gone", OWAIT, || {
        (vtep_count(&w, 1, "tap_lost") == 1).then_some(())
    });
    assert_eq!(
        our_filters(&w, 1, "ul0"),
        0,
        "the redirect to a missing TAP went"
    );
    // Host 1 carries on through its socket; host 2 still runs on its TAP.
    both_ways(&w);
    let (a, b) = (w.sb("o1"), w.sb("o2"));
    verified_stream(&a.ns, &b.ns, &b.ip, 5303, 2 << 20);
    assert!(vtep_count(&w, 1, "tap_fallback_tx") > 0);
    flat_pings(&w);
    assert!(
        w.h_mut(1).d_mut().exit_status().is_none(),
        "the daemon is still running"
    );
}

#[test]
fn the_underlay_going_down_is_reported_and_the_flat_network_keeps_forwarding() {
    if !root_or_skip() || !kernel_has_tunnel_gso() {
        return;
    }
    let w = tap_world();
    both_ways(&w);
    let ns = w.h(1).ns.name.clone();
    common::ip(&["-n", &ns, "link", "set", "ul0", "down"]);
    wait_for("the daemon to see the underlay down", OWAIT, || {
        (vtep_count(&w, 1, "tap_underlay_down") == 1).then_some(())
    });
    flat_pings(&w);
    common::ip(&["-n", &ns, "link", "set", "ul0", "up"]);
    both_ways(&w);
    flat_pings(&w);
}

#[test]
fn the_underlay_vanishing_is_reported_and_the_path_is_rewired_when_it_is_back() {
    if !root_or_skip() || !kernel_has_tunnel_gso() {
        return;
    }
    let mut w = tap_world();
    both_ways(&w);
    let ns = w.h(1).ns.name.clone();
    // Deleting one end of the veth deletes both: the underlay is gone from host 1.
    common::ip(&["-n", &ns, "link", "del", "ul0"]);
    wait_for("the daemon to see the underlay gone", OWAIT, || {
        (vtep_count(&w, 1, "tap_underlay_missing") == 1).then_some(())
    });
    flat_pings(&w);
    assert!(
        w.h_mut(1).d_mut().exit_status().is_none(),
        "the daemon is still running"
    );
    // Back under the same name with a new index: the filters follow it, the overlay works.
    w.replug_underlay(1);
    wait_for("the filter on the new underlay", OWAIT, || {
        (our_filters(&w, 1, "ul0") == 1).then_some(())
    });
    both_ways(&w);
    let fallback = vtep_count(&w, 1, "tap_fallback_tx");
    let (a, b) = (w.sb("o1"), w.sb("o2"));
    verified_stream(&a.ns, &b.ns, &b.ip, 5304, 2 << 20);
    assert_eq!(vtep_count(&w, 1, "tap_lost"), 0, "the TAP path stayed");
    assert_eq!(
        vtep_count(&w, 1, "tap_fallback_tx"),
        fallback,
        "the stream went through the TAP, not the socket"
    );
    flat_pings(&w);
}

#[test]
fn a_filter_left_by_a_killed_tap_daemon_is_cleared_by_the_socket_backend() {
    if !root_or_skip() || !kernel_has_tunnel_gso() {
        return;
    }
    let mut w = tap_world();
    both_ways(&w);
    // kill -9: no clean-up; the TAP goes with its descriptor, the underlay's redirect stays.
    let status = w
        .h_mut(1)
        .d_mut()
        .signal(libc::SIGKILL, std::time::Duration::from_secs(10));
    assert!(status.is_some(), "vswitchd of host 1 did not die");
    w.h_mut(1).daemon = None;
    assert_eq!(our_filters(&w, 1, "ul0"), 1, "kill -9 left the redirect");
    // Restarted on the socket backend (same state): the leftover goes, the overlay works.
    w.start_daemon(1, &["--vtep-backend", "socket"]);
    assert_eq!(
        our_filters(&w, 1, "ul0"),
        0,
        "the leftover redirect to a TAP that is gone"
    );
    both_ways(&w);
    flat_pings(&w);
}
