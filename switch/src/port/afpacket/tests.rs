//! AF_PACKET ports on veth pairs in private namespaces (root; skipped without it).

use super::ifreq::ifindex_of;
use super::*;
use crate::offload::VIRTIO_NET_HDR_GSO_TCPV4;
use crate::testing::{
    deadline, in_private_netns, ip, needs_root, quiet_namespace, tso4_frame, veth_pair,
    wait_readable,
};

/// A local experimental EtherType (IEEE 802), so test frames never mix with the kernel's.
const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// A 60-byte broadcast frame carrying sequence number `seq`.
fn test_frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&TEST_ETHERTYPE);
    f.extend_from_slice(b"vswitch");
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60, 0xab);
    f
}

/// Sends every frame, retrying while the port is momentarily full.
/// Frames with their offload metadata, as a port sends them.
fn refs_of(frames: &[(VirtioNetHdr, Vec<u8>)]) -> Vec<FrameRef<'_>> {
    frames
        .iter()
        .map(|(meta, data)| FrameRef { meta: *meta, data })
        .collect()
}

/// Frames without offload metadata, as a port sends them.
fn plain_refs(frames: &[Vec<u8>]) -> Vec<FrameRef<'_>> {
    frames
        .iter()
        .map(|f| FrameRef {
            meta: VirtioNetHdr::NONE,
            data: f,
        })
        .collect()
}

fn send_all(port: &mut AfPacketPort, frames: &[FrameRef<'_>]) {
    let until = deadline(5);
    let mut sent = 0;
    while sent < frames.len() {
        sent += port.send(&frames[sent..]).expect("send");
        assert!(std::time::Instant::now() < until, "port stayed full");
    }
    assert_eq!(port.rejected_frames(), 0);
}

/// Receives until `want(frame)` matched `count` frames or the deadline passed.
fn recv_matching(
    port: &mut AfPacketPort,
    count: usize,
    want: impl Fn(&Packet) -> bool,
) -> Vec<Packet> {
    let until = deadline(5);
    let mut pkts = vec![Packet::new(); 16];
    let mut got = Vec::new();
    while got.len() < count && wait_readable(port.raw_fd().unwrap(), until) {
        let n = port.recv(&mut pkts).expect("recv");
        got.extend(pkts[..n].iter().filter(|p| want(p)).cloned());
    }
    got
}

fn is_test_frame(p: &Packet) -> bool {
    p.frame().get(12..14) == Some(&TEST_ETHERTYPE[..])
}

#[test]
fn vlan_tags_taken_out_by_the_kernel_are_put_back() {
    on_a_veth_both_ways(|mut a, mut b| {
        // VLAN 10, priority 5, then the test EtherType.
        let mut tagged = test_frame(7)[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0xa0, 0x0a]);
        tagged.extend_from_slice(&test_frame(7)[12..]);
        let refs = [FrameRef {
            meta: VirtioNetHdr::NONE,
            data: &tagged,
        }];
        send_all(&mut a, &refs);
        let got = recv_matching(&mut b, 1, |p| {
            p.frame().get(16..18) == Some(&TEST_ETHERTYPE[..])
        });
        assert_eq!(got.len(), 1, "the tagged frame did not arrive with its tag");
        assert_eq!(got[0].frame(), &tagged[..]);
    });
}

#[test]
fn veth_batch_arrives_in_order_and_is_not_read_back() {
    if !needs_root() {
        return;
    }
    in_private_netns(|| {
        veth_pair("va", "vb");
        let mut a = AfPacketPort::open("va").unwrap();
        let mut b = AfPacketPort::open("vb").unwrap();
        assert!(interface_exists("va") && !interface_exists("nosuchif0"));
        assert_eq!(a.ifindex(), ifindex_of("va").unwrap());
        let caps = a.capabilities();
        assert_eq!(
            (caps.mtu, caps.offloads, caps.max_burst),
            (1500, Offloads::ALL, 64)
        );

        let frames: Vec<Vec<u8>> = (0..32).map(test_frame).collect();
        let refs = plain_refs(&frames);
        send_all(&mut a, &refs);

        let got = recv_matching(&mut b, 32, is_test_frame);
        let got: Vec<&[u8]> = got.iter().map(|p| p.frame()).collect();
        let sent: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        assert_eq!(got, sent);
        assert_eq!(b.bad_frames(), 0);

        // Had the sender's frames been looped back to it, they would have been queued on its
        // socket before the peer saw them: one non-blocking read is enough to tell.
        let mut pkts = vec![Packet::new(); 16];
        loop {
            let n = a.recv(&mut pkts).unwrap();
            assert!(!pkts[..n].iter().any(is_test_frame), "own frames read back");
            if n == 0 {
                break;
            }
        }
    });
}

/// TCP payload bytes of a TCP/IPv4 frame from 10.0.0.1 (0 for anything else).
fn tcp_payload_len(p: &Packet) -> usize {
    use crate::wire::{ethernet, ipv4, tcp, EtherType, IPPROTO_TCP};
    let Ok(eth) = ethernet::Frame::new_checked(p.frame()) else {
        return 0;
    };
    if eth.ethertype() != EtherType::Ipv4 {
        return 0;
    }
    let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
        return 0;
    };
    if ip.protocol() != IPPROTO_TCP || ip.src_addr() != std::net::Ipv4Addr::new(10, 0, 0, 1) {
        return 0;
    }
    let ip_payload = usize::from(ip.total_len()).saturating_sub(ip.header_len());
    match tcp::Packet::new_checked(ip.payload()) {
        Ok(t) => ip_payload.saturating_sub(t.header_len()),
        Err(_) => 0,
    }
}

#[test]
fn gso_super_frame_crosses_a_veth() {
    on_a_veth_both_ways(|mut a, mut b| {
        let (hdr, frame) = tso4_frame(20000);
        send_all(
            &mut a,
            &[FrameRef {
                meta: hdr,
                data: &frame,
            }],
        );

        let payload = 20000 - 54;
        let until = deadline(5);
        let mut pkts = vec![Packet::new(); 16];
        let mut got = Vec::new();
        while got.iter().map(tcp_payload_len).sum::<usize>() < payload
            && wait_readable(b.raw_fd().unwrap(), until)
        {
            let n = b.recv(&mut pkts).unwrap();
            got.extend(pkts[..n].iter().filter(|p| tcp_payload_len(p) > 0).cloned());
        }
        assert_eq!(got.iter().map(tcp_payload_len).sum::<usize>(), payload);
        if got.len() == 1 {
            // Whole, as a super-frame with its offload metadata.
            let m = got[0].meta;
            assert_eq!(got[0].frame(), &frame[..]);
            assert_eq!((m.gso_kind(), m.gso_size), (VIRTIO_NET_HDR_GSO_TCPV4, 1400));
            assert_eq!((m.csum_start, m.csum_offset), (34, 16));
        } else {
            // Segmented on the way: MSS-sized pieces.
            assert!(got.iter().all(|p| tcp_payload_len(p) <= 1400));
        }
    });
}

#[test]
fn vanished_interface_is_an_error() {
    on_a_veth_both_ways(|_a, mut b| {
        ip(&["link", "del", "vb"]);
        assert!(!interface_exists("vb"));

        // The socket reports ENETDOWN once, waking poll with POLLERR.
        let until = deadline(5);
        let mut pkts = vec![Packet::new(); 4];
        let err = loop {
            match b.recv(&mut pkts) {
                Err(e) => break e,
                Ok(_) => assert!(wait_readable(b.raw_fd().unwrap(), until), "no error"),
            }
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENETDOWN), "{err}");

        let frame = test_frame(0);
        let err = b
            .send(&[FrameRef {
                meta: VirtioNetHdr::NONE,
                data: &frame,
            }])
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "{err}");
    });
}

/// Runs `body` twice, each time in a private namespace with a veth pair va–vb and a port on
/// each end (`a` on va, `b` on vb): once with `b` reading its socket queue, once through a
/// ring.
fn on_a_veth_both_ways(body: fn(AfPacketPort, AfPacketPort)) {
    on_a_veth(&[false, true], body);
}

/// [`on_a_veth_both_ways`] for the ways named: `false` for the socket queue, `true` for a
/// ring.
fn on_a_veth(ways: &[bool], body: fn(AfPacketPort, AfPacketPort)) {
    if !needs_root() {
        return;
    }
    for &ringed in ways {
        in_private_netns(move || {
            quiet_namespace();
            veth_pair("va", "vb");
            let a = AfPacketPort::open("va").unwrap();
            let mut b = AfPacketPort::open("vb").unwrap();
            if ringed {
                b.resize_ring(ring::RING_MIN_BYTES).unwrap();
            }
            body(a, b);
        });
    }
}

/// Reads every frame until none arrived for a while; returns them in order.
fn recv_until_quiet(port: &mut AfPacketPort) -> Vec<Packet> {
    let mut pkts = vec![Packet::new(); 64];
    let mut got = Vec::new();
    let quiet = std::time::Duration::from_millis(300);
    while wait_readable(port.raw_fd().unwrap(), std::time::Instant::now() + quiet) {
        loop {
            let n = port.recv(&mut pkts).expect("recv");
            got.extend(pkts[..n].iter().cloned());
            if n < pkts.len() {
                break;
            }
        }
    }
    got
}

/// The sequence number of a frame made by [`test_frame`] or [`numbered_super_frame`].
fn seq_of(p: &Packet) -> Option<u32> {
    let f = p.frame();
    if is_test_frame(p) {
        return Some(u32::from_be_bytes(f[21..25].try_into().unwrap()));
    }
    // Segments of one super-frame carry its number in the top bits of their TCP sequence.
    (tcp_payload_len(p) > 0).then(|| u32::from_be_bytes(f[38..42].try_into().unwrap()) >> 20)
}

/// A TCP super-frame of `len` bytes whose TCP sequence number carries `seq` (the checksum
/// is partial and leaves the sequence number out; segments add less than 2^20 to it).
fn numbered_super_frame(seq: u32, len: usize) -> (VirtioNetHdr, Vec<u8>) {
    let (hdr, mut f) = tso4_frame(len);
    f[38..42].copy_from_slice(&(seq << 20).to_be_bytes());
    (hdr, f)
}

#[test]
fn slots_hold_frames_where_the_ring_geometry_says() {
    on_a_veth(&[false], |mut a, mut b| {
        assert_eq!(b.ring_slots(), 0, "a new port has no ring");
        b.resize_ring(ring::RING_MIN_BYTES).unwrap();
        assert_eq!(b.ring_slots(), ring::RING_MIN_BYTES / ring::FRAME_SIZE);
        let frame = test_frame(1);
        let refs = [FrameRef {
            meta: VirtioNetHdr::NONE,
            data: &frame,
        }];
        send_all(&mut a, &refs);
        assert!(wait_readable(b.raw_fd().unwrap(), deadline(5)));
        let slot = b
            .ring
            .as_ref()
            .unwrap()
            .ready()
            .expect("a slot handed over");
        assert_eq!(slot.status & libc::TP_STATUS_COPY, 0);
        assert_eq!((slot.len, slot.snaplen), (60, 60));
        assert_eq!(slot.mac, ring::ETH_MAC_OFFSET);
        assert_eq!(slot.net, slot.mac + 14);
        let (vnet, data) = slot.contents().unwrap();
        assert_eq!(data, &frame[..]);
        assert_eq!(VirtioNetHdr::parse(vnet).unwrap().gso_size, 0);
    });
}

#[test]
fn frame_after_the_ring_ran_dry_wakes_an_edge_triggered_poll() {
    on_a_veth_both_ways(|mut a, mut b| {
        // As the event loop does: edge-triggered readiness, drain until recv says 0.
        let mut poll = mio::Poll::new().unwrap();
        let fd = b.raw_fd().unwrap();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        let mut pkts = vec![Packet::new(); 8];
        let (hdr, big) = numbered_super_frame(1000, 20000);
        for round in 0..20u32 {
            // Small frames through the ring; every other round a super-frame at the end,
            // through the copy path.
            let small = test_frame(round);
            let mut refs = vec![FrameRef {
                meta: VirtioNetHdr::NONE,
                data: &small,
            }];
            if round % 2 == 1 {
                refs.push(FrameRef {
                    meta: hdr,
                    data: &big,
                });
            }
            send_all(&mut a, &refs);
            let mut got = 0;
            let until = deadline(5);
            while got < refs.len() {
                poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                assert!(!events.is_empty(), "round {round}: no wake-up");
                assert!(
                    std::time::Instant::now() < until,
                    "round {round}: frames missing"
                );
                loop {
                    let n = b.recv(&mut pkts).unwrap();
                    got += n;
                    if n == 0 {
                        break;
                    }
                }
            }
            assert_eq!(got, refs.len(), "round {round}");
        }
    });
}

#[test]
fn a_busy_port_gets_a_ring_and_loses_nothing_queued() {
    on_a_veth(&[false], |mut a, mut b| {
        let frames: Vec<Vec<u8>> = (0..1100).map(test_frame).collect();
        let refs = plain_refs(&frames);
        send_all(&mut a, &refs);
        assert!(wait_readable(b.raw_fd().unwrap(), deadline(5)));
        // Busy: 1000 frames read from the socket queue, 100 still waiting there. No ring
        // until the read that makes the thousand, then one at once (not a second later).
        let mut pkts = vec![Packet::new(); 50];
        let mut read = Vec::new();
        while read.len() < 1000 {
            assert_eq!(b.ring_slots(), 0, "a ring after {} frames", read.len());
            let n = b.recv(&mut pkts).unwrap();
            assert!(n > 0, "the queue ran dry after {} frames", read.len());
            read.extend(pkts[..n].iter().filter_map(seq_of));
        }
        assert_eq!(read, (0..1000).collect::<Vec<u32>>());
        assert_eq!(b.ring_slots(), ring::RING_MIN_BYTES / ring::FRAME_SIZE);
        // The once-a-second look keeps it.
        b.refresh();
        assert_eq!(b.ring_slots(), ring::RING_MIN_BYTES / ring::FRAME_SIZE);
        // The waiting frames come first, then what arrives through the ring.
        send_all(&mut a, &refs[..5]);
        let got: Vec<u32> = recv_until_quiet(&mut b).iter().filter_map(seq_of).collect();
        let want: Vec<u32> = (1000..1100).chain(0..5).collect();
        assert_eq!(got, want);
        assert_eq!(b.take_rx_overruns(), 0);
    });
}

#[test]
fn a_ring_that_overflowed_grows_and_keeps_what_it_held() {
    on_a_veth(&[true], |mut a, mut b| {
        let small = b.ring_slots();
        let frames: Vec<Vec<u8>> = (0..small as u32 * 2).map(test_frame).collect();
        let refs = plain_refs(&frames);
        // Twice what the ring holds, unread: the ring fills and the kernel drops the rest.
        send_all(&mut a, &refs);
        assert!(wait_readable(b.raw_fd().unwrap(), deadline(5)));
        // Read a few so the ring is neither empty nor full when it is replaced.
        let mut pkts = vec![Packet::new(); 3];
        assert_eq!(b.recv(&mut pkts).unwrap(), 3);
        // The read found the ring full and the kernel dropping: it grew at once ...
        assert_eq!(b.ring_slots(), small * 4);
        let overruns = b.take_rx_overruns();
        assert!(overruns > 0, "the ring should have overflowed");
        // ... and the once-a-second pass keeps it.
        b.refresh();
        assert_eq!(b.ring_slots(), small * 4);
        // ... and what the old ring held comes out first, in order, then new frames.
        send_all(&mut a, &refs[..5]);
        let got = recv_until_quiet(&mut b);
        let seqs: Vec<u32> = got.iter().filter_map(seq_of).collect();
        let held = small as u32 - 3;
        let want: Vec<u32> = (3..3 + held).chain(0..5).collect();
        assert_eq!(seqs, want);
        assert_eq!(got.len() as u64 + 3 + overruns, small as u64 * 2 + 5);

        // A big ring takes the whole burst.
        send_all(&mut a, &refs);
        let got = recv_until_quiet(&mut b);
        assert_eq!(got.len(), refs.len());
        assert_eq!(b.take_rx_overruns(), 0);
        assert_eq!(b.bad_frames(), 0);
    });
}

#[test]
fn burst_larger_than_the_ring_is_counted_as_overruns() {
    on_a_veth(&[true], |mut a, mut b| {
        const SENT: u32 = 3000;
        let frames: Vec<Vec<u8>> = (0..SENT).map(test_frame).collect();
        let refs = plain_refs(&frames);
        // Nobody reads while they arrive: the ring fills, the kernel drops the rest.
        send_all(&mut a, &refs);

        let got = recv_until_quiet(&mut b);
        let overruns = b.take_rx_overruns();
        assert_eq!(
            got.len() as u64 + overruns,
            u64::from(SENT),
            "received {} and counted {overruns} overruns",
            got.len()
        );
        assert!(got.len() <= b.ring_slots() && overruns > 0);
        // The first frames, in order, filled the ring.
        let seqs: Vec<Option<u32>> = got.iter().map(seq_of).collect();
        let first: Vec<Option<u32>> = (0..got.len() as u32).map(Some).collect();
        assert_eq!(seqs, first);
        assert_eq!(b.bad_frames(), 0);
        assert_eq!(b.take_rx_overruns(), 0, "reading the count resets it");

        // The ring works on once drained.
        send_all(&mut a, &refs[..10]);
        let again = recv_until_quiet(&mut b);
        assert_eq!(again.iter().map(seq_of).collect::<Vec<_>>(), first[..10]);
        assert_eq!(b.take_rx_overruns(), 0);
    });
}

#[test]
fn small_and_super_frames_keep_their_order() {
    on_a_veth_both_ways(|mut a, mut b| {
        // Every third frame a super-frame (through the copy path), the others small
        // (through the ring), some back to back.
        let frames: Vec<(VirtioNetHdr, Vec<u8>)> = (0..90u32)
            .map(|i| match i % 5 {
                1 | 2 => numbered_super_frame(i, 3000 + (i as usize * 7919) % 50000),
                _ => (VirtioNetHdr::NONE, test_frame(i)),
            })
            .collect();
        let refs = refs_of(&frames);
        send_all(&mut a, &refs);

        let got = recv_until_quiet(&mut b);
        let mut seqs: Vec<u32> = got.iter().filter_map(seq_of).collect();
        seqs.dedup();
        assert_eq!(seqs, (0..90).collect::<Vec<u32>>());
        for p in &got {
            let sent = &frames[seq_of(p).unwrap() as usize];
            if p.len == sent.1.len() {
                // Whole, with its offload metadata.
                assert_eq!(p.frame(), &sent.1[..]);
                assert_eq!(p.meta.gso_size, sent.0.gso_size);
            }
        }
        assert!(
            got.iter().any(|p| p.len > ring::FRAME_SIZE),
            "no super-frame"
        );
        assert_eq!((b.bad_frames(), b.take_rx_overruns()), (0, 0));
    });
}

#[test]
fn super_frames_beyond_the_receive_buffer_are_counted_as_overruns() {
    on_a_veth(&[false, true], |mut a, mut b| {
        // 300 × 60 KB is more than the receive buffer holds: the later ones find no room
        // (for their whole copy, with a ring), and are counted.
        let frames: Vec<(VirtioNetHdr, Vec<u8>)> =
            (0..300).map(|i| numbered_super_frame(i, 60000)).collect();
        let refs = refs_of(&frames);
        send_all(&mut a, &refs);

        let got = recv_until_quiet(&mut b);
        let overruns = b.take_rx_overruns();
        assert!(got.iter().all(|p| p.len == 60000), "segmented on the way");
        assert_eq!(got.len() as u64 + overruns, 300);
        assert!(overruns > 0, "the receive buffer never filled");
        let seqs: Vec<u32> = got.iter().filter_map(seq_of).collect();
        assert_eq!(seqs, (0..got.len() as u32).collect::<Vec<_>>());
        assert_eq!(b.bad_frames(), 0);
    });
}

#[test]
fn missing_interface_error_names_it() {
    let err = AfPacketPort::open("nosuchif0").unwrap_err();
    assert!(err.to_string().contains("nosuchif0"), "{err}");
}

#[test]
fn the_deepest_ring_is_reported_once_and_then_starts_again() {
    on_a_veth(&[true], |mut a, mut b| {
        assert_eq!(b.take_rx_queue_peak(), 0, "nothing waited yet");
        let frames: Vec<Vec<u8>> = (0..100).map(test_frame).collect();
        send_all(&mut a, &plain_refs(&frames));
        let until = deadline(5);
        while b.ring.as_ref().unwrap().waiting() < 100 {
            assert!(
                std::time::Instant::now() < until,
                "only {} frames reached the ring",
                b.ring.as_ref().unwrap().waiting()
            );
            std::thread::yield_now();
        }
        // One full batch read: the 64 taken and the 36 still behind them.
        let mut pkts = vec![Packet::new(); 64];
        assert_eq!(b.recv(&mut pkts).unwrap(), 64);
        assert_eq!(b.ring.as_ref().unwrap().waiting(), 36);
        assert_eq!(b.take_rx_queue_peak(), 100);
        // Taken: it starts again from what is seen next.
        assert_eq!(b.take_rx_queue_peak(), 0);
        assert_eq!(b.recv(&mut pkts).unwrap(), 36);
        assert_eq!(b.take_rx_queue_peak(), 36);
        assert_eq!(b.ring.as_ref().unwrap().waiting(), 0);
    });
}

#[test]
fn a_ring_grows_no_deeper_than_the_latency_budget() {
    on_a_veth(&[true], |mut a, mut b| {
        // The datapath drains 600 frames within its budget: the ring stops at 576 slots
        // (whole 64 KiB), however much the kernel drops.
        b.set_rx_queue_budget(600);
        let mut sizes = vec![b.ring_slots()];
        for _ in 0..4 {
            let frames: Vec<Vec<u8>> = (0..b.ring_slots() as u32 * 2).map(test_frame).collect();
            send_all(&mut a, &plain_refs(&frames));
            assert!(wait_readable(b.raw_fd().unwrap(), deadline(5)));
            // Drops are seen, and the once-a-second look resizes.
            assert!(b.take_rx_overruns() > 0);
            b.refresh();
            recv_until_quiet(&mut b);
            sizes.push(b.ring_slots());
        }
        assert_eq!(sizes, [128, 512, 576, 576, 576]);
        // A slower datapath (a budget under a quarter of the ring) cuts it back.
        b.set_rx_queue_budget(100);
        b.refresh();
        assert_eq!(b.ring_slots(), ring::RING_MIN_BYTES / ring::FRAME_SIZE);
    });
}
