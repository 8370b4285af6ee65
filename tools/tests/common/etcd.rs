//! A real etcd for the cluster tests: Debian's `etcd` in a network namespace of the test's own,
//! serving on that namespace's loopback, its data in a temporary directory.
//!
//! The test's client code runs inside the same namespace ([`EtcdLab::run`] enters it on a fresh
//! thread; threads spawned from there inherit it), so every packet stays in the test's namespace.
//! The [`EtcdLab`] guard kills etcd, deletes the namespace and removes the data directory when
//! dropped, also when the test fails.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{root_or_skip, wait_for, Netns};

/// The client URL etcd serves inside its namespace.
pub const CLIENT_URL: &str = "http://127.0.0.1:2379";
/// The peer URL (a one-member cluster).
const PEER_URL: &str = "http://127.0.0.1:2380";
/// How long etcd may take to answer after it was started.
const START_WAIT: Duration = Duration::from_secs(30);

/// True when the test can run: root and the `etcd` binary. Otherwise prints why and returns
/// false, unless `CI=true`, where a missing piece fails the test.
pub fn etcd_or_skip() -> bool {
    if !root_or_skip() {
        return false;
    }
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs etcd (apt-get install etcd-server), and CI=true requires it");
    }
    println!("skipped: needs etcd (apt-get install etcd-server)");
    false
}

/// One etcd member in its own namespace; killed, and everything it used removed, on drop.
pub struct EtcdLab {
    /// The running etcd, if started.
    child: Option<Child>,
    /// The data directory (and etcd's log).
    dir: PathBuf,
    /// The namespace (dropped after the child is gone).
    ns: Netns,
    /// Where etcd serves clients.
    client_url: String,
}

impl EtcdLab {
    /// Makes the namespace and the data directory and starts etcd, waiting until it answers.
    pub fn start() -> EtcdLab {
        EtcdLab::start_on(|_| None)
    }

    /// Like [`EtcdLab::start`], with `setup` run on the new namespace first: it may give the
    /// namespace an interface and return the address etcd serves clients on (besides loopback),
    /// e.g. on a test's underlay so daemons in other namespaces reach it.
    pub fn start_on(setup: impl FnOnce(&Netns) -> Option<String>) -> EtcdLab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vsc{}e{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Netns::new(name.clone());
        super::ip(&["-n", &name, "link", "set", "lo", "up"]);
        let client_url = match setup(&ns) {
            Some(addr) => format!("http://{addr}:2379"),
            None => CLIENT_URL.to_string(),
        };
        let dir = std::env::temp_dir().join(format!("{name}-etcd"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create etcd's temporary directory");
        let mut lab = EtcdLab {
            child: None,
            dir,
            ns,
            client_url,
        };
        lab.restart();
        lab
    }

    /// The endpoint list clients use.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.client_url.clone()]
    }

    /// Runs `f` inside etcd's namespace (on a fresh thread) and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        tools::netns::in_netns(&self.ns.open(), f).expect("enter etcd's namespace")
    }

    /// Kills etcd with SIGKILL (its data stays) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd (again) on the same data directory and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let log = fs::File::create(self.dir.join("etcd.log")).expect("create etcd's log");
        let data = self.dir.join("data");
        let listen = if self.client_url == CLIENT_URL {
            CLIENT_URL.to_string()
        } else {
            format!("{},{CLIENT_URL}", self.client_url)
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "etcd"])
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", PEER_URL])
            .args(["--initial-advertise-peer-urls", PEER_URL])
            .args(["--initial-cluster", &format!("test={PEER_URL}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let etcd = tools::daemon::cluster::Etcd::new(
            &self.endpoints(),
            Duration::from_millis(500),
            Duration::from_secs(5),
        )
        .expect("etcd client");
        self.run(|| {
            wait_for("etcd to answer", START_WAIT, || {
                etcd.range("health-probe").ok()
            })
        });
    }

    /// Every key under `prefix` with its value as text, read from inside etcd's namespace.
    pub fn keys(&self, prefix: &str) -> Vec<(String, String)> {
        let etcd = tools::daemon::cluster::Etcd::new(
            &self.endpoints(),
            Duration::from_secs(2),
            Duration::from_secs(5),
        )
        .expect("etcd client");
        let read = self
            .run(|| etcd.range_prefix(prefix))
            .unwrap_or_else(|e| panic!("reading etcd: {e}"));
        read.kvs
            .into_iter()
            .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
            .collect()
    }

    /// etcd's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdLab {
    fn drop(&mut self) {
        self.kill();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
        // The namespace goes when `ns` is dropped, after this.
    }
}
