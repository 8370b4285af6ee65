//! The query path: one DNS message in, and either an answer (local names, or an error code),
//! a query to forward upstream, or a counted drop. Sans-IO: bytes in, bytes out.
//!
//! The common query (one question for a name, class IN, at most an OPT record) is read in
//! place ([`FastQuestion`]) and its answer written straight into the output buffer: no
//! allocation. Anything else is decoded in full with `hickory-proto` (and answered the same;
//! a test compares both paths). What is answered here:
//! - `A` for names in the table visible to the asking sandbox (round robin), `AAAA` (and any
//!   other type) for such names with no records (NOERROR/NODATA, RFC 2308 § 2.2), `PTR` for the
//!   addresses the table holds;
//! - NXDOMAIN for a name of ours on a network the asker does not share;
//! - FORMERR for a message that does not parse or does not hold exactly one question
//!   (RFC 1035 § 4.1.1), NOTIMP for opcodes other than QUERY, REFUSED for classes other than IN
//!   and for zone transfers, BADVERS for EDNS versions above 0 (RFC 6891 § 6.1.3).
//!
//! Anything shorter than a header, or a response sent to us as a query, is dropped (answering
//! it could start a loop between two servers) and counted.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::ProtoError;

use super::cache::CacheKey;
use super::table::{Lookup, NameTable, TableView};
use super::Counters;

/// The size of a DNS header (RFC 1035 § 4.1.1).
pub const HEADER_LEN: usize = 12;

/// The UDP payload size every client may use without EDNS (RFC 1035 § 4.2.1).
pub const CLASSIC_UDP_LIMIT: u16 = 512;

/// The EDNS UDP payload size we advertise (the DNS flag day 2020 value).
pub const OUR_EDNS_PAYLOAD: u16 = 1232;

/// The TTL of local answers: 0, so that a change is seen by the next lookup (as dnsmasq's
/// default `local-ttl`).
pub const LOCAL_TTL: u32 = 0;

/// At most this many additional records in a query (an OPT and a TSIG are plenty).
const MAX_ADDITIONALS: u16 = 4;

/// How the query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram: the answer must fit the client's payload size, else it is truncated.
    Udp,
    /// A TCP stream (RFC 7766): no size limit below 65535.
    Tcp,
}

/// What to do with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // Returned by value and matched at once: no copies kept.
pub enum Decision {
    /// The answer is in the output buffer.
    Answer,
    /// Not ours: forward the query as it came (with an id of the forwarder's choosing).
    Forward(ForwardQuery),
    /// Nothing to send; counted as dropped.
    Drop,
}

/// What the forwarder needs to know about a query it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardQuery {
    /// The client's message id, put back into the upstream's answer.
    pub id: u16,
    /// The end of the question section: bytes `12..question_end` must come back unchanged in
    /// the upstream's answer (RFC 5452 § 9.1 matching).
    pub question_end: usize,
    /// The largest UDP answer the client takes (512, or its EDNS payload size).
    pub udp_limit: u16,
    /// The key of its answer in the forward cache.
    pub key: CacheKey,
}

/// Answers queries from the name table; one per thread (it keeps scratch space).
#[derive(Debug)]
pub struct Resolver {
    table: Arc<NameTable>,
    /// The snapshot of the table answers come from, refreshed per query (one atomic load).
    view: TableView,
    counters: Arc<Counters>,
    addrs: Vec<Ipv4Addr>,
    ptr_target: Vec<u8>,
    /// Whether common queries skip the full decode ([`FastQuestion`]); off only in tests
    /// that compare both paths.
    fast_path: bool,
}

impl Resolver {
    /// A resolver over `table`, counting into `counters`.
    pub fn new(table: Arc<NameTable>, counters: Arc<Counters>) -> Resolver {
        Resolver {
            view: table.view(),
            table,
            counters,
            addrs: Vec::with_capacity(8),
            ptr_target: Vec::with_capacity(64),
            fast_path: true,
        }
    }

    /// Handles one query `msg` from sandbox `asker`, writing an answer (if any) into `out`.
    pub fn resolve(
        &mut self,
        asker: &str,
        msg: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        Counters::bump(&self.counters.queries);
        out.clear();
        let mut decoder = BinDecoder::new(msg);
        let header = match Header::read(&mut decoder) {
            Ok(header) => header,
            Err(_) => return self.drop_malformed(),
        };
        let meta = header.metadata;
        if meta.message_type == MessageType::Response {
            return self.drop_malformed();
        }
        let id = meta.id;
        if meta.op_code != OpCode::Query {
            return self.error(id, meta.op_code, ResponseCode::NotImp, None, None, out);
        }
        let counts = header.counts;
        if counts.queries != 1
            || counts.answers != 0
            || counts.authorities != 0
            || counts.additionals > MAX_ADDITIONALS
        {
            return self.error(id, meta.op_code, ResponseCode::FormErr, None, None, out);
        }
        if self.fast_path {
            if let Some(question) = FastQuestion::parse(msg, counts.additionals) {
                return self.resolve_fast(asker, msg, header, &question, transport, out);
            }
        }
        let query = match Query::read(&mut decoder) {
            Ok(query) => query,
            Err(_) => return self.error(id, meta.op_code, ResponseCode::FormErr, None, None, out),
        };
        let question_end = decoder.index();
        let edns = match Message::read_records(
            &mut decoder,
            usize::from(counts.additionals),
            true,
            meta.op_code,
        ) {
            Ok((_, edns, _)) => edns,
            Err(_) => return self.error(id, meta.op_code, ResponseCode::FormErr, None, None, out),
        };
        if !decoder.is_empty() {
            // Trailing bytes after the last record.
            return self.error(id, meta.op_code, ResponseCode::FormErr, None, None, out);
        }
        if edns.as_ref().is_some_and(|e| e.version() > 0) {
            return self.error(
                id,
                meta.op_code,
                ResponseCode::BADVERS,
                Some(&query),
                edns.as_ref(),
                out,
            );
        }
        if query.query_class() != DNSClass::IN
            || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
        {
            return self.error(
                id,
                meta.op_code,
                ResponseCode::Refused,
                Some(&query),
                edns.as_ref(),
                out,
            );
        }
        let udp_limit = match (&edns, transport) {
            (_, Transport::Tcp) => u16::MAX,
            (Some(e), Transport::Udp) => e.max_payload().max(CLASSIC_UDP_LIMIT),
            (None, Transport::Udp) => CLASSIC_UDP_LIMIT,
        };

        self.table.refresh(&mut self.view);
        let local = match query.query_type() {
            RecordType::PTR => self.ptr(asker, query.name()),
            qtype => self.forward_name(asker, query.name(), qtype),
        };
        let reply = Reply {
            header,
            question: &msg[HEADER_LEN..question_end],
            edns: edns.is_some(),
            udp_limit,
        };
        self.conclude(
            local,
            reply,
            || ForwardQuery {
                id,
                question_end,
                udp_limit,
                key: CacheKey::new(&query, &header, edns.as_ref()),
            },
            out,
        )
    }

    /// The common case, read in place by [`FastQuestion::parse`]: a well-formed query of
    /// class IN for a name (not PTR, not a zone transfer), with at most an OPT record of
    /// version 0. Answers exactly as the full decode would.
    fn resolve_fast(
        &mut self,
        asker: &str,
        msg: &[u8],
        header: Header,
        question: &FastQuestion,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        let udp_limit = match (question.edns, transport) {
            (_, Transport::Tcp) => u16::MAX,
            (Some(edns), Transport::Udp) => edns.payload.max(CLASSIC_UDP_LIMIT),
            (None, Transport::Udp) => CLASSIC_UDP_LIMIT,
        };
        self.table.refresh(&mut self.view);
        let qtype = RecordType::from(question.qtype);
        let local = self.lookup_name(asker, &question.key[..question.key_len], qtype);
        let reply = Reply {
            header,
            question: &msg[HEADER_LEN..question.end],
            edns: question.edns.is_some(),
            udp_limit,
        };
        let meta = &header.metadata;
        self.conclude(
            local,
            reply,
            || ForwardQuery {
                id: meta.id,
                question_end: question.end,
                udp_limit,
                key: CacheKey::from_question(
                    &msg[HEADER_LEN..question.end],
                    question.edns.map(|e| e.dnssec_ok),
                    meta.checking_disabled,
                    meta.recursion_desired,
                ),
            },
            out,
        )
    }

    /// What becomes of a name looked up locally: forwarded (`forward` builds the query to
    /// send on), or answered with NXDOMAIN, its addresses, its PTR target or no record.
    fn conclude(
        &self,
        local: Local,
        reply: Reply<'_>,
        forward: impl FnOnce() -> ForwardQuery,
        out: &mut Vec<u8>,
    ) -> Decision {
        let code = match local {
            Local::Forward => return Decision::Forward(forward()),
            Local::NxDomain => {
                Counters::bump(&self.counters.nxdomain);
                ResponseCode::NXDomain
            }
            Local::Addrs | Local::NoData | Local::Ptr => {
                Counters::bump(&self.counters.answered_locally);
                ResponseCode::NoError
            }
        };
        let answers = match local {
            Local::Addrs => Answers::A(&self.addrs),
            Local::Ptr => Answers::Ptr(&self.ptr_target),
            _ => Answers::None,
        };
        if reply.emit(code, answers, out) {
            Decision::Answer
        } else {
            Decision::Drop
        }
    }

    /// The local answer for a name query of any type but PTR (addresses in `self.addrs`).
    fn forward_name(&mut self, asker: &str, name: &Name, qtype: RecordType) -> Local {
        let mut buf = [0u8; 256];
        let Some(len) = name_key(name, &mut buf) else {
            return Local::Forward;
        };
        self.lookup_name(asker, &buf[..len], qtype)
    }

    /// The local answer for name `key` (see [`name_key`]) and a type other than PTR.
    fn lookup_name(&mut self, asker: &str, key: &[u8], qtype: RecordType) -> Local {
        match self.table.lookup_a(&self.view, asker, key, &mut self.addrs) {
            Lookup::Unknown => Local::Forward,
            Lookup::Hidden => Local::NxDomain,
            Lookup::Found(()) if matches!(qtype, RecordType::A | RecordType::ANY) => Local::Addrs,
            // AAAA until IPv6 exists, and every other type: the name exists, no data.
            Lookup::Found(()) => Local::NoData,
        }
    }

    /// The local answer for a PTR query (the target, in wire form, in `self.ptr_target`).
    fn ptr(&mut self, asker: &str, name: &Name) -> Local {
        let addr = match name.parse_arpa_name() {
            Ok(net) if net.prefix_len() == 32 => match net.addr() {
                IpAddr::V4(addr) => addr,
                IpAddr::V6(_) => return Local::Forward,
            },
            _ => return Local::Forward,
        };
        match self.view.lookup_ptr(asker, addr) {
            Lookup::Unknown => Local::Forward,
            Lookup::Hidden => Local::NxDomain,
            Lookup::Found(target) => {
                // RFC 1035 § 3.1: each label after its length, then the root's zero length.
                self.ptr_target.clear();
                for label in target.split('.') {
                    let Ok(len) = u8::try_from(label.len()) else {
                        return Local::NoData;
                    };
                    self.ptr_target.push(len);
                    self.ptr_target.extend_from_slice(label.as_bytes());
                }
                self.ptr_target.push(0);
                Local::Ptr
            }
        }
    }

    /// Counts and drops a message that cannot be answered.
    fn drop_malformed(&self) -> Decision {
        Counters::bump(&self.counters.dropped_malformed);
        Decision::Drop
    }

    /// Writes an error answer (with the question when it was read).
    fn error(
        &self,
        id: u16,
        op_code: OpCode,
        code: ResponseCode,
        query: Option<&Query>,
        edns: Option<&Edns>,
        out: &mut Vec<u8>,
    ) -> Decision {
        Counters::bump(&self.counters.rejected);
        let mut msg = Message::error_msg(id, op_code, code);
        if let Some(query) = query {
            msg.add_query(query.clone());
        }
        if edns.is_some() || code == ResponseCode::BADVERS {
            msg.set_edns(our_edns());
        }
        if encode(&msg, out) {
            Decision::Answer
        } else {
            Decision::Drop
        }
    }
}

/// A local result before it is written.
enum Local {
    /// The addresses in `Resolver::addrs`.
    Addrs,
    /// The name exists, no record of the asked type (RFC 2308 § 2.2).
    NoData,
    /// The PTR target in `Resolver::ptr_target`.
    Ptr,
    NxDomain,
    Forward,
}

/// The records of a local answer.
enum Answers<'a> {
    None,
    A(&'a [Ipv4Addr]),
    /// A PTR target in wire form.
    Ptr(&'a [u8]),
}

impl Answers<'_> {
    /// How many records, and their size on the wire.
    fn size(&self) -> (u16, usize) {
        match self {
            Answers::None => (0, 0),
            Answers::A(addrs) => (
                u16::try_from(addrs.len()).unwrap_or(u16::MAX),
                addrs.len() * (RR_FIXED_LEN + 4),
            ),
            Answers::Ptr(target) => (1, RR_FIXED_LEN + target.len()),
        }
    }
}

/// An answer record's owner (a compression pointer), type, class, TTL and RDLENGTH
/// (RFC 1035 § 4.1.3).
const RR_FIXED_LEN: usize = 2 + 2 + 2 + 4 + 2;

/// An OPT record without options (RFC 6891 § 6.1.2): root owner, type, class, TTL, RDLENGTH.
const OPT_LEN: usize = 1 + 2 + 2 + 4 + 2;

/// A compression pointer to the question's name, at offset 12 (RFC 1035 § 4.1.4).
const POINTER_TO_QNAME: u16 = 0xc000 | HEADER_LEN as u16;

/// How to write a local answer: written straight into the output buffer, the question copied
/// from the query as it came (its case too, RFC 4343 § 4.1), each owner name a pointer to it.
struct Reply<'a> {
    /// The query's header.
    header: Header,
    /// The query's question section, as received.
    question: &'a [u8],
    edns: bool,
    udp_limit: u16,
}

impl Reply<'_> {
    /// Writes the answer into `out`; if it exceeds the client's UDP limit, writes it without
    /// records and with TC set (RFC 1035 § 4.2.1, RFC 2181 § 9), so the client asks again over
    /// TCP. False if it could not be written.
    fn emit(&self, code: ResponseCode, answers: Answers<'_>, out: &mut Vec<u8>) -> bool {
        let (count, size) = answers.size();
        let opt = if self.edns { OPT_LEN } else { 0 };
        let fits = HEADER_LEN + self.question.len() + size + opt <= usize::from(self.udp_limit);
        let mut header = self.header;
        let meta = &mut header.metadata;
        meta.message_type = MessageType::Response;
        meta.authoritative = true;
        meta.truncation = !fits;
        meta.recursion_available = true;
        meta.authentic_data = false;
        meta.checking_disabled = false;
        meta.response_code = code;
        header.counts.queries = 1;
        header.counts.answers = if fits { count } else { 0 };
        header.counts.authorities = 0;
        header.counts.additionals = u16::from(self.edns);
        out.clear();
        let mut encoder = BinEncoder::new(out);
        let written = (|| -> Result<(), ProtoError> {
            header.emit(&mut encoder)?;
            encoder.emit_vec(self.question)?;
            if fits {
                match answers {
                    Answers::None => {}
                    Answers::A(addrs) => {
                        for addr in addrs {
                            emit_rr_fixed(&mut encoder, RecordType::A, 4)?;
                            encoder.emit_vec(&addr.octets())?;
                        }
                    }
                    Answers::Ptr(target) => {
                        let len = u16::try_from(target.len()).unwrap_or(u16::MAX);
                        emit_rr_fixed(&mut encoder, RecordType::PTR, len)?;
                        encoder.emit_vec(target)?;
                    }
                }
            }
            if self.edns {
                // RFC 6891 § 6.1.2/6.1.3: root owner, our UDP payload size as the class, then
                // extended RCODE 0, version 0, no flags, no options.
                encoder.emit(0)?;
                encoder.emit_u16(u16::from(RecordType::OPT))?;
                encoder.emit_u16(OUR_EDNS_PAYLOAD)?;
                encoder.emit_u32(0)?;
                encoder.emit_u16(0)?;
            }
            Ok(())
        })();
        if written.is_err() {
            out.clear();
            return false;
        }
        true
    }
}

/// Writes an answer record's fixed part: owner (pointer to the question's name), type, class
/// IN, TTL [`LOCAL_TTL`] and RDLENGTH `rdlen` (RFC 1035 § 4.1.3).
fn emit_rr_fixed(
    encoder: &mut BinEncoder<'_>,
    rtype: RecordType,
    rdlen: u16,
) -> Result<(), ProtoError> {
    encoder.emit_u16(POINTER_TO_QNAME)?;
    encoder.emit_u16(u16::from(rtype))?;
    encoder.emit_u16(u16::from(DNSClass::IN))?;
    encoder.emit_u32(LOCAL_TTL)?;
    encoder.emit_u16(rdlen)
}

/// The OPT record we put in answers to EDNS queries (RFC 6891 § 6.1.1).
fn our_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(OUR_EDNS_PAYLOAD);
    edns
}

/// Encodes `msg` into `out` (cleared first); false if it could not be encoded.
fn encode(msg: &Message, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    if msg.emit(&mut encoder).is_ok() {
        return true;
    }
    out.clear();
    false
}

/// Writes the lower-case key of `name` (labels joined by `.`, no trailing dot) into `buf`;
/// `None` for the root, a label holding a `.`, or a name too long for the table.
fn name_key(name: &Name, buf: &mut [u8; 256]) -> Option<usize> {
    let mut len = 0;
    for label in name.iter() {
        if label.contains(&b'.') {
            return None;
        }
        let sep = usize::from(len > 0);
        if len + sep + label.len() > super::table::MAX_NAME_LEN {
            return None;
        }
        if sep == 1 {
            buf[len] = b'.';
            len += 1;
        }
        for (dst, src) in buf[len..len + label.len()].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        len += label.len();
    }
    (len > 0).then_some(len)
}

/// What [`FastQuestion::parse`] read of an OPT record (RFC 6891 § 6.1.2-6.1.3).
#[derive(Debug, Clone, Copy)]
struct FastEdns {
    /// The requestor's UDP payload size (the CLASS field).
    payload: u16,
    /// The DO bit (RFC 3225).
    dnssec_ok: bool,
}

/// A query's question, read without building a `Message` (the common case of the hot path).
#[derive(Debug)]
struct FastQuestion {
    /// The table key of the name (lower case, labels joined by `.`), its first `key_len` bytes.
    key: [u8; 256],
    key_len: usize,
    qtype: u16,
    /// The end of the question section.
    end: usize,
    edns: Option<FastEdns>,
}

impl FastQuestion {
    /// Reads `msg` (whose header the caller checked: a query, one question, nothing else but
    /// at most `additionals`) with hickory's decoder if it has the common shape: a name
    /// written out in full (no compression pointer, no `.` inside a label; RFC 1035 § 3.1,
    /// § 4.1.2), class IN, a type other than PTR, AXFR and IXFR, then nothing or exactly one
    /// OPT record of version 0 (RFC 6891 § 6.1.2), and no trailing bytes. `None` for anything
    /// else: the full decode handles it (and its errors). What it skips is the building of a
    /// `Message`: its vectors of queries and records.
    fn parse(msg: &[u8], additionals: u16) -> Option<FastQuestion> {
        let mut decoder = BinDecoder::new(msg);
        decoder.read_slice(HEADER_LEN).ok()?;
        let name = Name::read(&mut decoder).ok()?;
        // Each label's length byte and bytes, then the root's: a pointer would read fewer, and
        // the question's bytes, which answers and cache keys copy, would not stand alone.
        let written: usize = name.iter().map(|label| label.len() + 1).sum::<usize>() + 1;
        if decoder.index() != HEADER_LEN + written {
            return None;
        }
        let mut question = FastQuestion {
            key: [0; 256],
            key_len: 0,
            qtype: 0,
            end: 0,
            edns: None,
        };
        question.key_len = name_key(&name, &mut question.key)?;
        question.qtype = decoder.read_u16().ok()?.unverified();
        let qclass = decoder.read_u16().ok()?.unverified();
        let excluded = [RecordType::PTR, RecordType::AXFR, RecordType::IXFR];
        if qclass != u16::from(DNSClass::IN) || excluded.contains(&RecordType::from(question.qtype))
        {
            return None;
        }
        question.end = decoder.index();
        match additionals {
            0 => {}
            1 => {
                let record = Record::read(&mut decoder).ok()?;
                if record.record_type() != RecordType::OPT || !record.name.is_root() {
                    return None;
                }
                let edns = Edns::from(&record);
                if edns.version() != 0 {
                    return None;
                }
                question.edns = Some(FastEdns {
                    payload: edns.max_payload(),
                    dnssec_ok: edns.flags().dnssec_ok,
                });
            }
            _ => return None,
        }
        decoder.is_empty().then_some(question)
    }
}

/// Builds the answer to send when forwarding failed: SERVFAIL for the query `msg`, with its
/// question when it parses (RFC 1035 § 4.1.1); false if `msg` has no header.
pub fn servfail(msg: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut decoder = BinDecoder::new(msg);
    let Ok(header) = Header::read(&mut decoder) else {
        return false;
    };
    let mut answer = Message::error_msg(header.metadata.id, OpCode::Query, ResponseCode::ServFail);
    answer.metadata.recursion_desired = header.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    if header.counts.queries == 1 {
        if let Ok(query) = Query::read(&mut decoder) {
            answer.add_query(query);
        }
    }
    encode(&answer, out)
}

/// Checks that `answer` is a response to the forwarded query `query` (same question bytes,
/// QR set) and puts the client's id `client_id` into it (RFC 5452 § 9.1).
pub fn accept_upstream_answer(
    query: &[u8],
    fwd: &ForwardQuery,
    answer: &mut [u8],
    client_id: u16,
) -> bool {
    let q = fwd.question_end;
    if answer.len() < q.max(HEADER_LEN) || query.len() < q {
        return false;
    }
    let is_response = answer[2] & 0x80 != 0;
    let one_question = answer[4..6] == [0, 1];
    if !is_response || !one_question || answer[HEADER_LEN..q] != query[HEADER_LEN..q] {
        return false;
    }
    answer[..2].copy_from_slice(&client_id.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::PTR;
    use hickory_proto::rr::RData;
    use std::str::FromStr;

    fn setup() -> Resolver {
        let table = Arc::new(NameTable::new());
        table
            .add_endpoint("front", "web", Ipv4Addr::new(10, 1, 0, 2), &["www".into()])
            .unwrap();
        table
            .add_endpoint("front", "web2", Ipv4Addr::new(10, 1, 0, 4), &["www".into()])
            .unwrap();
        table
            .add_endpoint("front", "client", Ipv4Addr::new(10, 1, 0, 3), &[])
            .unwrap();
        table
            .add_endpoint("back", "db", Ipv4Addr::new(10, 2, 0, 2), &[])
            .unwrap();
        Resolver::new(table, Arc::new(Counters::default()))
    }

    fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut msg = Message::new(0x1234, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        msg.to_vec().unwrap()
    }

    fn ask(r: &mut Resolver, name: &str, qtype: RecordType) -> (Decision, Option<Message>) {
        let mut out = Vec::new();
        let d = r.resolve(
            "client",
            &query_bytes(name, qtype),
            Transport::Udp,
            &mut out,
        );
        let msg = (d == Decision::Answer).then(|| Message::from_vec(&out).unwrap());
        (d, msg)
    }

    fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
        msg.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn local_names_are_answered_case_insensitively() {
        let mut r = setup();
        for name in ["web", "WEB.", "Web"] {
            let (d, msg) = ask(&mut r, name, RecordType::A);
            assert_eq!(d, Decision::Answer, "{name}");
            let msg = msg.unwrap();
            assert_eq!(msg.metadata.id, 0x1234);
            assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
            assert!(msg.metadata.recursion_desired && msg.metadata.authoritative);
            assert_eq!(a_records(&msg), vec![Ipv4Addr::new(10, 1, 0, 2)]);
            assert_eq!(
                msg.queries[0].name().to_ascii().to_ascii_lowercase(),
                "web."
            );
        }
        let stats = r.counters.snapshot();
        assert_eq!((stats.queries, stats.answered_locally), (3, 3));
    }

    #[test]
    fn shared_alias_rotates() {
        let mut r = setup();
        let first = |r: &mut Resolver| a_records(&ask(r, "www", RecordType::A).1.unwrap());
        let one = first(&mut r);
        let two = first(&mut r);
        assert_eq!(one.len(), 2);
        assert_ne!(one, two, "the order rotates");
    }

    #[test]
    fn aaaa_is_empty_and_other_networks_are_nxdomain() {
        let mut r = setup();
        let msg = ask(&mut r, "web", RecordType::AAAA).1.unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert!(msg.answers.is_empty());
        let msg = ask(&mut r, "db", RecordType::A).1.unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
        let msg = ask(&mut r, "db", RecordType::AAAA).1.unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.counters.snapshot().nxdomain, 2);
    }

    #[test]
    fn ptr_for_our_addresses() {
        let mut r = setup();
        let msg = ask(&mut r, "3.0.1.10.in-addr.arpa.", RecordType::PTR)
            .1
            .unwrap();
        match &msg.answers[..] {
            [rec] => assert_eq!(
                rec.data,
                RData::PTR(PTR(Name::from_str("client.").unwrap()))
            ),
            other => panic!("expected one PTR, got {other:?}"),
        }
        let msg = ask(&mut r, "2.0.2.10.in-addr.arpa.", RecordType::PTR)
            .1
            .unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
        let (d, _) = ask(&mut r, "9.9.9.9.in-addr.arpa.", RecordType::PTR);
        assert!(matches!(d, Decision::Forward(_)));
    }

    #[test]
    fn unknown_names_are_forwarded_and_matched() {
        let mut r = setup();
        let query = query_bytes("example.com", RecordType::A);
        let mut out = Vec::new();
        let Decision::Forward(fwd) = r.resolve("client", &query, Transport::Udp, &mut out) else {
            panic!("not forwarded")
        };
        assert_eq!((fwd.id, fwd.udp_limit), (0x1234, 512));
        assert_eq!(fwd.question_end, query.len());
        // The upstream answers with its own id; the client's goes back in.
        let mut answer = Message::response(0x9999, OpCode::Query);
        answer.add_query(Query::query(
            Name::from_str("example.com").unwrap(),
            RecordType::A,
        ));
        let mut answer = answer.to_vec().unwrap();
        assert!(accept_upstream_answer(&query, &fwd, &mut answer, fwd.id));
        assert_eq!(Message::from_vec(&answer).unwrap().metadata.id, 0x1234);
        // A different question is not an answer to this query.
        let other = query_bytes("example.org", RecordType::A);
        let mut other_answer = other.clone();
        other_answer[2] |= 0x80;
        assert!(!accept_upstream_answer(
            &query,
            &fwd,
            &mut other_answer,
            fwd.id
        ));
        assert!(servfail(&query, &mut out));
        let sf = Message::from_vec(&out).unwrap();
        assert_eq!(sf.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(sf.metadata.id, 0x1234);
    }

    #[test]
    fn bad_queries_get_an_error_or_a_counted_drop() {
        let mut r = setup();
        let mut out = Vec::new();
        // Too short for a header: dropped.
        assert_eq!(
            r.resolve("client", &[0; 5], Transport::Udp, &mut out),
            Decision::Drop
        );
        // A response sent as a query: dropped.
        let mut resp = query_bytes("web", RecordType::A);
        resp[2] |= 0x80;
        assert_eq!(
            r.resolve("client", &resp, Transport::Udp, &mut out),
            Decision::Drop
        );
        assert_eq!(r.counters.snapshot().dropped_malformed, 2);

        let rcode = |r: &mut Resolver, msg: &[u8]| {
            let mut out = Vec::new();
            assert_eq!(
                r.resolve("client", msg, Transport::Udp, &mut out),
                Decision::Answer
            );
            Message::from_vec(&out).unwrap().metadata.response_code
        };
        // Truncated question.
        let q = query_bytes("web", RecordType::A);
        assert_eq!(rcode(&mut r, &q[..q.len() - 2]), ResponseCode::FormErr);
        // Two questions.
        let mut two = Message::new(1, MessageType::Query, OpCode::Query);
        two.add_query(Query::query(Name::from_str("web").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_str("db").unwrap(), RecordType::A));
        assert_eq!(rcode(&mut r, &two.to_vec().unwrap()), ResponseCode::FormErr);
        // A compression pointer to itself.
        let mut looped = q[..HEADER_LEN].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(rcode(&mut r, &looped), ResponseCode::FormErr);
        // A label longer than 63 bytes / a name longer than 255 bytes.
        let mut huge = q[..HEADER_LEN].to_vec();
        for _ in 0..5 {
            huge.push(63);
            huge.extend_from_slice(&[b'a'; 63]);
        }
        huge.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(rcode(&mut r, &huge), ResponseCode::FormErr);
        // CHAOS class.
        let mut chaos = Message::new(1, MessageType::Query, OpCode::Query);
        let mut cq = Query::query(Name::from_str("version.bind").unwrap(), RecordType::TXT);
        cq.set_query_class(DNSClass::CH);
        chaos.add_query(cq);
        assert_eq!(
            rcode(&mut r, &chaos.to_vec().unwrap()),
            ResponseCode::Refused
        );
        // Another opcode.
        let mut status = Message::new(1, MessageType::Query, OpCode::Status);
        status.add_query(Query::query(Name::from_str("web").unwrap(), RecordType::A));
        assert_eq!(
            rcode(&mut r, &status.to_vec().unwrap()),
            ResponseCode::NotImp
        );
        // Trailing garbage.
        let mut trailing = q.clone();
        trailing.push(0);
        assert_eq!(rcode(&mut r, &trailing), ResponseCode::FormErr);
    }

    #[test]
    fn edns_queries_get_edns_answers_and_tcp_has_no_limit() {
        let mut r = setup();
        let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(Name::from_str("web").unwrap(), RecordType::A));
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        msg.set_edns(edns);
        let mut out = Vec::new();
        assert_eq!(
            r.resolve("client", &msg.to_vec().unwrap(), Transport::Tcp, &mut out),
            Decision::Answer
        );
        let answer = Message::from_vec(&out).unwrap();
        assert_eq!(
            answer.edns.as_ref().map(|e| e.max_payload()),
            Some(OUR_EDNS_PAYLOAD)
        );
        assert_eq!(a_records(&answer).len(), 1);
    }

    #[test]
    fn too_many_addresses_for_udp_truncate() {
        let table = Arc::new(NameTable::new());
        for i in 0..60u8 {
            table
                .add_endpoint(
                    "n",
                    &format!("s{i}"),
                    Ipv4Addr::new(10, 0, 1, i),
                    &["many".into()],
                )
                .unwrap();
        }
        let mut r = Resolver::new(table, Arc::new(Counters::default()));
        let q = query_bytes("many", RecordType::A);
        let mut out = Vec::new();
        assert_eq!(
            r.resolve("s0", &q, Transport::Udp, &mut out),
            Decision::Answer
        );
        let udp = Message::from_vec(&out).unwrap();
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        assert!(out.len() <= 512);
        assert_eq!(
            r.resolve("s0", &q, Transport::Tcp, &mut out),
            Decision::Answer
        );
        assert_eq!(a_records(&Message::from_vec(&out).unwrap()).len(), 60);
    }

    /// Queries of many shapes: the common ones the fast path reads, and others it leaves to
    /// the full decode.
    fn query_variants() -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        let names = [
            "web",
            "WEB.",
            "wWw",
            "db",
            "client",
            "unknown.example",
            "A.b.C.example",
        ];
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::MX,
            RecordType::ANY,
            RecordType::PTR,
            RecordType::AXFR,
        ];
        for name in names {
            for qtype in types {
                for edns in [
                    None,
                    Some((4096, false)),
                    Some((100, true)),
                    Some((1232, true)),
                ] {
                    for (rd, cd) in [(true, false), (false, true)] {
                        let mut msg = Message::new(0x4242, MessageType::Query, OpCode::Query);
                        msg.metadata.recursion_desired = rd;
                        msg.metadata.checking_disabled = cd;
                        msg.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
                        if let Some((payload, dnssec_ok)) = edns {
                            let mut e = Edns::new();
                            e.set_max_payload(payload);
                            e.set_dnssec_ok(dnssec_ok);
                            msg.set_edns(e);
                        }
                        all.push(msg.to_vec().unwrap());
                    }
                }
            }
        }
        // Odd shapes: a trailing byte, cut short, EDNS version 1, a class other than IN, an
        // OPT whose options overrun it, a compression pointer as the name.
        let base = query_bytes("web", RecordType::A);
        let mut trailing = base.clone();
        trailing.push(0);
        all.push(trailing);
        all.push(base[..base.len() - 1].to_vec());
        let mut with_opt = base.clone();
        with_opt[11] = 1;
        with_opt.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 1, 0, 0, 0, 0]);
        all.push(with_opt.clone());
        let mut bad_options = base.clone();
        bad_options[11] = 1;
        bad_options.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 9]);
        all.push(bad_options);
        let mut chaos = base.clone();
        let class_at = chaos.len() - 1;
        chaos[class_at] = 3;
        all.push(chaos);
        let mut pointer = base[..HEADER_LEN].to_vec();
        pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        all.push(pointer);
        all
    }

    #[test]
    fn fast_path_answers_exactly_as_the_full_decode() {
        let (mut fast, mut full) = (setup(), setup());
        full.fast_path = false;
        let mut read_fast = 0;
        for transport in [Transport::Udp, Transport::Tcp] {
            for msg in query_variants() {
                let additionals = msg
                    .get(10..12)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                read_fast += usize::from(FastQuestion::parse(&msg, additionals).is_some());
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let da = fast.resolve("client", &msg, transport, &mut a);
                let db = full.resolve("client", &msg, transport, &mut b);
                assert_eq!(da, db, "{msg:02x?}");
                assert_eq!(a, b, "{msg:02x?}");
            }
        }
        // The common shapes took the fast path (PTR, AXFR and the odd ones did not).
        assert_eq!(read_fast, 2 * 7 * 4 * 4 * 2);
        assert_eq!(fast.counters.snapshot(), full.counters.snapshot());
    }

    #[test]
    fn the_fast_cache_key_matches_the_decoded_one() {
        let mut r = setup();
        for msg in query_variants() {
            let Decision::Forward(fwd) = r.resolve("client", &msg, Transport::Udp, &mut Vec::new())
            else {
                continue;
            };
            let decoded = Message::from_vec(&msg).unwrap();
            let header = Header::read(&mut BinDecoder::new(&msg)).unwrap();
            let key = CacheKey::new(&decoded.queries[0], &header, decoded.edns.as_ref());
            assert_eq!(fwd.key, key, "{msg:02x?}");
        }
    }
}
