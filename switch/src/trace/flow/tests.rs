//! Flow specs and hex frames: what each field builds, what each mistake says, and that no text
//! makes the parser panic.

use super::l4::L4;
use super::*;
use crate::wire::checksum::tests::naive_sum;
use etherparse::{ArpOperation, NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;

fn frame(spec: &str) -> Vec<u8> {
    parse_flow(spec)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
        .build_frame()
}

fn err(spec: &str) -> FlowError {
    match parse_flow(spec) {
        Ok(f) => panic!("{spec} was accepted: {f:?}"),
        Err(e) => e,
    }
}

/// The Internet checksum (RFC 1071) of some 16-bit words and bytes, each chunk padded to whole
/// words: 0 when they verify. The naive sum, independent of the code under test.
fn checksum(chunks: &[&[u8]]) -> u16 {
    !chunks
        .iter()
        .fold(0, |sum, chunk| naive_sum(chunk, u32::from(sum)))
}

/// Checks the IPv4 header checksum and the transport checksum of a built frame by hand.
fn assert_checksums(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let (pseudo, l4): (Vec<u8>, &[u8]) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(checksum(&[h.slice()]), 0, "IPv4 header checksum");
            let l4 = ip.payload().payload;
            let mut pseudo = h.source().to_vec();
            pseudo.extend_from_slice(&h.destination());
            pseudo.extend_from_slice(&[0, h.protocol().0]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            (pseudo, l4)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let l4 = ip.payload().payload;
            let mut pseudo = h.source().to_vec();
            pseudo.extend_from_slice(&h.destination());
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, h.next_header().0]);
            (pseudo, l4)
        }
        _ => return,
    };
    match &p.transport {
        Some(TransportSlice::Tcp(_))
        | Some(TransportSlice::Udp(_))
        | Some(TransportSlice::Icmpv6(_)) => {
            assert_eq!(checksum(&[&pseudo, l4]), 0, "transport checksum")
        }
        Some(TransportSlice::Icmpv4(_)) => assert_eq!(checksum(&[l4]), 0, "ICMP checksum"),
        _ => {}
    }
}

#[test]
fn tcp_over_ipv4_on_a_vlan() {
    let f = frame(
        "in_port=p1,vlan=10,dl_src=02:42:ac:11:00:02,dl_dst=02:42:ac:11:00:03,\
         tcp,nw_src=172.17.0.2,nw_dst=172.17.0.3,nw_ttl=63,tp_src=40000,tp_dst=80",
    );
    assert_eq!(f.len(), 60, "58 bytes of headers, padded");
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    let eth = p
        .link
        .as_ref()
        .unwrap()
        .to_header()
        .unwrap()
        .ethernet2()
        .unwrap();
    assert_eq!(eth.source, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
    assert_eq!(eth.destination, [0x02, 0x42, 0xac, 0x11, 0x00, 0x03]);
    assert_eq!(p.vlan_ids().first().map(|v| v.value()), Some(10));
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().source(), [172, 17, 0, 2]);
    assert_eq!(ip.header().destination(), [172, 17, 0, 3]);
    assert_eq!(ip.header().ttl(), 63);
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        panic!("not TCP")
    };
    assert_eq!((tcp.source_port(), tcp.destination_port()), (40000, 80));
    assert!(tcp.syn() && !tcp.ack());
    assert_checksums(&f);
    assert_eq!(parse_flow("in_port=p1,ip").unwrap().in_port(), Some("p1"));
}

#[test]
fn short_frames_are_padded_to_60() {
    let f = frame("tcp");
    assert_eq!(f.len(), 60);
    assert_checksums(&f);
    let spec = parse_flow("tcp").unwrap();
    assert_eq!(spec.dl_src().to_string(), "02:00:00:00:00:01");
    assert_eq!(spec.dl_dst(), MacAddr::BROADCAST);
    assert_eq!(spec.vlan(), None);
}

#[test]
fn udp_and_tcp_flags() {
    let f = frame("udp,tp_src=68,tp_dst=67,len=342");
    assert_eq!(f.len(), 342);
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("not UDP")
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (68, 67));
    assert_eq!(udp.length() as usize, 342 - 14 - 20);
    assert_checksums(&f);

    for (flags, syn, ack, fin, psh) in [
        ("syn|ack", true, true, false, false),
        ("+fin+ack", false, true, true, false),
        ("0x018", false, true, false, true),
        ("ACK", false, true, false, false),
    ] {
        let f = frame(&format!("tcp,tcp_flags={flags}"));
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("not TCP")
        };
        assert_eq!(
            (tcp.syn(), tcp.ack(), tcp.fin(), tcp.psh()),
            (syn, ack, fin, psh),
            "{flags}"
        );
        assert_checksums(&f);
    }
}

#[test]
fn icmp_and_icmp6() {
    let f = frame("icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2");
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (8, 0));
    assert_checksums(&f);

    let f = frame("icmp,icmp_type=3,icmp_code=1,len=100");
    assert_eq!(f.len(), 100);
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 1));
    assert_checksums(&f);

    let f = frame("icmp6,ipv6_src=fd00::1,ipv6_dst=fd00::2,nw_ttl=255");
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    assert_eq!(
        ip.header().source_addr(),
        "fd00::1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        ip.header().destination_addr(),
        "fd00::2".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(ip.header().hop_limit(), 255);
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(icmp.type_u8(), 128);
    assert_checksums(&f);
}

#[test]
fn tcp6_udp6_and_bare_ip() {
    for (spec, proto) in [
        ("tcp6,ipv6_src=fd00::1,tp_dst=443", 6),
        ("udp6,nw_src=fd00::1,tp_dst=53", 17),
        ("ipv6", 253),
        ("ipv6,nw_proto=47", 47),
    ] {
        let f = frame(spec);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("{spec}: not IPv6")
        };
        assert_eq!(ip.payload().ip_number.0, proto, "{spec}");
        assert_checksums(&f);
    }
    for (spec, proto) in [
        ("ip", 253),
        ("ip,nw_proto=6,tp_dst=22", 6),
        ("dl_type=0x0800,nw_proto=17", 17),
        ("dl_type=0x800,nw_proto=1", 1),
        ("ip,nw_proto=47,len=200", 47),
    ] {
        let f = frame(spec);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("{spec}: not IPv4")
        };
        assert_eq!(ip.header().protocol().0, proto, "{spec}");
        assert_checksums(&f);
    }
    let p = frame("ip,nw_proto=6,tp_dst=22");
    let p = SlicedPacket::from_ethernet(&p).unwrap();
    assert!(matches!(&p.transport, Some(TransportSlice::Tcp(t)) if t.destination_port() == 22));
}

#[test]
fn arp_request_and_reply() {
    let f = frame("arp,dl_src=02:00:00:00:00:0a,arp_spa=10.0.0.1,arp_tpa=10.0.0.2");
    assert_eq!(f.len(), 60);
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    let Some(NetSlice::Arp(arp)) = &p.net else {
        panic!("not ARP")
    };
    assert_eq!(arp.operation(), ArpOperation::REQUEST);
    assert_eq!(arp.sender_hw_addr(), &[2, 0, 0, 0, 0, 0x0a]);
    assert_eq!(arp.sender_protocol_addr(), &[10, 0, 0, 1]);
    assert_eq!(arp.target_hw_addr(), &[0; 6]);
    assert_eq!(arp.target_protocol_addr(), &[10, 0, 0, 2]);
    assert_eq!(&f[..6], &[0xff; 6]);

    let f = frame(
        "arp,arp_op=2,dl_dst=02:00:00:00:00:0a,arp_sha=02:00:00:00:00:0b,\
         arp_tha=02:00:00:00:00:0a,arp_spa=10.0.0.2,arp_tpa=10.0.0.1,vlan=20",
    );
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    assert_eq!(p.vlan_ids().first().map(|v| v.value()), Some(20));
    let Some(NetSlice::Arp(arp)) = &p.net else {
        panic!("not ARP")
    };
    assert_eq!(arp.operation(), ArpOperation::REPLY);
    assert_eq!(arp.sender_hw_addr(), &[2, 0, 0, 0, 0, 0x0b]);
    assert_eq!(arp.target_hw_addr(), &[2, 0, 0, 0, 0, 0x0a]);
    assert_eq!(frame("arp,arp_op=reply"), frame("dl_type=0x0806,arp_op=2"));
}

#[test]
fn raw_ethertypes_and_len() {
    let f = frame("dl_type=0x88cc,dl_dst=01:80:c2:00:00:0e,len=100");
    assert_eq!(f.len(), 100);
    assert_eq!(&f[..6], &[0x01, 0x80, 0xc2, 0, 0, 0x0e]);
    assert_eq!(&f[12..14], &[0x88, 0xcc]);
    let f = frame("in_port=p2");
    assert_eq!(f.len(), 60);
    assert_eq!(&f[12..14], &[0x88, 0xb5]);
    // Separators may be commas, spaces or both; empty items are skipped.
    assert_eq!(frame("tcp, tp_dst=80 ,"), frame("tcp,tp_dst=80"));
    assert_eq!(frame("tp_dst=80,tcp"), frame("tcp,tp_dst=80"));
    assert_eq!(frame("dl_vlan=5,ip"), frame("ip,vlan=5"));
}

#[test]
fn every_error_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("", "empty flow spec"),
        (" , ,", "empty flow spec"),
        ("tcp,foo=1", "unknown field `foo`"),
        ("tcpx", "unknown field `tcpx`"),
        (
            "dl_src=zz:00:00:00:00:01",
            "dl_src=zz:00:00:00:00:01: not a MAC address",
        ),
        (
            "dl_dst=02:00:00:00:01",
            "dl_dst=02:00:00:00:01: not a MAC address",
        ),
        ("arp,arp_sha=nope", "arp_sha=nope: not a MAC address"),
        (
            "ip,nw_src=10.0.0.300",
            "nw_src=10.0.0.300: not an IPv4 address",
        ),
        (
            "ipv6,ipv6_dst=fd00::g",
            "ipv6_dst=fd00::g: not an IPv6 address",
        ),
        ("arp,arp_tpa=1.2.3", "arp_tpa=1.2.3: not an IPv4 address"),
        (
            "ip,nw_src=fd00::1",
            "nw_src=fd00::1 is an IPv6 address but the flow is IPv4",
        ),
        (
            "tcp,tp_dst=65536",
            "tp_dst=65536: out of range, expected 0-65535",
        ),
        (
            "udp,tp_src=99999999999999999999999",
            "tp_src=99999999999999999999999: out of range",
        ),
        ("tcp,tp_dst=http", "tp_dst=http: not a number"),
        ("tcp,tp_dst=-1", "tp_dst=-1: not a number"),
        ("vlan=0", "vlan=0: out of range, expected 1-4094"),
        (
            "dl_vlan=4095",
            "dl_vlan=4095: out of range, expected 1-4094",
        ),
        ("ip,nw_ttl=256", "nw_ttl=256: out of range"),
        ("icmp,icmp_type=300", "icmp_type=300: out of range"),
        ("arp,arp_op=3", "arp_op=3: out of range, expected 1-2"),
        ("tcp,len=59", "len=59: out of range, expected 60-65535"),
        ("tcp,len=65536", "len=65536: out of range"),
        ("tcp,udp", "conflicting protocols: `tcp` and `udp`"),
        ("ip,ipv6", "conflicting protocols: `ip` and `ipv6`"),
        ("arp,tcp", "conflicting protocols: `arp` and `tcp`"),
        ("ipv6,tcp", "conflicting protocols: `ipv6` and `tcp`"),
        ("tcp,icmp6", "conflicting protocols: `tcp` and `icmp6`"),
        (
            "tcp,dl_type=0x0806",
            "conflicting protocols: `tcp` and `dl_type=0x0806`",
        ),
        (
            "udp,nw_proto=6",
            "conflicting protocols: `udp` and `nw_proto=6`",
        ),
        (
            "ip,nw_proto=58",
            "conflicting protocols: `ip` and `nw_proto=58`",
        ),
        (
            "ipv6,nw_proto=1",
            "conflicting protocols: `ipv6` and `nw_proto=1`",
        ),
        ("tp_src=80", "`tp_src` needs tcp or udp"),
        ("ip,tp_dst=80", "`tp_dst` needs tcp or udp"),
        ("icmp,tp_dst=80", "`tp_dst` needs tcp or udp"),
        ("udp,tcp_flags=syn", "`tcp_flags` needs tcp"),
        ("tcp,icmp_type=8", "`icmp_type` needs icmp"),
        ("nw_dst=10.0.0.1", "`nw_dst` needs ip or ipv6"),
        ("ip,ipv6_src=fd00::1", "`ipv6_src` needs ipv6"),
        ("ip,arp_op=1", "`arp_op` needs arp"),
        ("dl_type=0x88cc,nw_proto=6", "`nw_proto` needs ip or ipv6"),
        (
            "arp,nw_src=10.0.0.1",
            "`nw_src` cannot be used with arp: use arp_spa",
        ),
        (
            "arp,nw_dst=10.0.0.1",
            "`nw_dst` cannot be used with arp: use arp_tpa",
        ),
        ("arp,nw_ttl=3", "`nw_ttl` needs ip or ipv6"),
        ("tcp,tp_dst=80,tp_dst=81", "duplicate field `tp_dst`"),
        (
            "vlan=1,dl_vlan=2",
            "duplicate field `dl_vlan` (same as `vlan`)",
        ),
        (
            "ipv6,nw_src=fd00::1,ipv6_src=fd00::2",
            "duplicate field `ipv6_src` (same as `nw_src`)",
        ),
        ("tcp,tcp", "duplicate field `tcp`"),
        ("tcp,tp_dst", "field `tp_dst` needs a value"),
        ("tcp,tp_dst=", "field `tp_dst` needs a value"),
        ("tcp=1", "`tcp` is a keyword and takes no value"),
        (
            "tcp,tcp_flags=syn|bogus",
            "tcp_flags=syn|bogus: expected flag names",
        ),
        (
            "tcp6,len=60",
            "len=60 is too short: the headers alone take 74 bytes",
        ),
        ("dl_type=ip", "dl_type=ip: not a number"),
    ];
    for (spec, want) in cases {
        let msg = err(spec).to_string();
        assert!(msg.contains(want), "{spec:?}: got {msg:?}, want {want:?}");
    }
}

#[test]
fn hex_frames() {
    let want = vec![0xff, 0xff, 0x02, 0x42, 0xac, 0x11];
    for text in [
        "ff ff 02 42 ac 11",
        "ffff0242ac11",
        "FF:FF:02:42:AC:11",
        "0xffff0242ac11",
        "0xff 0xff 0x02 0x42 0xac 0x11",
        "ffff 0242\nac11\n",
        "  ff,ff,02,42,ac,11  ",
    ] {
        assert_eq!(parse_hex_frame(text).unwrap(), want, "{text:?}");
    }
    assert_eq!(
        parse_hex_frame("fff"),
        Err(FlowError::OddHexDigits("fff".into()))
    );
    assert_eq!(
        parse_hex_frame("ff f ff"),
        Err(FlowError::OddHexDigits("f".into()))
    );
    assert_eq!(
        parse_hex_frame("ff zz"),
        Err(FlowError::BadHexChar { ch: 'z', offset: 3 })
    );
    assert_eq!(
        parse_hex_frame("0xfg"),
        Err(FlowError::BadHexChar { ch: 'g', offset: 3 })
    );
    assert_eq!(
        parse_hex_frame("ff é"),
        Err(FlowError::BadHexChar {
            ch: 'é', offset: 3
        })
    );
    assert_eq!(parse_hex_frame(""), Err(FlowError::EmptyFrame));
    assert_eq!(parse_hex_frame(" \n: "), Err(FlowError::EmptyFrame));
    let msg = parse_hex_frame("abc").unwrap_err().to_string();
    assert!(msg.contains("odd number of hex digits in `abc`"), "{msg}");
    // A built frame survives a round trip through hex.
    let f = frame("udp,tp_dst=53");
    let hex: Vec<String> = f.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(parse_hex_frame(&hex.join(" ")).unwrap(), f);
}

/// Tokens, valid and not, for specs made at random.
const TOKENS: &[&str] = &[
    "ip",
    "ipv6",
    "arp",
    "tcp",
    "udp",
    "icmp",
    "tcp6",
    "udp6",
    "icmp6",
    "in_port=p1",
    "dl_src=02:00:00:00:00:02",
    "dl_dst=ff:ff:ff:ff:ff:ff",
    "vlan=10",
    "dl_vlan=4094",
    "dl_type=0x0800",
    "dl_type=0x86dd",
    "dl_type=0x0806",
    "dl_type=0x88cc",
    "nw_src=10.0.0.1",
    "nw_dst=fd00::2",
    "ipv6_src=fd00::1",
    "nw_ttl=1",
    "nw_proto=6",
    "nw_proto=17",
    "nw_proto=58",
    "nw_proto=1",
    "nw_proto=0",
    "tp_src=1",
    "tp_dst=65535",
    "tcp_flags=rst",
    "icmp_type=0",
    "icmp_code=3",
    "arp_op=2",
    "arp_spa=10.0.0.9",
    "arp_tha=02:00:00:00:00:09",
    "len=60",
    "len=1514",
    "len=65535",
    "bogus",
    "vlan=0",
    "=",
    "len=",
];

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        if let Ok(flow) = parse_flow(&s) {
            let _ = flow.build_frame();
        }
        let _ = parse_hex_frame(&s);
    }

    #[test]
    fn spec_like_strings_never_panic(s in "[a-z_0-9=,:.x| +-]{0,60}") {
        if let Ok(flow) = parse_flow(&s) {
            prop_assert!(flow.build_frame().len() >= MIN_FRAME_LEN);
        }
        let _ = parse_hex_frame(&s);
    }

    #[test]
    fn accepted_specs_build_valid_frames(
        picks in proptest::collection::vec(proptest::sample::select(TOKENS), 1..6),
    ) {
        let spec = picks.join(",");
        if let Ok(flow) = parse_flow(&spec) {
            let f = flow.build_frame();
            prop_assert!(f.len() >= MIN_FRAME_LEN);
            if let Some(len) = flow.len {
                prop_assert_eq!(f.len(), len);
            }
            let bare_proto = matches!(
                flow.net,
                Net::Ipv4 { l4: L4::Other(_), .. } | Net::Ipv6 { l4: L4::Other(_), .. }
            );
            if bare_proto {
                // `nw_proto=N` with zero payload: only the headers up to IP need be whole.
                let p = etherparse::LaxSlicedPacket::from_ethernet(&f);
                prop_assert!(p.as_ref().is_ok_and(|p| p.net.is_some()), "{}", spec);
                if let Ok(etherparse::LaxSlicedPacket {
                    net: Some(etherparse::LaxNetSlice::Ipv4(ip)),
                    ..
                }) = &p
                {
                    prop_assert_eq!(checksum(&[ip.header().slice()]), 0);
                }
            } else {
                let p = SlicedPacket::from_ethernet(&f);
                prop_assert!(p.is_ok(), "{}: {:?}", spec, p);
                assert_checksums(&f);
            }
        }
    }
}
