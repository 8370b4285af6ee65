//! A pcap file writer with nanosecond timestamps, for `vswitchctl capture`.
//!
//! The classic libpcap format (draft-ietf-opsawg-pcap § 4 and § 5): a 24-byte file header, then
//! per packet a 16-byte record header and the captured bytes.
//!
//! ```text
//! file header:   magic 0xa1b23c4d (ns) | version 2.4 | thiszone 0 | sigfigs 0 | snaplen | linktype 1
//! record header: ts_sec | ts_nsec | incl_len | orig_len
//! ```
//!
//! Fields are written little-endian; readers tell the byte order from the magic number.
//! Linktype 1 is LINKTYPE_ETHERNET: each record holds an Ethernet frame without its FCS.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Magic number of a pcap file whose timestamps are in nanoseconds.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Format version written: 2.4.
pub const VERSION: (u16, u16) = (2, 4);
/// Most bytes kept of one frame (what tcpdump uses by default); longer frames are cut.
pub const SNAPLEN: u32 = 262_144;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Length of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Length of each record header.
pub const RECORD_HEADER_LEN: usize = 16;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Writes Ethernet frames to a pcap stream with nanosecond timestamps.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    packets: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header and returns a writer ready for packets.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut h = [0u8; FILE_HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
        h[4..6].copy_from_slice(&VERSION.0.to_le_bytes());
        h[6..8].copy_from_slice(&VERSION.1.to_le_bytes());
        // 8..12 thiszone (GMT offset) and 12..16 sigfigs stay zero.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, packets: 0 })
    }

    /// Writes one frame captured at `ts_ns` (nanoseconds since the Unix epoch) that was
    /// `orig_len` bytes long on the wire; at most [`SNAPLEN`] bytes of it are kept.
    pub fn write_packet(&mut self, ts_ns: u64, frame: &[u8], orig_len: usize) -> io::Result<()> {
        let kept = &frame[..frame.len().min(SNAPLEN as usize)];
        // The wire length is never less than what was captured.
        let orig_len = orig_len.max(frame.len());
        let mut h = [0u8; RECORD_HEADER_LEN];
        // Seconds fit 32 bits until 2106; past that they saturate rather than wrap.
        let secs = u32::try_from(ts_ns / NANOS_PER_SEC).unwrap_or(u32::MAX);
        let nanos = (ts_ns % NANOS_PER_SEC) as u32;
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&nanos.to_le_bytes());
        h[8..12].copy_from_slice(&(kept.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&u32::try_from(orig_len).unwrap_or(u32::MAX).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(kept)?;
        self.packets += 1;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Number of packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Gives back the underlying writer (not flushed: call [`PcapWriter::flush`] first).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Nanoseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::flow::parse_flow;
    use std::process::Command;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    /// Three frames of different protocols and lengths, built from flow specs.
    fn frames() -> Vec<Vec<u8>> {
        [
            "dl_src=02:42:ac:11:00:02,dl_dst=02:42:ac:11:00:03,tcp,nw_src=172.17.0.2,\
             nw_dst=172.17.0.3,tp_src=40000,tp_dst=80",
            "dl_src=02:00:00:00:00:0a,arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.2",
            "dl_src=02:00:00:00:00:0b,dl_dst=02:00:00:00:00:0c,vlan=10,udp6,\
             ipv6_src=fd00::1,ipv6_dst=fd00::2,tp_src=5353,tp_dst=53,len=1514",
        ]
        .iter()
        .map(|s| parse_flow(s).unwrap().build_frame())
        .collect()
    }

    #[test]
    fn bytes_read_back_by_hand() {
        let frames = frames();
        let ts = [
            1_700_000_000_123_456_789u64,
            1_700_000_001_000_000_000,
            1_700_000_002_999_999_999,
        ];
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for (t, f) in ts.iter().zip(&frames) {
            w.write_packet(*t, f, f.len()).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.packets(), 3);
        let b = w.into_inner();

        // The file header.
        assert_eq!(u32_at(&b, 0), 0xa1b2_3c4d);
        assert_eq!(&b[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!((u16_at(&b, 4), u16_at(&b, 6)), (2, 4));
        assert_eq!((u32_at(&b, 8), u32_at(&b, 12)), (0, 0));
        assert_eq!(u32_at(&b, 16), 262_144);
        assert_eq!(u32_at(&b, 20), 1);

        // The records, one after another, and nothing after them.
        let mut at = FILE_HEADER_LEN;
        for (t, f) in ts.iter().zip(&frames) {
            assert_eq!(u32_at(&b, at) as u64, t / 1_000_000_000);
            assert_eq!(u32_at(&b, at + 4) as u64, t % 1_000_000_000);
            assert_eq!(u32_at(&b, at + 8) as usize, f.len());
            assert_eq!(u32_at(&b, at + 12) as usize, f.len());
            at += RECORD_HEADER_LEN;
            assert_eq!(&b[at..at + f.len()], &f[..]);
            at += f.len();
        }
        assert_eq!(at, b.len());
        assert_eq!(
            frames.iter().map(Vec::len).collect::<Vec<_>>(),
            [60, 60, 1514]
        );
    }

    #[test]
    fn long_frames_are_cut_to_snaplen_and_lengths_stay_consistent() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let big = vec![0xaa; SNAPLEN as usize + 100];
        w.write_packet(0, &big, big.len()).unwrap();
        // A caller that says the frame was shorter than what it handed over.
        w.write_packet(u64::MAX, &[1, 2, 3], 1).unwrap();
        let b = w.into_inner();
        let at = FILE_HEADER_LEN;
        assert_eq!(u32_at(&b, at + 8), SNAPLEN);
        assert_eq!(u32_at(&b, at + 12) as usize, big.len());
        let at = at + RECORD_HEADER_LEN + SNAPLEN as usize;
        assert_eq!(u32_at(&b, at), u32::MAX);
        assert_eq!(u32_at(&b, at + 4), 709_551_615);
        assert_eq!((u32_at(&b, at + 8), u32_at(&b, at + 12)), (3, 3));
        assert_eq!(b.len(), at + RECORD_HEADER_LEN + 3);
    }

    #[test]
    fn orig_len_may_exceed_the_captured_bytes() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_packet(5, &[0u8; 60], 1514).unwrap();
        let b = w.into_inner();
        assert_eq!(u32_at(&b, FILE_HEADER_LEN + 8), 60);
        assert_eq!(u32_at(&b, FILE_HEADER_LEN + 12), 1514);
    }

    #[test]
    fn write_errors_are_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::Error::other("disk full"))
            }
        }
        assert!(PcapWriter::new(Broken).is_err());
    }

    #[test]
    fn clock_is_after_2020() {
        assert!(unix_nanos_now() > 1_577_836_800 * NANOS_PER_SEC);
    }

    #[test]
    fn tshark_reads_the_file() {
        let has_tshark = Command::new("which")
            .arg("tshark")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !has_tshark {
            eprintln!("note: tshark not installed, skipping the tshark part of the pcap test");
            return;
        }
        let frames = frames();
        let path = std::env::temp_dir().join(format!(
            "vswitch-pcap-test-{}-{}.pcap",
            std::process::id(),
            unix_nanos_now()
        ));
        {
            let file = std::fs::File::create(&path).unwrap();
            let mut w = PcapWriter::new(io::BufWriter::new(file)).unwrap();
            for f in &frames {
                w.write_packet(unix_nanos_now(), f, f.len()).unwrap();
            }
            w.flush().unwrap();
        }
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(["-T", "fields", "-e", "frame.len", "-e", "eth.src"])
            .args(["-e", "_ws.malformed", "-e", "_ws.expert.severity"])
            .args([
                "-o",
                "tcp.check_checksum:TRUE",
                "-o",
                "udp.check_checksum:TRUE",
            ])
            .args(["-o", "ip.check_checksum:TRUE"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        let want = [
            ("60", "02:42:ac:11:00:02"),
            ("60", "02:00:00:00:00:0a"),
            ("1514", "02:00:00:00:00:0b"),
        ];
        for (line, (len, src)) in lines.iter().zip(want) {
            assert_eq!(line.first(), Some(&len), "{stdout}");
            assert_eq!(line.get(1), Some(&src), "{stdout}");
            // No malformed packet and no expert warning or error (bad checksums are errors).
            assert_eq!(line.get(2).copied().unwrap_or(""), "", "{stdout}");
            let severities = line.get(3).copied().unwrap_or("");
            assert!(
                severities
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .all(|s| s.parse::<u32>().is_ok_and(|v| v < 0x0060_0000)),
                "expert info at warning level or above: {stdout}"
            );
        }
    }
}
