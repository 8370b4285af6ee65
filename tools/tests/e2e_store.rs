//! The daemon on its transactional state store, as root: a full disk refuses a change and
//! changes nothing (store, memory and kernel agree after a `kill -9` and a restart); the
//! import of an old vswitchd's `switch.json`; the start-up cross-check of endpoints against
//! IPAM and their real addresses; `kill -9` at random points of a connect/disconnect loop.
//!
//! Each test runs its own daemon in a switch namespace and names its sandboxes
//! `vst<pid>t<N>-…` (see `common`); the full-disk test mounts a small tmpfs as the state dir in
//! the machine's mount namespace (the daemon is a child process and must see it), unmounted by
//! a guard even when the test fails.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tools::daemon::store::{Store, Table, LEGACY_FILE, MIGRATED_FILE, STORE_FILE};
use tools::daemon::{EndpointRecord, SwitchState};

/// A tmpfs mounted on a directory of the test's temp dir; lazily unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "vst-e2e-store",
                &path.to_string_lossy(),
            ],
        );
        assert!(out.status.success(), "mount a tmpfs: {out:?}");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = File::create(&filler).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        let full = loop {
            if let Err(e) = f.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
        // What a 64 KiB write left: fill it byte by byte in larger steps down to one.
        for size in [4096, 512, 1] {
            let small = vec![0u8; size];
            while f.write_all(&small).is_ok() {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = run("umount", &["-l", &self.path.to_string_lossy()]);
        if !out.status.success() {
            eprintln!(
                "warning: could not unmount {}: {out:?}",
                self.path.display()
            );
        }
    }
}

/// `network connect NET SANDBOX --json`, which must succeed: the answer.
fn connect(d: &Daemon, network: &str, sandbox: &str) -> Value {
    d.ctl_json(&["network", "connect", network, sandbox])
}

/// `sandbox ls --json` as (sandbox → [(network, interface, ipv4)]), without the sandboxes
/// whose name starts with `skip`.
fn endpoints(d: &Daemon, skip: &str) -> BTreeMap<String, Vec<(String, String, String)>> {
    let rows = d.ctl_json(&["sandbox", "ls"]);
    let mut out = BTreeMap::new();
    for s in rows.as_array().expect("sandbox ls is a list") {
        let name = s["name"].as_str().unwrap_or("").to_string();
        if name.starts_with(skip) {
            continue;
        }
        let eps = s["endpoints"]
            .as_array()
            .map(|eps| {
                eps.iter()
                    .map(|e| {
                        (
                            e["network"].as_str().unwrap_or("").to_string(),
                            e["interface"].as_str().unwrap_or("").to_string(),
                            e["ipv4"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, eps);
    }
    out
}

/// Names in a `--json` list.
fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What must not change when a request is refused: endpoints, networks, ports, the daemon
/// namespace's interfaces (by name).
fn snapshot(lab: &Lab, skip: &str) -> Value {
    let d = lab.d();
    json!({
        "endpoints": endpoints(d, skip),
        "networks": names(&d.ctl_json(&["network", "ls"])),
        "ports": names(&d.ctl_json(&["port", "list"])),
        "links": ns_link_names(&lab.sw.name).into_iter().collect::<BTreeSet<_>>(),
    })
}

/// The endpoint veths (`vse…`) in the daemon's namespace.
fn endpoint_veths(lab: &Lab) -> BTreeSet<String> {
    ns_link_names(&lab.sw.name)
        .into_iter()
        .filter(|n| n.starts_with("vse"))
        .collect()
}

/// Every endpoint listed is real (its address on its interface), no address is listed twice,
/// and there is one endpoint veth per bridged endpoint.
fn assert_agree(lab: &Lab) {
    let eps = endpoints(lab.d(), "\0");
    let mut seen = BTreeSet::new();
    let mut n = 0;
    for (sb, list) in &eps {
        for (net, ifname, ipv4) in list {
            assert!(seen.insert(ipv4.clone()), "{ipv4} listed twice: {eps:?}");
            assert_eq!(
                ns_ipv4_addrs(sb, ifname),
                std::slice::from_ref(ipv4),
                "{net} endpoint {ifname} of {sb}"
            );
            n += 1;
        }
        if list.is_empty() {
            assert_eq!(ns_link_names(sb), ["lo"], "{sb} has no endpoint");
        }
    }
    assert_eq!(
        endpoint_veths(lab).len(),
        n,
        "one veth per endpoint: {eps:?}"
    );
}

fn kill_9_and_restart(lab: &mut Lab) {
    let status = lab
        .d_mut()
        .signal(libc::SIGKILL, WAIT)
        .expect("vswitchd dies on SIGKILL");
    assert!(!status.success());
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
}

/// With the state dir's disk full, every change is refused with "No space left on device" and
/// changes nothing: removals (`network disconnect`, `sandbox rm`, `network rm`, `port remove`)
/// leave the interfaces and the records; `network connect` and `sandbox create` leave no veth
/// and no namespace. After freeing space and a `kill -9` + restart, store and kernel agree and
/// hold what they held; the refused removals then work and survive another `kill -9`.
#[test]
fn a_full_disk_refuses_changes_and_changes_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::without_daemon();
    let disk = Tmpfs::mount(&lab.dir.path.join("state"), "3m");
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    let a = lab.sandbox("a");
    let b = lab.sandbox("b");
    let c = lab.sandbox("c");
    connect(lab.d(), "bridge", &a);
    connect(lab.d(), "bridge", &b);
    lab.d()
        .ctl_ok(&["network", "create", "n", "--subnet", "10.72.0.0/24"]);
    connect(lab.d(), "n", &b);
    lab.d()
        .ctl_ok(&["network", "create", "m", "--subnet", "10.74.0.0/24"]);
    ip(&[
        "-n",
        &lab.sw.name,
        "link",
        "add",
        "dm0",
        "type",
        "veth",
        "peer",
        "name",
        "dm1",
    ]);
    lab.d().ctl_ok(&["port", "add", "dm0"]);
    let fill_prefix = lab.name("f");
    let before = snapshot(&lab, &fill_prefix);
    let veths = endpoint_veths(&lab);
    assert_eq!(veths.len(), 3);

    let filler = disk.fill();
    // The store file has room of its own: new sandboxes until it is used up too. Each refused
    // create leaves no namespace.
    let mut made = 0;
    loop {
        let name = lab.guard_sandbox(&format!("f{made}"));
        let out = lab.d().ctl(&["sandbox", "create", &name]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("No space left on device"), "{err}");
            assert!(
                !Path::new("/run/netns").join(&name).exists(),
                "a refused sandbox create left its namespace"
            );
            break;
        }
        made += 1;
        assert!(made < 3000, "the store never ran out of room");
    }
    println!("{made} sandboxes fitted in the store's own room");

    let refused: [&[&str]; 6] = [
        &["network", "disconnect", "bridge", &a],
        &["sandbox", "rm", &b],
        &["network", "disconnect", "n", &b],
        &["network", "rm", "m"],
        &["port", "remove", "dm0"],
        &["network", "connect", "bridge", &c],
    ];
    for args in refused {
        let err = lab.d().ctl_err(args);
        assert!(
            err.contains("No space left on device")
                && (err.contains("nothing was changed") || err.contains("the change was undone")),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        snapshot(&lab, &fill_prefix),
        before,
        "a refused change changed something"
    );
    assert_eq!(endpoint_veths(&lab), veths);
    assert!(ns_has_link(&a, "eth0") && ns_has_link(&b, "eth0") && ns_has_link(&b, "eth1"));
    assert_eq!(
        ns_link_names(&c),
        ["lo"],
        "a refused connect left an interface"
    );
    assert!(Path::new("/run/netns").join(&b).exists());

    // Room again; a crash; the restart finds what the daemon had.
    std::fs::remove_file(&filler).expect("free the disk");
    kill_9_and_restart(&mut lab);
    assert_eq!(
        snapshot(&lab, &fill_prefix),
        before,
        "the restart disagrees"
    );
    assert_eq!(endpoint_veths(&lab), veths);
    assert_agree(&lab);

    // Now the refused removals work, and a crash does not bring anything back.
    lab.d().ctl_ok(&["network", "disconnect", "bridge", &a]);
    lab.d().ctl_ok(&["sandbox", "rm", &b]);
    lab.d().ctl_ok(&["network", "rm", "m"]);
    lab.d().ctl_ok(&["network", "rm", "n"]);
    lab.d().ctl_ok(&["port", "remove", "dm0"]);
    connect(lab.d(), "bridge", &c);
    kill_9_and_restart(&mut lab);
    let eps = endpoints(lab.d(), &fill_prefix);
    assert_eq!(eps.get(&a).map(Vec::len), Some(0), "{eps:?}");
    assert!(!eps.contains_key(&b), "{eps:?}");
    assert_eq!(eps.get(&c).map(Vec::len), Some(1), "{eps:?}");
    let nets = names(&lab.d().ctl_json(&["network", "ls"]));
    assert!(!nets.contains("n") && !nets.contains("m"), "{nets:?}");
    assert!(!names(&lab.d().ctl_json(&["port", "list"])).contains("dm0"));
    assert!(!Path::new("/run/netns").join(&b).exists());
    assert_agree(&lab);
    // The sandboxes and the daemon go first, then the tmpfs, then the temp dir holding its
    // mount point (a mounted tmpfs would keep the temp dir from being removed).
    lab.sandboxes.clear();
    drop(lab.daemon.take());
    drop(disk);
    drop(lab);
}

/// A state dir holding the `switch.json` of a vswitchd before the store: the daemon imports it
/// (kept as `switch.json.migrated`), and networks, sandboxes, endpoints and addresses are back
/// and work.
#[test]
fn the_daemon_imports_an_old_switch_json() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.sandbox("a");
    let b = lab.sandbox("b");
    lab.d()
        .ctl_ok(&["network", "create", "blue", "--subnet", "10.73.0.0/24"]);
    let ea = connect(lab.d(), "bridge", &a);
    connect(lab.d(), "blue", &a);
    let eb = connect(lab.d(), "blue", &b);
    let before = snapshot(&lab, "\0");
    let status = lab.d_mut().terminate(WAIT).expect("stops on SIGTERM");
    assert!(status.success(), "{status}");

    // Write the state as the old vswitchd did (its `SwitchState`, one JSON document), and
    // remove the store.
    let dir = lab.d().state_dir.clone();
    let old = {
        let mut store = Store::open(&dir).unwrap();
        let all: tools::daemon::store::Loaded<Value, Value, Value, Value> =
            store.load_all().unwrap();
        let values = |rows: Vec<(String, Value)>| -> Vec<Value> {
            rows.into_iter().map(|(_, v)| v).collect()
        };
        let state: SwitchState = serde_json::from_value(json!({
            "networks": values(all.networks),
            "ports": values(all.ports),
            "sandboxes": values(all.sandboxes),
            "endpoints": values(all.endpoints),
            "ipam": serde_json::to_value(&all.ipam).unwrap(),
        }))
        .expect("the store's records are the old state's");
        serde_json::to_vec_pretty(&state).unwrap()
    };
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with(STORE_FILE) {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    std::fs::write(dir.join(LEGACY_FILE), &old).unwrap();

    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    let log = lab.d().log_text();
    assert!(log.contains("imported"), "the import is not logged:\n{log}");
    assert!(dir.join(STORE_FILE).exists() && dir.join(MIGRATED_FILE).exists());
    assert!(!dir.join(LEGACY_FILE).exists());
    assert_eq!(snapshot(&lab, "\0"), before);
    assert_agree(&lab);
    let ip = |v: &Value| {
        v["ipv4"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let c = lab.sandbox("c");
    ns_ping_until(&b, &ip(&connect(lab.d(), "blue", &c)));
    ns_ping_until(&a, "172.17.0.1");
    ns_ping_until(&a, &ip(&eb));
    assert_eq!(ns_ipv4_addrs(&a, "eth0"), [ea["ipv4"].as_str().unwrap()]);
}

/// Hand-edited endpoints are found at start and fixed deterministically, each fix in the log:
/// a second endpoint with another's address is removed (the one IPAM allocates the address to
/// is kept) with its veth; an endpoint given an address IPAM does not allocate gets it
/// allocated, its old one released, and the address on its interface changed; reconnecting
/// gets an address nobody holds.
#[test]
fn start_up_cross_checks_endpoints_against_ipam_and_the_real_addresses() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.sandbox("a");
    let b = lab.sandbox("b");
    let c = lab.sandbox("c");
    let ea = connect(lab.d(), "bridge", &a);
    connect(lab.d(), "bridge", &b);
    let ec = connect(lab.d(), "bridge", &c);
    let status = lab.d_mut().terminate(WAIT).expect("stops on SIGTERM");
    assert!(status.success(), "{status}");

    let a_ip: std::net::Ipv4Addr = ea["ipv4"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let c_old = ec["ipv4"].as_str().unwrap().to_string();
    let moved: std::net::Ipv4Addr = "172.17.200.7".parse().unwrap();
    {
        let mut store = Store::open(&lab.d().state_dir).unwrap();
        let eps: Vec<(String, EndpointRecord)> = store.load(Table::Endpoints).unwrap();
        store
            .write(|tx| {
                for (id, mut ep) in eps {
                    if ep.sandbox == b {
                        ep.ip = Some(a_ip); // a duplicate of a's address
                    } else if ep.sandbox == c {
                        ep.ip = Some(moved); // an address IPAM never gave out
                    } else {
                        continue;
                    }
                    tx.put(Table::Endpoints, &id, &ep)?;
                }
                Ok::<_, tools::daemon::store::StoreError>(())
            })
            .unwrap();
    }
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    let log = lab.d().log_text();
    let repaired: Vec<&str> = log.lines().filter(|l| l.contains("repaired")).collect();
    let said = |what: &[&str]| repaired.iter().any(|l| what.iter().all(|w| l.contains(w)));
    assert!(
        said(&[&b, "also held", &a_ip.to_string(), "removed this endpoint"]),
        "{repaired:#?}"
    );
    assert!(
        said(&[&c, "172.17.200.7", "not allocated"]),
        "{repaired:#?}"
    );
    assert!(
        said(&[c_old.split('/').next().unwrap(), "released"]),
        "{repaired:#?}"
    );
    assert!(said(&[&c, "172.17.200.7", "put it back"]), "{repaired:#?}");
    let eps = endpoints(lab.d(), "\0");
    assert_eq!(
        eps[&a],
        [(
            "bridge".into(),
            "eth0".into(),
            ea["ipv4"].as_str().unwrap().into()
        )]
    );
    assert!(eps[&b].is_empty(), "{eps:?}");
    assert_eq!(eps[&c][0].2, "172.17.200.7/16");
    assert_agree(&lab);
    // Reconnected, b gets an address nobody holds.
    let eb = connect(lab.d(), "bridge", &b);
    let got = eb["ipv4"].as_str().unwrap();
    assert_ne!(got, ea["ipv4"].as_str().unwrap());
    assert_ne!(got, "172.17.200.7/16");
    assert_agree(&lab);
    // The fixes were saved: a restart repairs nothing more.
    kill_9_and_restart(&mut lab);
    let log = lab.d().log_text();
    assert!(!log.contains("repaired"), "{log}");
    assert_agree(&lab);
}

/// `kill -9` at random points of a connect/disconnect loop, several rounds: what was answered
/// holds after the restart (an answered connect is there with its address, an answered
/// disconnect stays done), no address is held twice, store and kernel agree, and new connects
/// get addresses nobody holds.
#[test]
fn kill_9_during_a_connect_disconnect_loop_loses_nothing() {
    if !root_or_skip() {
        return;
    }
    const SANDBOXES: usize = 6;
    const ROUNDS: usize = 4;
    let mut lab = Lab::new();
    let sbs: Vec<String> = (0..SANDBOXES)
        .map(|i| lab.sandbox(&format!("s{i}")))
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let mut seed = now.map_or(1, |d| d.as_nanos() as u64) ^ ((std::process::id() as u64) << 20);
    println!("seed {seed}");
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // What each sandbox was last told: Some(address) connected, None disconnected.
    let mut told: BTreeMap<String, Option<String>> =
        sbs.iter().map(|s| (s.clone(), None)).collect();
    for round in 0..ROUNDS {
        let socket = lab.d().socket.clone();
        // The kill comes once a random number of requests were answered, while the next one is
        // somewhere in its course.
        let kill_after = 1 + (rand() % 8) as usize;
        let (answered_tx, answered) = std::sync::mpsc::channel::<()>();
        // The loop runs in a thread, one request at a time, until the daemon dies.
        let plan: Vec<usize> = (0..200)
            .map(|_| (rand() % SANDBOXES as u64) as usize)
            .collect();
        let sbs2 = sbs.clone();
        let mut state = told.clone();
        let worker = std::thread::spawn(move || {
            for i in plan {
                let sb = &sbs2[i];
                let connected = state[sb].is_some();
                let args: Vec<&str> = if connected {
                    vec!["network", "disconnect", "bridge", sb]
                } else {
                    vec!["--json", "network", "connect", "bridge", sb]
                };
                let out = std::process::Command::new(VSWITCHCTL)
                    .arg("--socket")
                    .arg(&socket)
                    .args(&args)
                    .output()
                    .expect("run vswitchctl");
                if !out.status.success() {
                    // The daemon died under it (or refused): the outcome is unknown.
                    return (state, Some(sb.clone()));
                }
                let v = if connected {
                    None
                } else {
                    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
                    Some(v["ipv4"].as_str().expect("an address").to_string())
                };
                state.insert(sb.clone(), v);
                let _ = answered_tx.send(());
            }
            (state, None)
        });
        for _ in 0..kill_after {
            answered
                .recv_timeout(WAIT)
                .expect("the loop's requests are answered");
        }
        let status = lab
            .d_mut()
            .signal(libc::SIGKILL, WAIT)
            .expect("vswitchd dies on SIGKILL");
        assert!(!status.success());
        let (state, unknown) = worker.join().expect("the loop thread");
        lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
        let eps = endpoints(lab.d(), "\0");
        for (sb, want) in &state {
            let have = eps[sb].first().map(|e| e.2.clone());
            if Some(sb) == unknown.as_ref() {
                // In flight at the kill: either outcome, but nothing half-done.
                if let (Some(h), Some(w)) = (&have, want) {
                    assert_eq!(h, w, "round {round}: {sb}");
                }
                continue;
            }
            assert_eq!(
                &have, want,
                "round {round}: {sb} lost what it was told: {eps:?}"
            );
        }
        assert_agree(&lab);
        told = eps
            .iter()
            .map(|(sb, list)| (sb.clone(), list.first().map(|e| e.2.clone())))
            .collect();
    }
    // New connects get addresses nobody holds.
    let held: BTreeSet<String> = told.values().flatten().cloned().collect();
    for sb in told
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(s, _)| s.clone())
    {
        let got = connect(lab.d(), "bridge", &sb)["ipv4"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!held.contains(&got), "{got} handed out twice");
    }
    assert_agree(&lab);
}
