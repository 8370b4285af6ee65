//! Test peers inside namespaces: a TCP or UDP server that answers each client with the client's
//! address as it saw it (what NAT tests look at), and the clients that ask it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Runs `f` on a thread inside the namespace at `path`.
pub fn in_ns_at<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    let ns = tools::netns::open_netns(path).expect("open a test namespace");
    tools::netns::in_netns(&ns, f).expect("enter a test namespace")
}

/// A server whose socket lives in a namespace: each TCP connection gets one line, each UDP
/// datagram one answer, holding the peer's IP address. Stops when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// The TCP server, bound to `addr` in the namespace at `ns`.
    pub fn start(ns: &Path, addr: SocketAddr) -> Server {
        let listener = in_ns_at(ns, || TcpListener::bind(addr)).expect("bind the test server");
        listener.set_nonblocking(true).unwrap();
        Server::serve(move || match listener.accept() {
            Ok((mut conn, peer)) => {
                let _ = writeln!(conn, "{}", peer.ip());
            }
            // Polls the stop flag; no test waits on this pause.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        })
    }

    /// The UDP twin: each datagram is answered with the sender's IP address.
    pub fn start_udp(ns: &Path, addr: SocketAddr) -> Server {
        let sock = in_ns_at(ns, || UdpSocket::bind(addr)).expect("bind the UDP test server");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 64];
        Server::serve(move || {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(peer.ip().to_string().as_bytes(), peer);
            }
        })
    }

    /// Runs `step` on a thread until the server is dropped.
    fn serve(mut step: impl FnMut() + Send + 'static) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                step();
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from the namespace at `ns` to `addr` (within `connect`) and returns the address the
/// server saw (read within `read`), or the error.
pub fn fetch(
    ns: &Path,
    addr: SocketAddr,
    connect: Duration,
    read: Duration,
) -> Result<String, String> {
    in_ns_at(ns, || {
        let conn = TcpStream::connect_timeout(&addr, connect).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(read))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(conn)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    })
}

/// Sends datagrams from the namespace at `ns` to `addr` until one is answered (ten tries, each
/// waiting `within / 10`): the address the server saw.
pub fn fetch_udp(ns: &Path, addr: SocketAddr, within: Duration) -> Result<String, String> {
    in_ns_at(ns, || {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(within / 10))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            sock.send_to(b"?", addr).map_err(|e| e.to_string())?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err(format!("no answer from {addr}/udp"))
    })
}
