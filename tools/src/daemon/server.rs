//! The API server: a unix socket, one thread per client, one JSON request per line.
//!
//! Requests are served one at a time against the shared [`Daemon`] (a mutex: the control plane is
//! not a hot path). A line that is not a valid request gets an error answer and changes nothing;
//! a client that disconnects mid-request or sends an endless line is dropped; the server goes on.

use super::Daemon;
use crate::api::{Request, Response, MAX_REQUEST_LEN};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A bound API socket; removes its file when dropped.
pub struct ApiSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ApiSocket {
    /// Binds `path` (creating its directory). A stale socket file left by a killed daemon is
    /// replaced; a live daemon on the same path is an error.
    pub fn bind(path: &Path) -> io::Result<ApiSocket> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another vswitchd is listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok(ApiSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves clients until the listener fails (or the process ends).
    pub fn serve(&self, daemon: Arc<Mutex<Daemon>>) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(stream) => {
                    let daemon = daemon.clone();
                    let spawned = std::thread::Builder::new()
                        .name("api-client".into())
                        .spawn(move || serve_client(stream, &daemon));
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start a client thread");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves one client: requests line by line until it hangs up.
fn serve_client(stream: UnixStream, daemon: &Mutex<Daemon>) {
    // A client that stops mid-request must not hold a thread forever.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut line = Vec::new();
        let n = match (&mut reader)
            .take(MAX_REQUEST_LEN as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let answer = if line.len() > MAX_REQUEST_LEN {
            let r = Response::err(format!("request longer than {MAX_REQUEST_LEN} bytes"));
            let _ = write_response(&mut writer, &r);
            return;
        } else if line.last() != Some(&b'\n') {
            // The client hung up mid-request: nothing to answer, nothing done.
            return;
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(Request::TraceLive { port, count }) => {
                    stream_trace(&stream, daemon, port, count);
                    return;
                }
                Ok(Request::Capture { port, count }) => {
                    stream_capture(&stream, daemon, &port, count);
                    return;
                }
                _ => answer(&line, daemon),
            }
        };
        if write_response(&mut writer, &answer).is_err() {
            return;
        }
    }
}

fn answer(line: &[u8], daemon: &Mutex<Daemon>) -> Response {
    match serde_json::from_slice::<Request>(line) {
        Ok(req) => {
            tracing::debug!(?req, "request");
            let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
            let resp = d.handle(req);
            if let Some(e) = &resp.error {
                tracing::info!(error = %e, "request refused");
            }
            resp
        }
        Err(e) => Response::err(format!("malformed request: {e}")),
    }
}

/// Streams live trace lines to the client until `count` lines or until it hangs up.
fn stream_trace(
    stream: &UnixStream,
    daemon: &Mutex<Daemon>,
    port: Option<String>,
    count: Option<u64>,
) {
    let sub = daemon
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .trace_subscribe(port, false);
    let (id, rx) = match sub {
        Ok(s) => s,
        Err(e) => {
            let _ = write_response(&mut &*stream, &Response::from(e));
            return;
        }
    };
    pump(stream, &rx, count);
    daemon
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .trace_unsubscribe(id);
}

/// Streams a port's frames to the client until `count` frames or until it hangs up.
fn stream_capture(stream: &UnixStream, daemon: &Mutex<Daemon>, port: &str, count: Option<u64>) {
    let started = daemon
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .capture_start(port);
    let (id, rx) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = write_response(&mut &*stream, &Response::from(e));
            return;
        }
    };
    pump(stream, &rx, count);
    daemon
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .capture_stop(port, id);
}

/// Answers ok, then copies lines from `rx` to the client; ends after `count` lines, when the
/// client hangs up, or when the source ends, with a final `{"end":true,"count":N}`.
fn pump(stream: &UnixStream, rx: &mpsc::Receiver<String>, count: Option<u64>) {
    let mut w = stream;
    if write_response(
        &mut w,
        &Response::ok(serde_json::json!({ "streaming": true })),
    )
    .is_err()
    {
        return;
    }
    let mut sent = 0u64;
    while count.is_none_or(|c| sent < c) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(mut line) => {
                line.push('\n');
                if w.write_all(line.as_bytes()).is_err() {
                    return;
                }
                sent += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if client_gone(stream) {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = writeln!(w, "{}", serde_json::json!({ "end": true, "count": sent }));
}

/// True once the client has closed its end (a zero-byte peek).
fn client_gone(stream: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv into a one-byte buffer we own; MSG_PEEK leaves the data, MSG_DONTWAIT never
    // blocks.
    let n = unsafe {
        libc::recv(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

fn write_response(w: &mut impl Write, r: &Response) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(r)?;
    bytes.push(b'\n');
    w.write_all(&bytes)
}
