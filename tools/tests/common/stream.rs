//! A verified TCP stream for the end-to-end tests: pseudo-random bytes any position of which can
//! be regenerated, so the receiver checks every byte without keeping a copy.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Seed of the stream's bytes.
const STREAM_SEED: u64 = 0x5eed_cafe_f00d_d00d;

/// SplitMix64: one 64-bit word of the stream per index.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the stream's bytes from `offset` on.
pub fn fill_stream(offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = splitmix64(STREAM_SEED.wrapping_add(pos / 8)).to_le_bytes();
        let start = (pos % 8) as usize;
        let n = (8 - start).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[start..start + n]);
        i += n;
        pos += n as u64;
    }
}

/// Reads the stream to EOF, checking every byte; answers the count to the sender and returns
/// it, or says where the first byte differed.
pub fn receive_and_verify(mut s: TcpStream, timeout: Duration) -> Result<u64, String> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut got = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; got.len()];
    let mut total = 0u64;
    loop {
        let n = s
            .read(&mut got)
            .map_err(|e| format!("read after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        fill_stream(total, &mut want[..n]);
        if let Some(k) = (0..n).find(|&k| got[k] != want[k]) {
            return Err(format!(
                "byte {} differs: got {:#04x}, want {:#04x}",
                total + k as u64,
                got[k],
                want[k]
            ));
        }
        total += n as u64;
    }
    // Tell the sender how much arrived intact.
    s.write_all(&total.to_be_bytes())
        .map_err(|e| format!("answer: {e}"))?;
    Ok(total)
}

/// Sends `len` bytes of the stream, half-closes, and reads the receiver's byte count.
pub fn send_stream(mut s: TcpStream, len: u64, timeout: Duration) -> Result<u64, String> {
    s.set_write_timeout(Some(timeout)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(buf.len() as u64) as usize;
        fill_stream(sent, &mut buf[..n]);
        s.write_all(&buf[..n])
            .map_err(|e| format!("send after {sent} bytes: {e}"))?;
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)
        .map_err(|e| format!("reading the receiver's byte count: {e}"))?;
    Ok(u64::from_be_bytes(count))
}
