//! A small synchronous client of etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`, `/v3/watch`).
//!
//! The gateway is etcd's own grpc-gateway over the gRPC API (etcd docs, "gRPC gateway"): every
//! call is an HTTP `POST` of the protobuf message in its JSON form, keys and values base64,
//! 64-bit integers as decimal strings, fields at their default value left out. A watch answers
//! with one JSON object per line for as long as the connection stays open.
//!
//! Every call has a deadline; a transport failure moves on to the next configured endpoint, so a
//! dead etcd member costs one timeout, not a hang.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::error::ClusterError;

/// The upper bound on one answer's size (a full re-read of a large cluster).
const MAX_BODY: u64 = 1 << 30;

/// A key-value pair as etcd stores it (`mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key, as text (every key vswitch writes is UTF-8).
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The revision that created the key (0: absent).
    pub create_revision: i64,
    /// The revision of the last change.
    pub mod_revision: i64,
    /// How many times the key was written since it was created.
    pub version: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// Keys and the store revision they were read at.
#[derive(Debug, Clone, Default)]
pub struct RangeResult {
    /// The store's revision when the range was read.
    pub revision: i64,
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
}

/// One condition of a transaction (`etcdserverpb.Compare`).
#[derive(Debug, Clone)]
pub struct Compare(Value);

impl Compare {
    /// True when `key` does not exist (its create revision is 0).
    pub fn absent(key: &str) -> Compare {
        Compare(
            json!({"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}),
        )
    }

    /// True when `key` exists.
    pub fn present(key: &str) -> Compare {
        Compare(
            json!({"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}),
        )
    }

    /// True when `key` was last changed at `revision` (0: the key is absent).
    pub fn mod_revision(key: &str, revision: i64) -> Compare {
        Compare(json!({"key": b64(key), "target": "MOD", "result": "EQUAL",
            "mod_revision": revision.to_string()}))
    }

    /// True when no key starts with `prefix` (a range compare: etcd ≥ 3.3 compares every key in
    /// the range, and an empty range against a zero key).
    pub fn prefix_empty(prefix: &str) -> Compare {
        Compare(
            json!({"key": b64(prefix), "range_end": B64.encode(prefix_end(prefix)),
            "target": "VERSION", "result": "EQUAL", "version": "0"}),
        )
    }
}

/// One operation inside a transaction (`etcdserverpb.RequestOp`).
#[derive(Debug, Clone)]
pub struct TxnOp(Value);

impl TxnOp {
    /// Writes `value` at `key`, attached to `lease` when it is not 0.
    pub fn put(key: &str, value: &[u8], lease: i64) -> TxnOp {
        let mut put = json!({"key": b64(key), "value": B64.encode(value)});
        if lease != 0 {
            put["lease"] = json!(lease.to_string());
        }
        TxnOp(json!({ "request_put": put }))
    }

    /// Deletes `key`.
    pub fn delete(key: &str) -> TxnOp {
        TxnOp(json!({"request_delete_range": {"key": b64(key)}}))
    }

    /// Deletes every key starting with `prefix`.
    pub fn delete_prefix(prefix: &str) -> TxnOp {
        TxnOp(json!({"request_delete_range": {"key": b64(prefix),
            "range_end": B64.encode(prefix_end(prefix))}}))
    }

    /// Reads `key`.
    pub fn get(key: &str) -> TxnOp {
        TxnOp(json!({"request_range": {"key": b64(key)}}))
    }

    /// Reads every key starting with `prefix`.
    pub fn get_prefix(prefix: &str) -> TxnOp {
        TxnOp(json!({"request_range": {"key": b64(prefix),
            "range_end": B64.encode(prefix_end(prefix))}}))
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, Default)]
pub struct TxnResult {
    /// Whether every compare held (the success branch ran).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: i64,
    /// The keys each `get` of the branch that ran returned, in order (empty for put/delete).
    pub ranges: Vec<Vec<KeyValue>>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// True for a delete (or a lease expiry), false for a put.
    pub deleted: bool,
    /// The key as it is after the change (for a delete: only the key and revision).
    pub kv: KeyValue,
    /// The key as it was before the change, when etcd still had it.
    pub prev_kv: Option<KeyValue>,
}

/// One message of a watch stream.
#[derive(Debug, Clone, Default)]
pub struct WatchBatch {
    /// The store's revision when the message was sent.
    pub revision: i64,
    /// Set when the watch was cancelled by etcd (e.g. its start revision was compacted away).
    pub canceled: bool,
    /// The compaction revision, when the start revision is older.
    pub compact_revision: i64,
    /// The changes, in revision order.
    pub events: Vec<WatchEvent>,
}

/// A client of one etcd cluster through the JSON gateway of any of its members.
#[derive(Debug)]
pub struct Etcd {
    /// Base URLs (`http://HOST:PORT`), tried in turn.
    endpoints: Vec<String>,
    /// The endpoint that answered last; tried first.
    current: AtomicUsize,
    /// Calls with a deadline for the whole exchange.
    agent: ureq::Agent,
    /// Watch streams: a deadline per read instead, as a watch is meant to stay open.
    watch_agent: ureq::Agent,
    /// HTTP body bytes sent and received, watch streams included.
    traffic: Arc<Traffic>,
}

/// Body bytes exchanged with etcd (request and response bodies; HTTP headers not counted).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes of request bodies sent.
    pub sent: AtomicU64,
    /// Bytes of response bodies and watch messages received.
    pub received: AtomicU64,
}

impl Etcd {
    /// A client of the members at `endpoints` (`etcd://H:P`, `http://H:P` or `H:P`); each call
    /// fails after `timeout`; an idle watch is reopened after `watch_idle`.
    pub fn new(
        endpoints: &[String],
        timeout: Duration,
        watch_idle: Duration,
    ) -> Result<Etcd, ClusterError> {
        if endpoints.is_empty() {
            return Err(ClusterError::BadEndpoint {
                endpoint: String::new(),
                reason: "no etcd endpoint given".into(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|e| endpoint_url(e))
            .collect::<Result<Vec<_>, _>>()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        let watch_agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_send_request(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(watch_idle))
            .build()
            .new_agent();
        Ok(Etcd {
            endpoints,
            current: AtomicUsize::new(0),
            agent,
            watch_agent,
            traffic: Arc::default(),
        })
    }

    /// The body bytes sent to and received from etcd so far: `(sent, received)`.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.traffic.sent.load(Ordering::Relaxed),
            self.traffic.received.load(Ordering::Relaxed),
        )
    }

    /// The base URLs of the members.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Reads `key`.
    pub fn range(&self, key: &str) -> Result<RangeResult, ClusterError> {
        let raw: RawRange = self.call("range", "/v3/kv/range", &json!({"key": b64(key)}))?;
        raw.into_result()
    }

    /// Reads every key starting with `prefix`.
    pub fn range_prefix(&self, prefix: &str) -> Result<RangeResult, ClusterError> {
        let body = json!({"key": b64(prefix), "range_end": B64.encode(prefix_end(prefix))});
        let raw: RawRange = self.call("range", "/v3/kv/range", &body)?;
        raw.into_result()
    }

    /// Reads every key in `[key, end)`.
    pub fn range_between(&self, key: &str, end: &str) -> Result<RangeResult, ClusterError> {
        let body = json!({"key": b64(key), "range_end": b64(end)});
        let raw: RawRange = self.call("range", "/v3/kv/range", &body)?;
        raw.into_result()
    }

    /// Writes `value` at `key` (attached to `lease` unless 0); returns the new revision.
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, ClusterError> {
        let mut body = json!({"key": b64(key), "value": B64.encode(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        let raw: RawHeaderOnly = self.call("put", "/v3/kv/put", &body)?;
        Ok(raw.header.revision)
    }

    /// Deletes every key starting with `prefix`; returns how many were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> Result<i64, ClusterError> {
        let body = json!({"key": b64(prefix), "range_end": B64.encode(prefix_end(prefix))});
        let raw: RawDelete = self.call("delete", "/v3/kv/deleterange", &body)?;
        Ok(raw.deleted)
    }

    /// Runs `success` if every compare holds, else `failure`, atomically.
    pub fn txn(
        &self,
        compare: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<TxnResult, ClusterError> {
        let body = json!({
            "compare": compare.iter().map(|c| &c.0).collect::<Vec<_>>(),
            "success": success.iter().map(|o| &o.0).collect::<Vec<_>>(),
            "failure": failure.iter().map(|o| &o.0).collect::<Vec<_>>(),
        });
        let raw: RawTxn = self.call("txn", "/v3/kv/txn", &body)?;
        let mut ranges = Vec::new();
        for response in raw.responses {
            if let Some(range) = response.response_range {
                ranges.push(range.into_result()?.kvs);
            }
        }
        Ok(TxnResult {
            succeeded: raw.succeeded,
            revision: raw.header.revision,
            ranges,
        })
    }

    /// Grants a lease of `ttl` seconds; returns its id and the TTL etcd granted.
    pub fn lease_grant(&self, ttl: i64) -> Result<(i64, i64), ClusterError> {
        let raw: RawLease = self.call("lease grant", "/v3/lease/grant", &json!({"TTL": ttl}))?;
        if raw.id == 0 {
            return Err(ClusterError::BadResponse {
                op: "lease grant",
                reason: format!("no lease id (error {:?})", raw.error),
            });
        }
        Ok((raw.id, raw.ttl))
    }

    /// Renews lease `id`; returns its new TTL, 0 when etcd no longer knows the lease.
    pub fn lease_keepalive(&self, id: i64) -> Result<i64, ClusterError> {
        let body = json!({"ID": id.to_string()});
        let raw: RawStreamResult<RawLease> =
            self.call("lease keepalive", "/v3/lease/keepalive", &body)?;
        Ok(raw.result.map_or(0, |r| r.ttl))
    }

    /// Revokes lease `id`, deleting every key attached to it.
    pub fn lease_revoke(&self, id: i64) -> Result<(), ClusterError> {
        let body = json!({"ID": id.to_string()});
        let _: RawHeaderOnly = self.call("lease revoke", "/v3/lease/revoke", &body)?;
        Ok(())
    }

    /// The remaining and granted TTL of lease `id` in seconds (remaining -1: expired or unknown).
    pub fn lease_time_to_live(&self, id: i64) -> Result<(i64, i64), ClusterError> {
        let body = json!({"ID": id.to_string()});
        let raw: RawTimeToLive = self.call("lease ttl", "/v3/kv/lease/timetolive", &body)?;
        Ok((raw.ttl, raw.granted_ttl))
    }

    /// Opens a watch of every key in `[key, end)` from `start_revision` on. Without previous
    /// values (`prev_kv`): a delete carries its key, which is all a view needs, and etcd
    /// reads no older revision per event and watcher.
    pub fn watch_range(
        &self,
        key: &str,
        end: &str,
        start_revision: i64,
    ) -> Result<WatchStream, ClusterError> {
        let body = json!({"create_request": {
            "key": b64(key),
            "range_end": b64(end),
            "start_revision": start_revision.to_string(),
        }});
        let mut last = None;
        let size = body.to_string().len() as u64;
        for url in self.rotation() {
            self.traffic.sent.fetch_add(size, Ordering::Relaxed);
            match self
                .watch_agent
                .post(&format!("{}/v3/watch", self.endpoints[url]))
                .send_json(&body)
            {
                Ok(response) => {
                    self.current.store(url, Ordering::Relaxed);
                    let status = response.status().as_u16();
                    let body = response.into_body();
                    if status != 200 {
                        let text = body
                            .into_with_config()
                            .limit(1 << 16)
                            .read_to_string()
                            .unwrap_or_default();
                        return Err(etcd_error("watch", status, &text));
                    }
                    let reader = body.into_with_config().limit(u64::MAX).reader();
                    return Ok(WatchStream {
                        lines: Box::new(BufReader::new(reader)),
                        traffic: Arc::clone(&self.traffic),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(self.unreachable(last))
    }

    /// The endpoint indices in the order to try: the last good one first.
    fn rotation(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| (first + i) % n)
    }

    /// The error for "no member answered".
    fn unreachable(&self, last: Option<ureq::Error>) -> ClusterError {
        ClusterError::Unreachable {
            endpoints: self.endpoints.join(","),
            reason: last.map_or_else(|| "no endpoint".into(), |e| e.to_string()),
        }
    }

    /// Posts `body` to `path` on the first member that answers and decodes the answer.
    fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T, ClusterError> {
        let mut last = None;
        let body = body.to_string();
        for url in self.rotation() {
            self.traffic
                .sent
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            let response = self
                .agent
                .post(&format!("{}{}", self.endpoints[url], path))
                .header("content-type", "application/json")
                .send(body.as_str());
            let mut response = match response {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            self.current.store(url, Ordering::Relaxed);
            let status = response.status().as_u16();
            let text = match response
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_string()
            {
                Ok(text) => text,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            self.traffic
                .received
                .fetch_add(text.len() as u64, Ordering::Relaxed);
            if status != 200 {
                return Err(etcd_error(op, status, &text));
            }
            return serde_json::from_str(&text).map_err(|e| ClusterError::BadResponse {
                op,
                reason: e.to_string(),
            });
        }
        Err(self.unreachable(last))
    }
}

/// An open watch: one [`WatchBatch`] per line.
pub struct WatchStream {
    /// The response body, read line by line.
    lines: Box<dyn BufRead + Send>,
    /// Where received bytes are counted.
    traffic: Arc<Traffic>,
}

/// How reading a watch stream ended.
#[derive(Debug)]
pub enum WatchEnd {
    /// No message within the idle deadline: reopen from the last revision seen.
    Idle,
    /// The connection closed or failed: etcd may be gone.
    Lost(String),
}

impl WatchStream {
    /// The next message; `Err` when the stream ended, idle or broken.
    pub fn next_batch(&mut self) -> Result<WatchBatch, WatchEnd> {
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => return Err(WatchEnd::Lost("etcd closed the watch".into())),
                Ok(n) => {
                    self.traffic.received.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if is_timeout(&e) => return Err(WatchEnd::Idle),
                Err(e) => return Err(WatchEnd::Lost(e.to_string())),
            }
            if line.trim().is_empty() {
                continue;
            }
            return decode_watch_line(&line).map_err(|e| WatchEnd::Lost(e.to_string()));
        }
    }
}

/// Whether an I/O error is a read deadline passing (ureq wraps its own timeout error).
fn is_timeout(e: &std::io::Error) -> bool {
    if matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) {
        return true;
    }
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// Decodes one line of a watch stream (`{"result": WatchResponse}` or `{"error": …}`).
pub fn decode_watch_line(line: &str) -> Result<WatchBatch, ClusterError> {
    let raw: RawStreamResult<RawWatch> =
        serde_json::from_str(line).map_err(|e| ClusterError::BadResponse {
            op: "watch",
            reason: e.to_string(),
        })?;
    let Some(result) = raw.result else {
        return Err(ClusterError::Etcd {
            op: "watch",
            message: raw
                .error
                .map_or_else(|| line.trim().to_string(), |e| e.to_string()),
        });
    };
    let mut events = Vec::with_capacity(result.events.len());
    for event in result.events {
        events.push(WatchEvent {
            deleted: event.kind == "DELETE",
            kv: event.kv.unwrap_or_default().decode()?,
            prev_kv: event.prev_kv.map(RawKv::decode).transpose()?,
        });
    }
    Ok(WatchBatch {
        revision: result.header.revision,
        canceled: result.canceled,
        compact_revision: result.compact_revision,
        events,
    })
}

/// `http://HOST:PORT` from `etcd://HOST:PORT`, `http://HOST:PORT` or `HOST:PORT`.
pub fn endpoint_url(endpoint: &str) -> Result<String, ClusterError> {
    let bad = |reason: &str| ClusterError::BadEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let rest = endpoint
        .strip_prefix("etcd://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    if endpoint.starts_with("https://") {
        return Err(bad("TLS is not supported; use http:// or etcd://"));
    }
    if rest.is_empty() || rest.contains('/') || rest.contains("://") {
        return Err(bad("expected etcd://HOST:PORT"));
    }
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(bad("expected etcd://HOST:PORT"));
    }
    Ok(format!("http://{rest}"))
}

/// The first key after every key starting with `prefix` (etcd's `range_end` of a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): the whole key space, "\0".
    vec![0]
}

/// A key in base64, as the gateway wants it.
fn b64(key: &str) -> String {
    B64.encode(key.as_bytes())
}

/// The error for an answer other than 200: etcd's message when it sent one.
fn etcd_error(op: &'static str, status: u16, text: &str) -> ClusterError {
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
    ClusterError::Etcd { op, message }
}

/// A 64-bit integer the gateway sends as a string (or, leniently, as a number).
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(i64),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize, Default)]
struct RawHeader {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize, Default)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    version: i64,
    #[serde(default, deserialize_with = "int64")]
    lease: i64,
}

impl RawKv {
    fn decode(self) -> Result<KeyValue, ClusterError> {
        let bad = |what: &str, e: String| ClusterError::BadResponse {
            op: "decode",
            reason: format!("{what}: {e}"),
        };
        let key = B64
            .decode(&self.key)
            .map_err(|e| bad("key", e.to_string()))?;
        let key = String::from_utf8(key).map_err(|e| bad("key", e.to_string()))?;
        let value = B64
            .decode(&self.value)
            .map_err(|e| bad("value", e.to_string()))?;
        Ok(KeyValue {
            key,
            value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        })
    }
}

#[derive(Deserialize, Default)]
struct RawRange {
    #[serde(default)]
    header: RawHeader,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

impl RawRange {
    fn into_result(self) -> Result<RangeResult, ClusterError> {
        Ok(RangeResult {
            revision: self.header.revision,
            kvs: self
                .kvs
                .into_iter()
                .map(RawKv::decode)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Deserialize)]
struct RawHeaderOnly {
    #[serde(default)]
    header: RawHeader,
}

#[derive(Deserialize)]
struct RawDelete {
    #[serde(default, deserialize_with = "int64")]
    deleted: i64,
}

#[derive(Deserialize, Default)]
struct RawOpResponse {
    #[serde(default)]
    response_range: Option<RawRange>,
}

#[derive(Deserialize)]
struct RawTxn {
    #[serde(default)]
    header: RawHeader,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<RawOpResponse>,
}

#[derive(Deserialize)]
struct RawLease {
    #[serde(default, rename = "ID", deserialize_with = "int64")]
    id: i64,
    #[serde(default, rename = "TTL", deserialize_with = "int64")]
    ttl: i64,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct RawTimeToLive {
    #[serde(default, rename = "TTL", deserialize_with = "int64")]
    ttl: i64,
    #[serde(default, rename = "grantedTTL", deserialize_with = "int64")]
    granted_ttl: i64,
}

#[derive(Deserialize)]
struct RawStreamResult<T> {
    #[serde(default = "Option::default")]
    result: Option<T>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawEvent {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    kv: Option<RawKv>,
    #[serde(default)]
    prev_kv: Option<RawKv>,
}

#[derive(Deserialize)]
struct RawWatch {
    #[serde(default)]
    header: RawHeader,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/vswitch/"), b"/vswitch0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn compares_and_ops_take_the_gateway_json_shapes() {
        // "/v/e/" in base64 is "L3YvZS8=", its range end "/v/e0" is "L3YvZTA=".
        let c = Compare::prefix_empty("/v/e/").0;
        assert_eq!(c["key"], "L3YvZS8=");
        assert_eq!(c["range_end"], "L3YvZTA=");
        assert_eq!(
            (c["target"].as_str(), c["version"].as_str()),
            (Some("VERSION"), Some("0"))
        );
        let c = Compare::absent("/v/n").0;
        assert_eq!(
            (c["target"].as_str(), c["create_revision"].as_str()),
            (Some("CREATE"), Some("0"))
        );
        assert_eq!(Compare::present("/v/n").0["result"], "GREATER");
        assert_eq!(Compare::mod_revision("/v/n", 42).0["mod_revision"], "42");
        let put = TxnOp::put("/v/n", b"x", 7).0;
        assert_eq!(put["request_put"]["value"], "eA==");
        assert_eq!(put["request_put"]["lease"], "7");
        assert!(TxnOp::put("/v/n", b"x", 0).0["request_put"]
            .get("lease")
            .is_none());
        assert_eq!(
            TxnOp::delete_prefix("/v/e/").0["request_delete_range"]["range_end"],
            "L3YvZTA="
        );
        assert!(TxnOp::get("/v/n").0["request_range"]
            .get("range_end")
            .is_none());
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            endpoint_url("etcd://10.0.0.1:2379").unwrap(),
            "http://10.0.0.1:2379"
        );
        assert_eq!(endpoint_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(endpoint_url("h:2379").unwrap(), "http://h:2379");
        for bad in [
            "",
            "etcd://",
            "h",
            "h:port",
            "https://h:1",
            "etcd://h:1/x",
            ":1",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn decodes_a_put_and_a_delete_as_etcd_3_4_sends_them() {
        // Captured from etcd 3.4.23's gateway: a PUT has no "type", 64-bit numbers are strings.
        let put = r#"{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"2"},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}]}}"#;
        let batch = decode_watch_line(put).unwrap();
        assert_eq!(batch.revision, 3);
        assert_eq!(batch.events.len(), 1);
        let event = &batch.events[0];
        assert!(!event.deleted);
        assert_eq!(event.kv.key, "foo");
        assert_eq!(event.kv.value, b"baz");
        assert_eq!(event.kv.mod_revision, 3);
        assert_eq!(event.prev_kv.as_ref().unwrap().value, b"bar");

        let delete = r#"{"result":{"header":{"revision":"4"},"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}}]}}"#;
        let batch = decode_watch_line(delete).unwrap();
        assert!(batch.events[0].deleted);
        assert!(batch.events[0].kv.value.is_empty());
        assert_eq!(batch.events[0].prev_kv.as_ref().unwrap().value, b"baz");
    }

    #[test]
    fn decodes_a_cancelled_watch_and_refuses_garbage() {
        let line =
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"7"}}"#;
        let batch = decode_watch_line(line).unwrap();
        assert!(batch.canceled);
        assert_eq!(batch.compact_revision, 7);
        assert!(decode_watch_line("{\"error\":{\"grpc_code\":14}}").is_err());
        assert!(decode_watch_line("not json").is_err());
        let bad_key = r#"{"result":{"events":[{"kv":{"key":"!!"}}]}}"#;
        assert!(decode_watch_line(bad_key).is_err());
    }
}
