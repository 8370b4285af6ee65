//! Frames given as hex text (`vswitchctl trace --frame`), the other way to name a frame to trace.

use super::FlowError;

/// Reads a frame written in hex: `ff ff ff …`, `ffffff…`, `ff:ff:…`, with `0x` prefixes and
/// newlines allowed.
pub fn parse_hex_frame(text: &str) -> Result<Vec<u8>, FlowError> {
    let mut out = Vec::new();
    let is_sep = |c: char| c.is_whitespace() || c == ':' || c == ',';
    let mut rest = text;
    let mut offset = 0;
    while !rest.is_empty() {
        // Skip separators, then take one token.
        let skip = rest.len() - rest.trim_start_matches(is_sep).len();
        offset += skip;
        rest = &rest[skip..];
        let end = rest.find(is_sep).unwrap_or(rest.len());
        let token = &rest[..end];
        let (digits, digits_at) = match token
            .strip_prefix("0x")
            .or_else(|| token.strip_prefix("0X"))
        {
            Some(d) => (d, offset + 2),
            None => (token, offset),
        };
        if let Some((i, ch)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(FlowError::BadHexChar {
                ch,
                offset: digits_at + i,
            });
        }
        if digits.len() % 2 != 0 {
            return Err(FlowError::OddHexDigits(token.to_string()));
        }
        // All ASCII hex digits from here: two of them make a byte.
        for pair in digits.as_bytes().chunks(2) {
            let hi = (pair[0] as char).to_digit(16).unwrap_or(0);
            let lo = (pair[1] as char).to_digit(16).unwrap_or(0);
            out.push((hi * 16 + lo) as u8);
        }
        offset += end;
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err(FlowError::EmptyFrame);
    }
    Ok(out)
}
