//! The plugin's socket and HTTP server: [`DockerPlugin`] listens on a unix socket (mode 0660,
//! set before `listen`, so no client ever sees a wider mode), reads each HTTP/1.1 request with
//! `tiny_http`, answers it with [`super::handle`] on one thread of its own, and removes the
//! socket when dropped. The datapath never sees any of this.

use super::{handle, DockerBackend, Reply, CONTENT_TYPE};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tiny_http::{Header, Method, Response, Server};

/// Where Docker looks for plugin sockets (in the mount namespace it runs in).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// The default socket: the driver is named `vswitch`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/vswitch.sock";
/// The socket's mode: owner and group (root and its group, as Docker's own socket).
pub const SOCKET_MODE: u32 = 0o660;
/// The largest request body read (a CreateNetwork with many options is a few KB).
pub const MAX_BODY: u64 = 1 << 20;
/// The pause before listening again after the listener failed (e.g. out of descriptors).
const RELISTEN_PAUSE: Duration = Duration::from_secs(1);

/// Counters of the plugin's traffic.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls answered with success.
    pub ok: AtomicU64,
    /// Calls refused (HTTP 4xx or 500 with `Err`).
    pub refused: AtomicU64,
    /// Times the listener failed and was opened again.
    pub relistens: AtomicU64,
}

/// The Docker plugin endpoint, served on its own thread until dropped.
pub struct DockerPlugin {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// The server of the moment, so that drop can wake the thread blocked on it.
    current: Arc<Mutex<Option<Arc<Server>>>>,
    stats: Arc<PluginStats>,
    thread: Option<JoinHandle<()>>,
}

impl DockerPlugin {
    /// Listens on `path` (creating its directory; replacing a stale socket, refusing a live one
    /// or any other file) and serves the plugin protocol there with `backend`, on a thread of
    /// its own. Docker names the driver after the file: `/run/docker/plugins/NAME.sock`.
    pub fn serve(
        path: impl Into<PathBuf>,
        backend: Arc<dyn DockerBackend>,
    ) -> io::Result<DockerPlugin> {
        let path = path.into();
        let first = listen(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let current = Arc::new(Mutex::new(Some(Arc::clone(&first))));
        let stats = Arc::new(PluginStats::default());
        let worker = Worker {
            path: path.clone(),
            stop: Arc::clone(&stop),
            current: Arc::clone(&current),
            stats: Arc::clone(&stats),
            backend,
        };
        let thread = std::thread::Builder::new()
            .name("docker-plugin".into())
            .spawn(move || worker.run(first))?;
        tracing::info!(socket = %path.display(), driver = %driver_name(&path), "docker plugin listening");
        Ok(DockerPlugin {
            path,
            stop,
            current,
            stats,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The driver name Docker gives the plugin: the socket file's name without `.sock`.
    pub fn driver_name(&self) -> String {
        driver_name(&self.path)
    }

    /// The plugin's counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }
}

impl Drop for DockerPlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(server) = lock(&self.current).as_ref() {
            server.unblock();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Dropping the last server removes the socket file (tiny_http does on drop).
        lock(&self.current).take();
        if self.path.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The socket of `vswitchd --docker-plugin PATH|none`: `none` turns the plugin off.
pub fn socket_from_arg(arg: &str) -> Option<PathBuf> {
    (arg != "none").then(|| PathBuf::from(arg))
}

/// The driver name of a socket path: its file name without `.sock`.
pub fn driver_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The serving thread's state.
struct Worker {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Arc<Server>>>>,
    stats: Arc<PluginStats>,
    backend: Arc<dyn DockerBackend>,
}

impl Worker {
    /// Serves until stopped. tiny_http's accept thread ends on an accept error (e.g. EMFILE);
    /// then the server is dropped and the socket opened again, so the plugin never goes deaf.
    fn run(self, first: Arc<Server>) {
        let mut server = first;
        loop {
            match server.recv() {
                Ok(request) => self.answer(request),
                Err(e) if self.stop.load(Ordering::SeqCst) => {
                    tracing::debug!(error = %e, "docker plugin stopping");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, socket = %self.path.display(), "docker plugin listener failed; listening again");
                    self.stats.relistens.fetch_add(1, Ordering::Relaxed);
                    server = match self.relisten() {
                        Some(s) => s,
                        None => return,
                    };
                }
            }
        }
    }

    /// Drops the failed server and listens again, until it works or the plugin stops.
    fn relisten(&self) -> Option<Arc<Server>> {
        lock(&self.current).take();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            match listen(&self.path) {
                Ok(s) => {
                    *lock(&self.current) = Some(Arc::clone(&s));
                    // Stopped meanwhile: drop's unblock may have gone to the old server.
                    if self.stop.load(Ordering::SeqCst) {
                        return None;
                    }
                    return Some(s);
                }
                Err(e) => {
                    tracing::warn!(error = %e, socket = %self.path.display(), "cannot listen on the docker plugin socket");
                    std::thread::sleep(RELISTEN_PAUSE);
                }
            }
        }
    }

    /// Reads one request, answers it, and counts the answer.
    fn answer(&self, mut request: tiny_http::Request) {
        let reply = self.reply(&mut request);
        if reply.status == 200 {
            self.stats.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                call = %request.url(), status = reply.status, error = reply.error().unwrap_or(""),
                "docker plugin call refused"
            );
        }
        let body = reply.body.to_string().into_bytes();
        let mut response = Response::from_data(body).with_status_code(reply.status);
        if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], CONTENT_TYPE.as_bytes()) {
            response = response.with_header(h);
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "docker plugin: the client went away before the answer");
        }
    }

    /// The answer to one request; a panic in a handler or the backend becomes an internal error.
    fn reply(&self, request: &mut tiny_http::Request) -> Reply {
        if *request.method() != Method::Post {
            return Reply::err_status(405, "plugin calls are POST requests");
        }
        let call = request
            .url()
            .trim_start_matches('/')
            .split('?')
            .next()
            .unwrap_or("")
            .to_string();
        let mut body = Vec::new();
        if let Err(e) = request
            .as_reader()
            .take(MAX_BODY + 1)
            .read_to_end(&mut body)
        {
            return Reply::err_status(400, format!("cannot read the request body: {e}"));
        }
        if body.len() as u64 > MAX_BODY {
            return Reply::err_status(413, format!("request body over {MAX_BODY} bytes"));
        }
        tracing::debug!(call = %call, body = %String::from_utf8_lossy(&body), "docker plugin call");
        let backend = self.backend.as_ref();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(backend, &call, &body)
        }))
        .unwrap_or_else(|_| Reply::err(format!("vswitch: internal error while answering {call}")))
    }
}

/// Opens the socket at `path`: its directory made if missing, a stale socket removed, a live
/// one or another kind of file refused; bound, given [`SOCKET_MODE`], and only then listening.
fn listen(path: &Path) -> io::Result<Arc<Server>> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| context("cannot create the directory of", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process serves {}", path.display()),
                ));
            }
            std::fs::remove_file(path).map_err(|e| context("cannot remove the stale socket", e))?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context("cannot look at", e)),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)
        .map_err(|e| context("cannot make a socket for", e))?;
    let addr = SockAddr::unix(path).map_err(|e| context("bad socket path", e))?;
    socket.bind(&addr).map_err(|e| context("cannot bind", e))?;
    // Before listen(): until then no one can connect, so the mode never was wider than this.
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)) {
        let _ = std::fs::remove_file(path);
        return Err(context("cannot set the mode of", e));
    }
    if let Err(e) = socket.listen(128) {
        let _ = std::fs::remove_file(path);
        return Err(context("cannot listen on", e));
    }
    let listener = UnixListener::from(std::os::fd::OwnedFd::from(socket));
    let server = Server::from_listener(listener, None).map_err(|e| {
        let _ = std::fs::remove_file(path);
        io::Error::other(format!("cannot serve {}: {e}", path.display()))
    })?;
    Ok(Arc::new(server))
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryBackend;
    use super::*;
    use serde_json::{json, Value};
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// A socket path unique to this test.
    fn sock(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vswitch-plugin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("vstest.sock")
    }

    /// One HTTP/1.1 request over the socket: the status and the JSON body.
    fn post(path: &Path, method: &str, call: &str, body: &str) -> (u16, String, Value) {
        let mut s = UnixStream::connect(path).expect("connect to the plugin");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} /{call} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"));
        let (head, json) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            status,
            head.to_string(),
            serde_json::from_str(json).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn the_plugin_can_be_turned_off() {
        assert_eq!(socket_from_arg("none"), None);
        assert_eq!(
            socket_from_arg(DEFAULT_SOCKET).map(|p| driver_name(&p)),
            Some("vswitch".to_string())
        );
    }

    #[test]
    fn serves_activate_over_http_with_the_plugin_content_type() {
        let path = sock("activate");
        let plugin = DockerPlugin::serve(&path, Arc::new(MemoryBackend::new())).unwrap();
        assert_eq!(plugin.driver_name(), "vstest");
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o660);
        let (status, head, body) = post(&path, "POST", "Plugin.Activate", "");
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/vnd.docker.plugins.v1.2+json"),
            "{head}"
        );
        assert_eq!(body, json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
        assert_eq!(plugin.stats().ok.load(Ordering::Relaxed), 1);
        drop(plugin);
        assert!(!path.exists(), "the socket is removed on drop");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn refusals_over_http() {
        let path = sock("refusals");
        let backend = Arc::new(MemoryBackend::new());
        let plugin = DockerPlugin::serve(&path, backend.clone()).unwrap();
        let (status, _, body) = post(&path, "POST", "NetworkDriver.CreateNetwork", "{not json");
        assert_eq!(status, 500);
        assert!(
            body["Err"]
                .as_str()
                .unwrap()
                .contains("malformed NetworkDriver.CreateNetwork"),
            "{body}"
        );
        let (status, _, body) = post(&path, "GET", "Plugin.Activate", "");
        assert_eq!(status, 405);
        assert!(body["Err"].is_string());
        let (status, _, _) = post(&path, "POST", "NetworkDriver.Nonsense", "{}");
        assert_eq!(status, 404);
        let big = format!("{{\"NetworkID\": \"{}\"}}", "a".repeat(MAX_BODY as usize));
        let (status, _, body) = post(&path, "POST", "NetworkDriver.DeleteNetwork", &big);
        assert_eq!(status, 413, "{body}");
        assert!(backend.calls().is_empty(), "nothing reached the backend");
        assert_eq!(plugin.stats().refused.load(Ordering::Relaxed), 4);
        // Still serving after all that.
        let (status, _, _) = post(&path, "POST", "NetworkDriver.GetCapabilities", "null");
        assert_eq!(status, 200);
        drop(plugin);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_live_socket_is_refused_a_stale_one_replaced() {
        let path = sock("stale");
        let first = DockerPlugin::serve(&path, Arc::new(MemoryBackend::new())).unwrap();
        let err = DockerPlugin::serve(&path, Arc::new(MemoryBackend::new()))
            .err()
            .expect("a second plugin on a live socket is refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        // A stale socket file (nobody listening) is replaced.
        let stale = UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        let second = DockerPlugin::serve(&path, Arc::new(MemoryBackend::new())).unwrap();
        assert_eq!(post(&path, "POST", "Plugin.Activate", "").0, 200);
        drop(second);
        // Another kind of file is never removed.
        std::fs::write(&path, b"precious").unwrap();
        let err = DockerPlugin::serve(&path, Arc::new(MemoryBackend::new()))
            .err()
            .expect("a regular file is refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn keep_alive_connection_serves_several_calls() {
        let path = sock("keepalive");
        let plugin = DockerPlugin::serve(&path, Arc::new(MemoryBackend::new())).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let one =
            "POST /IpamDriver.GetCapabilities HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\n\r\nnull";
        let last = "POST /Plugin.Activate HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        write!(s, "{one}{last}").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
        assert!(
            text.contains("RequiresMACAddress") && text.contains("Implements"),
            "{text}"
        );
        drop(plugin);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
