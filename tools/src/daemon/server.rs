//! The API server: a unix socket served from one event loop, one JSON request per line.
//!
//! One thread (mio `Poll`) accepts clients, reads their lines, and answers them one at a time
//! against the shared [`Daemon`] (a mutex: the control plane is not a hot path). What a client
//! can take is bounded: at most [`Limits::max_clients`] connections (one more is answered with
//! a one-line JSON error and closed), one outstanding answer each (a client that does not read
//! its answers is not read from), a request line of at most [`MAX_REQUEST_LEN`] bytes, a total
//! of [`Limits::max_buffered`] bytes of requests held, and [`Limits::idle_timeout`] without
//! progress before it is closed. Streaming requests (`TraceLive`, `Capture`) get a thread each,
//! at most [`Limits::max_streams`] of them. Running out of descriptors, threads or buffers
//! refuses a client; it never stops the server. A line that is not a valid request gets an error
//! answer and changes nothing; a client that disconnects mid-request is dropped.
//!
//! The socket is made with its mode (0660) and group before it listens, and a lock file next
//! to it (`SOCKET.lock`, `flock`) tells a live daemon from a stale socket file.

use super::state::LockFile;
use super::Daemon;
use crate::api::{Request, Response, MAX_REQUEST_LEN};
use mio::net::{UnixListener as MioListener, UnixStream as MioStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The mode of the API socket: owner and group read and write.
pub const SOCKET_MODE: u32 = 0o660;

/// The listen backlog of the API socket.
const BACKLOG: libc::c_int = 1024;

/// The listener's token; clients get the others.
const LISTENER: Token = Token(usize::MAX);

/// How much is read from a client at once.
const READ_CHUNK: usize = 64 * 1024;

/// The least time between two warnings about the same trouble.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the API server lets its clients take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is refused.
    pub max_clients: usize,
    /// Of those, streaming requests (a thread each) at once.
    pub max_streams: usize,
    /// A connection that makes no progress (no byte read or written) this long is closed.
    pub idle_timeout: Duration,
    /// Bytes of unanswered request text held for all clients together.
    pub max_buffered: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 1024,
            max_streams: 64,
            idle_timeout: Duration::from_secs(60),
            max_buffered: 64 << 20,
        }
    }
}

/// What answers the requests: the daemon, or a stand-in in tests.
pub trait Backend: Send + Sync + 'static {
    /// Answers one request (not a streaming one); called on the server's thread, one at a time.
    fn answer(&self, req: Request) -> Response;
    /// Serves a streaming request on `stream` (blocking) until it ends; called on a thread of
    /// its own.
    fn stream(&self, stream: &UnixStream, req: Request);
}

impl Backend for Mutex<Daemon> {
    fn answer(&self, req: Request) -> Response {
        tracing::debug!(?req, "request");
        let resp = match req {
            // The path is opened here, before the lock: whatever a client put there (a FIFO, a
            // device) cannot stall the others.
            Request::SandboxCreate {
                name,
                netns: Some(path),
            } => match crate::netns::validate_netns_name(&name)
                .and_then(|()| crate::netns::open_foreign_netns(&path))
            {
                Ok(ns) => lock(self).sandbox_adopt(&name, &path, ns),
                Err(e) => Response::err(e.to_string()),
            },
            req => lock(self).handle(req),
        };
        if let Some(e) = &resp.error {
            tracing::info!(error = %e, "request refused");
        }
        resp
    }

    fn stream(&self, stream: &UnixStream, req: Request) {
        match req {
            Request::TraceLive { port, count } => stream_trace(stream, self, port, count),
            Request::Capture { port, count } => stream_capture(stream, self, &port, count),
            _ => {
                let r = Response::err("not a streaming request");
                let _ = write_response(&mut &*stream, &r);
            }
        }
    }
}

fn lock(daemon: &Mutex<Daemon>) -> std::sync::MutexGuard<'_, Daemon> {
    daemon.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bound API socket; removes its file when dropped.
pub struct ApiSocket {
    listener: UnixListener,
    path: PathBuf,
    /// `SOCKET.lock`, held while the socket is ours.
    _lock: LockFile,
}

impl ApiSocket {
    /// Binds `path` with mode 0660 and the daemon's group; see [`ApiSocket::bind_with`].
    pub fn bind(path: &Path) -> io::Result<ApiSocket> {
        ApiSocket::bind_with(path, None)
    }

    /// Binds `path` (creating its directory, mode 0755), mode 0660, group `group` (else the
    /// daemon's own: root's for root), all set before the socket listens.
    ///
    /// The lock file `PATH.lock` tells a live daemon from a dead one: while another process
    /// holds it, binding fails; once it is free, a socket file left at `path` is stale (its
    /// daemon was killed) and is replaced. A file there that is not a socket is an error.
    pub fn bind_with(path: &Path, group: Option<u32>) -> io::Result<ApiSocket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
                    .map_err(|e| context(e, "creating", dir))?;
            }
        }
        let mut lock_name = path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock = LockFile::acquire(Path::new(&lock_name), |pid| {
            let by = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            format!("another vswitchd is listening on {}{by}", path.display())
        })?;
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                fs::remove_file(path).map_err(|e| context(e, "removing the stale socket", path))?
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e, "looking at", path)),
        }
        let listener = bind_socket(path, SOCKET_MODE, group)?;
        Ok(ApiSocket {
            listener,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Serves the daemon's clients with the default [`Limits`] until the event loop fails.
    pub fn serve(&self, daemon: Arc<Mutex<Daemon>>) {
        if let Err(e) = self.serve_with(daemon, Limits::default()) {
            tracing::error!(error = %e, "the API server stopped");
        }
    }

    /// Serves clients of `backend` within `limits`; returns only if the event loop fails.
    pub fn serve_with<B: Backend>(&self, backend: Arc<B>, limits: Limits) -> io::Result<()> {
        let listener = self.listener.try_clone()?;
        listener.set_nonblocking(true)?;
        let mut server = Server::new(MioListener::from_std(listener), backend, limits)?;
        server.run()
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `socket`, `bind`, then mode and group, then `listen`: nobody can connect (connect is
/// refused) until the socket has its final mode, whatever the umask was.
fn bind_socket(path: &Path, mode: u32, group: Option<u32>) -> io::Result<UnixListener> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeros is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is too long (at most {} bytes) or holds NUL",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(context(
            io::Error::last_os_error(),
            "creating a socket for",
            path,
        ));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the duration of the call.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    if rc != 0 {
        return Err(context(io::Error::last_os_error(), "binding", path));
    }
    let configured = fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .and_then(|()| std::os::unix::fs::chown(path, None, group))
        .map_err(|e| context(e, "setting the mode and group of", path));
    let listened = configured.and_then(|()| {
        // SAFETY: listen on a descriptor `fd` owns; no pointers.
        let rc = unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) };
        if rc != 0 {
            Err(context(io::Error::last_os_error(), "listening on", path))
        } else {
            Ok(())
        }
    });
    if let Err(e) = listened {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
}

/// One connected client of the event loop.
struct Client {
    stream: MioStream,
    /// Request bytes read, not yet answered.
    inbuf: Vec<u8>,
    /// The answer being written, and how much of it went out.
    outbuf: Vec<u8>,
    written: usize,
    /// The last byte read or written.
    last_active: Instant,
    /// The client has shut its end.
    eof: bool,
    /// Close once the answer is out.
    close_after_flush: bool,
}

/// What [`Server::service`] decided about a client.
enum Next {
    /// Keep it; wait for the next event.
    Wait,
    /// Close it.
    Close,
    /// Hand it to a streaming thread with this request.
    Stream(Box<Request>),
}

/// The API event loop: the listener, the clients, and the limits.
struct Server<B> {
    poll: Poll,
    listener: MioListener,
    clients: HashMap<usize, Client>,
    next_token: usize,
    backend: Arc<B>,
    limits: Limits,
    /// Streaming threads running.
    streams: Arc<AtomicUsize>,
    /// A descriptor kept to be closed when accept runs out of them (EMFILE), so the waiting
    /// client can be told why before it is closed.
    reserve: Option<File>,
    /// Request bytes held for all clients.
    buffered: usize,
    /// Connections may be waiting that an earlier accept could not take.
    accept_pending: bool,
    last_warning: Option<Instant>,
}

impl<B: Backend> Server<B> {
    fn new(mut listener: MioListener, backend: Arc<B>, limits: Limits) -> io::Result<Server<B>> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            clients: HashMap::new(),
            next_token: 0,
            backend,
            limits,
            streams: Arc::new(AtomicUsize::new(0)),
            reserve: File::open("/dev/null").ok(),
            buffered: 0,
            accept_pending: false,
            last_warning: None,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let tick =
            (self.limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut last_sweep = Instant::now();
        loop {
            match self.poll.poll(&mut events, Some(tick)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    Token(t) => self.service(t),
                }
            }
            if self.accept_pending {
                self.accept_all();
            }
            if last_sweep.elapsed() >= tick {
                last_sweep = Instant::now();
                self.close_idle();
            }
        }
    }

    /// Accepts every waiting connection; each becomes a client or is refused with a reason.
    fn accept_all(&mut self) {
        self.accept_pending = false;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    self.warn("out of file descriptors: refusing API clients", &e);
                    // Free the reserve to take the client, tell it why, close it.
                    if self.reserve.take().is_some() {
                        if let Ok((stream, _)) = self.listener.accept() {
                            refuse(
                                stream,
                                "vswitchd is out of file descriptors: try again later",
                            );
                        }
                        self.reserve = File::open("/dev/null").ok();
                        if self.reserve.is_some() {
                            continue;
                        }
                    }
                    self.accept_pending = true;
                    return;
                }
                Err(e) => {
                    // ENOMEM, ENOBUFS, …: try again on the next tick.
                    self.warn("accepting an API client failed", &e);
                    self.accept_pending = true;
                    return;
                }
            }
        }
    }

    /// Takes a new connection as a client, unless that is one too many.
    fn admit(&mut self, mut stream: MioStream) {
        if self.clients.len() >= self.limits.max_clients {
            let msg = format!(
                "too many clients: vswitchd serves at most {} connections at once; try again later",
                self.limits.max_clients
            );
            self.warn_plain(&msg);
            refuse(stream, &msg);
            return;
        }
        self.next_token = (self.next_token + 1) % LISTENER.0;
        while self.clients.contains_key(&self.next_token) {
            self.next_token = (self.next_token + 1) % LISTENER.0;
        }
        let token = self.next_token;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(token), interest)
        {
            self.warn("cannot watch an API client", &e);
            refuse(
                stream,
                "vswitchd cannot take more clients now: try again later",
            );
            return;
        }
        self.clients.insert(
            token,
            Client {
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                written: 0,
                last_active: Instant::now(),
                eof: false,
                close_after_flush: false,
            },
        );
        // Data may have arrived before registration; edge-triggered events would not say.
        self.service(token);
    }

    /// Moves a client on as far as it can go: write the answer, answer the next line, read.
    fn service(&mut self, token: usize) {
        let next = match self.clients.get_mut(&token) {
            Some(client) => step(
                client,
                &mut self.buffered,
                self.limits.max_buffered,
                &*self.backend,
            ),
            None => return,
        };
        match next {
            Next::Wait => {}
            Next::Close => self.close(token),
            Next::Stream(req) => self.start_stream(token, *req),
        }
    }

    /// Hands a client to a thread of its own for a streaming request, within the limit.
    fn start_stream(&mut self, token: usize, req: Request) {
        let Some(mut client) = self.remove(token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut client.stream);
        if self.streams.load(Ordering::Relaxed) >= self.limits.max_streams {
            let msg = format!(
                "too many streaming clients: at most {} traces and captures at once",
                self.limits.max_streams
            );
            refuse(client.stream, &msg);
            return;
        }
        let stream = UnixStream::from(client.stream);
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        let spare = stream.try_clone().ok();
        self.streams.fetch_add(1, Ordering::Relaxed);
        let streams = self.streams.clone();
        let backend = self.backend.clone();
        let spawned = std::thread::Builder::new()
            .name("api-stream".into())
            .spawn(move || {
                backend.stream(&stream, req);
                streams.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            self.streams.fetch_sub(1, Ordering::Relaxed);
            self.warn("cannot start a streaming thread", &e);
            if let Some(mut s) = spare {
                let r = Response::err("vswitchd cannot start a stream now: try again later");
                let _ = write_response(&mut s, &r);
            }
        }
    }

    /// Closes clients that made no progress for the idle timeout.
    fn close_idle(&mut self) {
        let timeout = self.limits.idle_timeout;
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last_active.elapsed() >= timeout)
            .map(|(t, _)| *t)
            .collect();
        if !idle.is_empty() {
            tracing::debug!(count = idle.len(), "closing idle API clients");
        }
        for token in idle {
            self.close(token);
        }
    }

    fn remove(&mut self, token: usize) -> Option<Client> {
        let client = self.clients.remove(&token)?;
        self.buffered -= client.inbuf.len();
        Some(client)
    }

    fn close(&mut self, token: usize) {
        if let Some(mut client) = self.remove(token) {
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }

    fn warn(&mut self, what: &str, e: &io::Error) {
        if self.warning_due() {
            tracing::warn!(error = %e, "{what}");
        }
    }

    fn warn_plain(&mut self, what: &str) {
        if self.warning_due() {
            tracing::warn!("{what}");
        }
    }

    /// True at most once per [`WARN_EVERY`]: a storm of clients is not a storm of log lines.
    fn warning_due(&mut self) -> bool {
        let due = self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            self.last_warning = Some(Instant::now());
        }
        due
    }
}

/// One client's state machine, run until it must wait for the socket: flush the answer; then
/// answer the next complete line; else read more. Nothing is read while an answer waits to go
/// out, so a client that does not read cannot make the daemon hold more than one answer.
fn step<B: Backend>(
    client: &mut Client,
    buffered: &mut usize,
    max_buffered: usize,
    backend: &B,
) -> Next {
    loop {
        if client.written < client.outbuf.len() {
            match client.stream.write(&client.outbuf[client.written..]) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    client.written += n;
                    client.last_active = Instant::now();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
        }
        client.outbuf = Vec::new();
        client.written = 0;
        if client.close_after_flush {
            return Next::Close;
        }
        if let Some(end) = client.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = client.inbuf.drain(..=end).collect();
            *buffered -= line.len();
            if line.len() > MAX_REQUEST_LEN {
                client.outbuf = answer_bytes(&too_long());
                client.close_after_flush = true;
                continue;
            }
            match serde_json::from_slice::<Request>(&line) {
                Ok(req @ (Request::TraceLive { .. } | Request::Capture { .. })) => {
                    return Next::Stream(Box::new(req))
                }
                Ok(req) => client.outbuf = answer_bytes(&backend.answer(req)),
                Err(e) => {
                    client.outbuf = answer_bytes(&Response::err(format!("malformed request: {e}")))
                }
            }
            continue;
        }
        if client.inbuf.len() > MAX_REQUEST_LEN {
            client.outbuf = answer_bytes(&too_long());
            client.close_after_flush = true;
            continue;
        }
        if client.eof {
            // Hung up, possibly mid-request: nothing to answer, nothing done.
            return Next::Close;
        }
        let mut chunk = [0u8; READ_CHUNK];
        let want = READ_CHUNK.min(MAX_REQUEST_LEN + 1 - client.inbuf.len());
        match client.stream.read(&mut chunk[..want]) {
            Ok(0) => client.eof = true,
            Ok(n) => {
                client.last_active = Instant::now();
                if *buffered + n > max_buffered || client.inbuf.try_reserve(n).is_err() {
                    client.outbuf = answer_bytes(&Response::err(
                        "vswitchd holds too many unanswered requests: try again later",
                    ));
                    client.close_after_flush = true;
                    continue;
                }
                client.inbuf.extend_from_slice(&chunk[..n]);
                *buffered += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

fn too_long() -> Response {
    Response::err(format!("request longer than {MAX_REQUEST_LEN} bytes"))
}

/// An answer as the line sent to the client.
fn answer_bytes(r: &Response) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(r).unwrap_or_else(|e| {
        format!("{{\"ok\":false,\"error\":\"cannot encode the answer: {e}\"}}").into_bytes()
    });
    bytes.push(b'\n');
    bytes
}

/// Tells a client it is not served (one JSON line, best effort, never blocking) and closes it.
fn refuse(mut stream: MioStream, why: &str) {
    let _ = stream.write(&answer_bytes(&Response::err(why)));
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// Answers every request with its debug text; streams hold until the client hangs up.
    struct Echo;

    impl Backend for Echo {
        fn answer(&self, req: Request) -> Response {
            Response::ok(serde_json::json!(format!("{req:?}")))
        }

        fn stream(&self, stream: &UnixStream, _req: Request) {
            let _ = write_response(&mut &*stream, &Response::ok(serde_json::json!("stream")));
            let mut b = [0u8; 1];
            let _ = (&*stream).read(&mut b);
        }
    }

    /// A server on a fresh socket in the temp dir, running on its own thread.
    struct TestServer {
        path: PathBuf,
        _socket: Arc<ApiSocket>,
    }

    impl TestServer {
        fn start(name: &str, limits: Limits) -> TestServer {
            let dir = std::env::temp_dir().join(format!("vst-api-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            let path = dir.join("api.sock");
            let socket = Arc::new(ApiSocket::bind(&path).unwrap());
            let s2 = socket.clone();
            std::thread::spawn(move || s2.serve_with(Arc::new(Echo), limits));
            TestServer {
                path,
                _socket: socket,
            }
        }

        fn connect(&self) -> UnixStream {
            let s = UnixStream::connect(&self.path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(dir) = self.path.parent() {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }

    fn port_list() -> Vec<u8> {
        let mut line = serde_json::to_vec(&Request::PortList).unwrap();
        line.push(b'\n');
        line
    }

    /// Sends one request line and reads one answer line.
    fn ask(s: &UnixStream, line: &[u8]) -> Response {
        (&*s).write_all(line).unwrap();
        read_answer(s)
    }

    fn read_answer(s: &UnixStream) -> Response {
        let mut text = String::new();
        BufReader::new(s).read_line(&mut text).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }

    fn limits(max_clients: usize) -> Limits {
        Limits {
            max_clients,
            max_streams: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn past_the_cap_a_client_is_refused_with_a_json_line_then_served_when_room_is_made() {
        let server = TestServer::start("cap", limits(8));
        let idle: Vec<UnixStream> = (0..8).map(|_| server.connect()).collect();
        // The eight are taken (the ninth is refused only once they are all accepted).
        let extra = server.connect();
        let r = read_answer(&extra);
        assert!(!r.ok);
        assert!(r.error.unwrap().contains("too many clients"));
        let mut b = [0u8; 1];
        assert_eq!((&extra).read(&mut b).unwrap(), 0, "closed after the line");
        drop(idle);
        // Once the server has seen them go, a request is answered.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = ask(&server.connect(), &port_list());
            if r.ok {
                break;
            }
            assert!(Instant::now() < deadline, "still refused: {r:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn idle_clients_are_closed_after_the_timeout() {
        let server = TestServer::start(
            "idle",
            Limits {
                idle_timeout: Duration::from_millis(200),
                ..Limits::default()
            },
        );
        let started = Instant::now();
        let quiet = server.connect();
        let mut b = [0u8; 1];
        assert_eq!((&quiet).read(&mut b).unwrap(), 0, "closed by the server");
        assert!(started.elapsed() >= Duration::from_millis(200));
        // A client mid-request is no different.
        let half = server.connect();
        (&half).write_all(b"{\"PortLi").unwrap();
        assert_eq!((&half).read(&mut b).unwrap(), 0);
        // One that talks is served.
        assert!(ask(&server.connect(), &port_list()).ok);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_bad_lines_get_errors() {
        let server = TestServer::start("pipe", Limits::default());
        let s = server.connect();
        let mut lines = port_list();
        lines.extend_from_slice(b"{not json\n");
        lines.extend_from_slice(&port_list());
        (&s).write_all(&lines).unwrap();
        let mut reader = BufReader::new(&s);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let mut text = String::new();
            reader.read_line(&mut text).unwrap();
            answers.push(serde_json::from_str::<Response>(&text).unwrap());
        }
        assert!(answers[0].ok && answers[2].ok);
        assert!(answers[1].error.as_deref().unwrap().contains("malformed"));
    }

    #[test]
    fn a_client_that_does_not_read_does_not_stall_the_others() {
        let server = TestServer::start("noread", Limits::default());
        let greedy = server.connect();
        // Thousands of requests, never reading an answer: the server holds one answer for it.
        greedy.set_nonblocking(true).unwrap();
        let many = port_list().repeat(20_000);
        let _ = (&greedy).write(&many);
        assert!(ask(&server.connect(), &port_list()).ok);
    }

    #[test]
    fn an_endless_line_is_refused_and_closed() {
        let server = TestServer::start("long", Limits::default());
        let s = server.connect();
        let writer = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..(MAX_REQUEST_LEN / chunk.len() + 2) {
                if (&writer).write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let r = read_answer(&s);
        assert!(r.error.unwrap().contains("request longer than"));
        assert!(ask(&server.connect(), &port_list()).ok);
    }

    #[test]
    fn streams_have_their_own_cap() {
        let server = TestServer::start("streams", limits(100));
        let mut line = serde_json::to_vec(&Request::TraceLive {
            port: None,
            count: None,
        })
        .unwrap();
        line.push(b'\n');
        let a = server.connect();
        let b = server.connect();
        assert!(ask(&a, &line).ok);
        assert!(ask(&b, &line).ok);
        let c = server.connect();
        let r = ask(&c, &line);
        assert!(r.error.unwrap().contains("too many streaming clients"));
        // Ordinary requests are still served while the streams run.
        assert!(ask(&server.connect(), &port_list()).ok);
        drop(a);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ask(&server.connect(), &line).ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the ended stream's place never freed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_socket_has_its_mode_a_live_one_is_kept_and_a_stale_one_replaced() {
        let dir = std::env::temp_dir().join(format!("vst-api-bind-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("run").join("api.sock");
        let first = ApiSocket::bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, SOCKET_MODE);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o7777, 0o755);
        let err = ApiSocket::bind(&path).err().expect("a live socket is kept");
        assert!(err.to_string().contains("another vswitchd"), "{err}");
        assert!(
            UnixStream::connect(&path).is_ok(),
            "the first still listens"
        );
        drop(first);
        // A socket file left by a killed daemon (no lock held) is replaced.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let again = ApiSocket::bind(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(again);
        // A file that is not a socket is left alone.
        fs::write(&path, b"keep me").unwrap();
        let err = ApiSocket::bind(&path).err().expect("not a socket");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"keep me");
        fs::remove_dir_all(&dir).unwrap();
    }
}
