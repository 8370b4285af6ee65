//! Why a flow spec or a hex frame was refused: one variant per mistake, each message naming the
//! field at fault.

/// Every field and keyword a spec may hold, for the "unknown field" message.
pub(super) const KNOWN: &str =
    "in_port, dl_src, dl_dst, vlan, dl_vlan, dl_type, ip, ipv6, arp, tcp, udp, \
                     icmp, tcp6, udp6, icmp6, nw_src, nw_dst, ipv6_src, ipv6_dst, nw_ttl, \
                     nw_proto, tp_src, tp_dst, tcp_flags, icmp_type, icmp_code, arp_op, arp_spa, \
                     arp_tpa, arp_sha, arp_tha, len";

/// Why a flow spec or a hex frame was refused; the message names the bad field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// Nothing but separators.
    #[error("empty flow spec: give fields like in_port=p1,tcp,nw_dst=10.0.0.2,tp_dst=80")]
    Empty,
    /// A key or keyword this parser does not know.
    #[error("unknown field `{0}` (known: {KNOWN})")]
    UnknownField(String),
    /// A field given twice (or under two of its names, like `vlan` and `dl_vlan`).
    #[error("duplicate field `{field}`{}", same_as(.field, .first))]
    Duplicate {
        /// The field as written the second time.
        field: String,
        /// The field as written the first time.
        first: String,
    },
    /// A `key=value` field written without its value.
    #[error("field `{0}` needs a value: {0}=…")]
    MissingValue(&'static str),
    /// A keyword written with a value.
    #[error("`{field}` is a keyword and takes no value (got `{field}={value}`)")]
    UnexpectedValue {
        /// The keyword.
        field: &'static str,
        /// The value it was given.
        value: String,
    },
    /// A value that is not a MAC address.
    #[error("{field}={value}: not a MAC address (expected six hex bytes like 02:42:ac:11:00:02)")]
    BadMac {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A value that is not an IP address (of the family the field takes).
    #[error("{field}={value}: not an {family} address")]
    BadIp {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// "IPv4", "IPv6" or "IP".
        family: &'static str,
    },
    /// An address of the other family than the flow's protocol.
    #[error("{field}={value} is an {family} address but the flow is {flow}")]
    WrongFamily {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// The address's family.
        family: &'static str,
        /// The flow's protocol.
        flow: &'static str,
    },
    /// A value that is not a number (decimal, or hex with `0x`).
    #[error("{field}={value}: not a number (decimal, or hex with 0x)")]
    BadNumber {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A number outside what the field can hold.
    #[error("{field}={value}: out of range, expected {min}-{max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A value of the right type but not one the field accepts.
    #[error("{field}={value}: expected {expected}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// Two protocols that cannot both hold, like `tcp,udp` or `arp,ip`.
    #[error("conflicting protocols: `{0}` and `{1}`")]
    Conflict(String, String),
    /// A field whose protocol the spec does not select, like `tp_dst` without `tcp` or `udp`.
    #[error("`{field}` needs {needs}")]
    MissingPrerequisite {
        /// The field.
        field: &'static str,
        /// The protocols that would allow it.
        needs: &'static str,
    },
    /// An IP field used with `arp`.
    #[error("`{field}` cannot be used with arp: use {instead}")]
    NotWithArp {
        /// The field.
        field: &'static str,
        /// The ARP field to use instead.
        instead: &'static str,
    },
    /// `len=N` smaller than the headers the spec asks for.
    #[error("len={len} is too short: the headers alone take {need} bytes")]
    LenTooShort {
        /// The length asked for.
        len: usize,
        /// The length of the headers.
        need: usize,
    },
    /// A hex token with an odd number of digits.
    #[error("odd number of hex digits in `{0}`: each byte needs two")]
    OddHexDigits(String),
    /// A character that is neither a hex digit nor a separator.
    #[error("bad character {ch:?} at offset {offset} of the hex frame")]
    BadHexChar {
        /// The character.
        ch: char,
        /// Its byte offset in the text.
        offset: usize,
    },
    /// Hex text without a single byte.
    #[error("empty frame: no hex bytes given")]
    EmptyFrame,
}

/// " (same as `vlan`)" when a field was repeated under another of its names.
fn same_as(field: &str, first: &str) -> String {
    if field == first {
        String::new()
    } else {
        format!(" (same as `{first}`)")
    }
}
