//! Micro-benchmarks of the bridge pipeline, in memory (no I/O): learned unicast, floods to 8
//! ports, MAC table lookups with 1 K and 1 M entries, and the software offloads: a 64 KB TCP
//! super-frame cut into segments (GSO) and those segments coalesced again (GRO).
//!
//! `cargo bench -p benches --bench pipeline`. Throughput is reported as elements (frames or
//! lookups) per second.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use switch::bridge::{Bridge, BridgeConfig, BridgePort, PortMode};
use switch::fdb::{Fdb, FdbConfig};
use switch::gro::Coalesced;
use switch::gso::Segmenter;
use switch::offload::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
use switch::port::{FrameRef, PortId};
use switch::{Instant, MacAddr, PortCounters, VirtioNetHdr};

fn mac(n: u64) -> MacAddr {
    MacAddr::from_u64(0x0200_0000_0000 | n)
}

/// A 64-byte IPv4/UDP-ish frame from `src` to `dst`.
fn frame(src: MacAddr, dst: MacAddr) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

fn bridge_with_ports(n: usize) -> Bridge {
    let mut b = Bridge::new(BridgeConfig::default());
    for i in 0..n {
        b.add_port(BridgePort {
            name: format!("p{i}"),
            mode: PortMode::Access(1),
            max_frame_len: 1522,
            up: true,
            counters: Arc::new(PortCounters::default()),
        });
    }
    b
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    const BATCH: usize = 256;
    g.throughput(Throughput::Elements(BATCH as u64));

    // Learned unicast: 16 stations on 8 ports, all known; frames between them.
    let mut b = bridge_with_ports(8);
    let now = Instant::from_secs(10);
    for s in 0..16u64 {
        b.fdb_mut().learn(now, 1, mac(s), PortId((s % 8) as u16));
    }
    let frames: Vec<(PortId, [u8; 64])> = (0..BATCH as u64)
        .map(|i| {
            let (s, d) = (i % 16, (i * 7 + 3) % 16);
            let d = if d % 8 == s % 8 { (d + 1) % 16 } else { d };
            (PortId((s % 8) as u16), frame(mac(s), mac(d)))
        })
        .collect();
    let mut out = Vec::with_capacity(8);
    g.bench_function("learned_unicast_64B", |bench| {
        bench.iter(|| {
            for (p, f) in &frames {
                let fr = FrameRef {
                    meta: VirtioNetHdr::NONE,
                    data: f,
                };
                black_box(b.process(now, *p, fr, &mut out));
            }
        })
    });

    // Flood: broadcast from one port to the 8 others.
    let mut b = bridge_with_ports(9);
    let bcast = frame(mac(1), MacAddr::BROADCAST);
    g.bench_function("flood_to_8_ports_64B", |bench| {
        bench.iter(|| {
            for _ in 0..BATCH {
                let fr = FrameRef {
                    meta: VirtioNetHdr::NONE,
                    data: &bcast,
                };
                black_box(b.process(now, PortId(0), fr, &mut out));
            }
        })
    });
    g.finish();
}

fn fdb_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_lookup");
    const LOOKUPS: usize = 1024;
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    for size in [1_000u64, 1_000_000] {
        let mut fdb = Fdb::new(FdbConfig {
            max_entries: size as usize,
            max_per_port: size as usize,
            ..FdbConfig::default()
        });
        let now = Instant::from_secs(10);
        for n in 0..size {
            fdb.learn(now, 1, mac(n * 7919), PortId((n % 64) as u16));
        }
        // Keys spread over the whole table, in an order that defeats the prefetcher.
        let keys: Vec<MacAddr> = (0..LOOKUPS as u64)
            .map(|i| mac(((i * 2_654_435_761) % size) * 7919))
            .collect();
        g.bench_function(format!("{}_entries", size), |bench| {
            bench.iter_batched(
                || (),
                |_| {
                    for k in &keys {
                        black_box(fdb.lookup(now, 1, *k));
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Ethernet, IPv4 (no options, DF, TTL 64, 10.0.0.1 > 10.0.0.2) and TCP (40000 > 5201, ACK,
/// 20-byte header) of a super-frame; the lengths and checksums are filled in by the code under
/// test.
const SUPER_FRAME_HEADERS: [u8; 54] = [
    2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
    0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
    0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0x01, 0xf5, 0, 0, 0, 0, // TCP
];

/// GSO of a 64 KB TCPv4 super-frame (MSS 1448, 45 segments) and GRO of those segments.
fn offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    let payload = 45 * 1448;
    let mut sf = SUPER_FRAME_HEADERS.to_vec();
    sf.extend((0..payload).map(|i| i as u8));
    let ip_total = (sf.len() - 14) as u16;
    sf[16..18].copy_from_slice(&ip_total.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    g.throughput(Throughput::Bytes(sf.len() as u64));
    let mut seg = Segmenter::new();
    g.bench_function("gso_tcpv4_64KB", |bench| {
        bench.iter(|| {
            let mut n = 0usize;
            seg.segment(black_box(&sf), &hdr, |f| n += f.len()).unwrap();
            black_box(n)
        })
    });
    let mut segments = Vec::new();
    seg.segment(&sf, &hdr, |f| segments.push(f.to_vec()))
        .unwrap();
    let mut buf = Some(vec![0u8; 65_600].into_boxed_slice());
    g.bench_function("gro_tcpv4_45_segments", |bench| {
        bench.iter(|| {
            let mut c = Coalesced::start(&segments[0], buf.take().unwrap());
            for s in &segments[1..] {
                c.try_append(black_box(s));
            }
            c.finish();
            let len = c.len;
            buf = Some(c.buf);
            black_box(len)
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline, fdb_lookup, offload);
criterion_main!(benches);
