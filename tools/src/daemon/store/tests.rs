//! Tests of the store: transactions, IPAM rows, migration from `switch.json`, corruption, a full disk.

use super::*;
use crate::daemon::SwitchState;
use ipam::{IpamDriver, PoolRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The state file today's vswitchd wrote (networks bridge/host/none/front/back/ov, two
/// sandboxes, four endpoints, a TAP with a VLAN, a re-connect that moved the IPAM cursor).
const FIXTURE: &str = include_str!("testdata/switch-v0.json");

/// A directory removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vst-store-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    name: String,
    n: u32,
}

fn rec(name: &str, n: u32) -> Rec {
    Rec {
        name: name.into(),
        n,
    }
}

fn keys<T>(rows: &[(String, T)]) -> Vec<&str> {
    rows.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn open_creates_a_0600_store_with_its_schema_version() {
    let dir = TempDir::new("open");
    let mut store = Store::open(&dir.0).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.0.join(STORE_FILE)), 0o600);
    assert_eq!(mode(&dir.0), 0o700);
    assert_eq!(store.meta("schema_version").unwrap().as_deref(), Some("1"));
    for table in Table::ALL {
        assert!(store.load::<Rec>(table).unwrap().is_empty());
    }
    assert_eq!(store.load_ipam().unwrap(), ipam::DefaultIpam::new());
    // Nothing but the store in the directory: no temporary file left.
    let names: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(STORE_FILE)]);
}

#[test]
fn writes_are_incremental_transactions_and_a_failed_one_keeps_nothing() {
    let dir = TempDir::new("tx");
    let mut store = Store::open(&dir.0).unwrap();
    store
        .write(|tx| {
            tx.put(Table::Endpoints, "e1", &rec("e1", 1))?;
            tx.put(Table::Endpoints, "e2", &rec("e2", 2))?;
            tx.put(Table::Ports, "vse1", &rec("vse1", 1))?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let deleted = store
        .write(|tx| {
            let gone = tx.delete(Table::Ports, "vse1")?;
            let absent = tx.delete(Table::Ports, "nope")?;
            // A transaction sees its own writes.
            tx.put(Table::Endpoints, "e2", &rec("e2", 22))?;
            assert_eq!(tx.get::<Rec>(Table::Endpoints, "e2")?, Some(rec("e2", 22)));
            Ok::<_, StoreError>((gone, absent))
        })
        .unwrap();
    assert_eq!(deleted, (true, false));
    let before: Vec<(String, Rec)> = store.load(Table::Endpoints).unwrap();
    assert_eq!(keys(&before), ["e1", "e2"]);
    assert_eq!(before[1].1.n, 22);
    assert!(store.load::<Rec>(Table::Ports).unwrap().is_empty());

    // The closure fails after writing: none of it is kept.
    let err = store
        .write(|tx| {
            tx.put(Table::Endpoints, "e3", &rec("e3", 3))?;
            tx.delete(Table::Endpoints, "e1")?;
            Err::<(), _>(StoreError::Encode {
                table: "endpoints",
                key: "e3".into(),
                detail: "the caller changed its mind".into(),
            })
        })
        .unwrap_err();
    assert!(err.to_string().contains("changed its mind"), "{err}");
    assert_eq!(store.load::<Rec>(Table::Endpoints).unwrap(), before);

    // A record of the wrong shape is an error naming it, not a panic or a silent skip.
    store
        .write(|tx| tx.put(Table::Sandboxes, "odd", &json!({"name": 5})))
        .unwrap();
    let err = store.load::<Rec>(Table::Sandboxes).unwrap_err();
    assert!(err.to_string().contains("sandboxes/\"odd\""), "{err}");
    assert!(err.to_string().contains("--state-check"), "{err}");

    // Survives a close and reopen.
    drop(store);
    let mut store = Store::open(&dir.0).unwrap();
    assert_eq!(store.load::<Rec>(Table::Endpoints).unwrap(), before);
}

#[test]
fn a_second_open_is_refused_while_the_store_is_in_use() {
    let dir = TempDir::new("inuse");
    let _store = Store::open(&dir.0).unwrap();
    let err = Store::open(&dir.0).err().unwrap();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn ipam_is_stored_as_rows_and_rebuilt_exactly() {
    let dir = TempDir::new("ipam");
    let mut store = Store::open(&dir.0).unwrap();
    let mut ipam = ipam::DefaultIpam::new();
    ipam.track_changes();
    let pool = ipam.request_pool(PoolRequest::default()).unwrap();
    let small = ipam
        .request_pool(PoolRequest {
            subnet: Some("10.9.0.0/29".parse().unwrap()),
            ..PoolRequest::default()
        })
        .unwrap();
    store
        .write(|tx| tx.apply_ipam(&ipam.take_changes()))
        .unwrap();
    let mut first = None;
    for i in 0..300 {
        let ip = ipam
            .request_address(&pool, &format!("ep{i}"), None)
            .unwrap();
        first.get_or_insert(ip);
        // One connect: the allocation and its cursor, nothing else.
        let changes = ipam.take_changes();
        assert_eq!(changes.len(), 2);
        store.write(|tx| tx.apply_ipam(&changes)).unwrap();
    }
    ipam.release_address(&pool, first.unwrap()).unwrap();
    ipam.request_address(&small, "s", None).unwrap();
    store
        .write(|tx| tx.apply_ipam(&ipam.take_changes()))
        .unwrap();
    let mut loaded = store.load_ipam().unwrap();
    assert_eq!(loaded, ipam);
    // The no-quick-reuse cursor came back too: both hand out the same next address.
    let next = ipam.request_address(&pool, "n", None).unwrap();
    assert_eq!(loaded.request_address(&pool, "n", None), Ok(next));
    assert_ne!(Some(next), first);

    ipam.take_changes();
    ipam.release_pool(&small).unwrap();
    store
        .write(|tx| tx.apply_ipam(&ipam.take_changes()))
        .unwrap();
    let report = check_state_dir(&dir.0).err();
    assert!(matches!(report, Some(StoreError::InUse { .. })));
    drop(store);
    let report = check_state_dir(&dir.0).unwrap();
    assert!(report.counts.contains(&("ipam_pools", 1)), "{report}");
    assert!(report.counts.contains(&("ipam_addresses", 299)), "{report}");
}

#[test]
fn ipam_rows_that_break_the_rules_are_refused() {
    let dir = TempDir::new("ipambad");
    let mut store = Store::open(&dir.0).unwrap();
    let mut ipam = ipam::DefaultIpam::new();
    ipam.track_changes();
    let pool = ipam.request_pool(PoolRequest::default()).unwrap();
    store
        .write(|tx| tx.apply_ipam(&ipam.take_changes()))
        .unwrap();
    // The gateway handed out, as a hand edit might do.
    store
        .write(|tx| {
            tx.apply_ipam(&[ipam::IpamChange::Allocated {
                pool: pool.clone(),
                address: "172.17.0.1".parse().unwrap(),
                owner: "x".into(),
            }])
        })
        .unwrap();
    let err = store.load_ipam().unwrap_err();
    assert!(err.to_string().contains("gateway"), "{err}");
}

/// The fixture's records by key, as the daemon keys them.
fn by_key(list: &[Value], key: &str) -> BTreeMap<String, Value> {
    list.iter()
        .map(|v| (v[key].as_str().unwrap().to_string(), v.clone()))
        .collect()
}

#[test]
fn migrates_todays_switch_json_in_one_go_and_keeps_the_old_file() {
    // The fixture is today's format: the daemon's own type reads it.
    let old: SwitchState = serde_json::from_str(FIXTURE).unwrap();
    assert_eq!(old.endpoints.len(), 4);
    let dir = TempDir::new("migrate");
    fs::create_dir_all(&dir.0).unwrap();
    fs::write(dir.0.join(LEGACY_FILE), FIXTURE).unwrap();

    let (mut store, notes) = Store::start(&dir.0).unwrap();
    assert!(!dir.0.join(LEGACY_FILE).exists());
    assert_eq!(
        fs::read_to_string(dir.0.join(MIGRATED_FILE)).unwrap(),
        FIXTURE
    );
    assert!(dir.0.join(GOOD_COPY).exists());
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0]
            .contains("6 networks, 9 ports, 2 sandboxes, 4 endpoints, 4 IPAM pools, 4 addresses"),
        "{notes:?}"
    );
    assert_eq!(
        store.meta("migrated_from").unwrap().as_deref(),
        Some(LEGACY_FILE)
    );

    let loaded: Loaded<Value, Value, Value, Value> = store.load_all().unwrap();
    let doc: Value = serde_json::from_str(FIXTURE).unwrap();
    let rows = |l: &[(String, Value)]| -> BTreeMap<String, Value> { l.iter().cloned().collect() };
    assert_eq!(
        rows(&loaded.networks),
        by_key(doc["networks"].as_array().unwrap(), "name")
    );
    assert_eq!(
        rows(&loaded.ports),
        by_key(doc["ports"].as_array().unwrap(), "name")
    );
    assert_eq!(
        rows(&loaded.sandboxes),
        by_key(doc["sandboxes"].as_array().unwrap(), "name")
    );
    assert_eq!(
        rows(&loaded.endpoints),
        by_key(doc["endpoints"].as_array().unwrap(), "id")
    );
    assert_eq!(loaded.ipam, old.ipam);

    // What the store holds reads back as the daemon's state, equal to the old one.
    let values = |l: Vec<(String, Value)>| l.into_iter().map(|(_, v)| v).collect::<Vec<_>>();
    let mut endpoints = values(loaded.endpoints);
    let order: Vec<&str> = old.endpoints.iter().map(|e| e.id.as_str()).collect();
    endpoints.sort_by_key(|e| order.iter().position(|id| Some(*id) == e["id"].as_str()));
    let new: SwitchState = serde_json::from_value(json!({
        "networks": values(loaded.networks),
        "ports": values(loaded.ports),
        "sandboxes": values(loaded.sandboxes),
        "endpoints": endpoints,
        "ipam": loaded.ipam,
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_value(&new).unwrap(),
        serde_json::to_value(&old).unwrap()
    );

    // A second start imports nothing again and finds the same state.
    drop(store);
    let (mut store, notes) = Store::start(&dir.0).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let again: Loaded<Value, Value, Value, Value> = store.load_all().unwrap();
    assert_eq!(again.endpoints.len(), 4);
    assert_eq!(again.ipam, old.ipam);
}

#[test]
fn an_interrupted_migration_is_finished_and_a_foreign_switch_json_refused() {
    let dir = TempDir::new("migrate2");
    fs::create_dir_all(&dir.0).unwrap();
    fs::write(dir.0.join(LEGACY_FILE), FIXTURE).unwrap();
    let (store, _) = Store::start(&dir.0).unwrap();
    drop(store);
    // A crash between the store's rename and the old file's rename.
    fs::rename(dir.0.join(MIGRATED_FILE), dir.0.join(LEGACY_FILE)).unwrap();
    let (store, notes) = Store::start(&dir.0).unwrap();
    assert!(notes[0].contains("finished the import"), "{notes:?}");
    assert!(!dir.0.join(LEGACY_FILE).exists());
    drop(store);
    // Another switch.json (a downgrade's) next to the store is refused, not ignored.
    fs::write(dir.0.join(LEGACY_FILE), r#"{"networks":[],"ports":[]}"#).unwrap();
    let err = Store::start(&dir.0).err().unwrap();
    assert!(err.to_string().contains("move one of them away"), "{err}");
    assert!(dir.0.join(LEGACY_FILE).exists());
}

#[test]
fn a_bad_switch_json_stops_the_start_and_changes_nothing() {
    for (bad, expect) in [
        ("{not json", "not valid JSON"),
        (r#"{"networks": 5}"#, "`networks` is not a list"),
        (
            r#"{"networks": [{"id": "x"}]}"#,
            "networks[0] has no `name`",
        ),
        (
            r#"{"endpoints": [{"id": "a"}, {"id": "a"}]}"#,
            "endpoints lists \"a\" twice",
        ),
        (
            r#"{"ipam": {"pools": [{"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "ip_range": null, "allocated": {"10.0.0.1": "x"}}]}}"#,
            "gateway",
        ),
    ] {
        let dir = TempDir::new("badjson");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(dir.0.join(LEGACY_FILE), bad).unwrap();
        let err = Store::start(&dir.0).err().unwrap();
        assert!(err.to_string().contains(expect), "{bad}: {err}");
        assert!(err.to_string().contains("nothing was changed"), "{err}");
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(LEGACY_FILE)], "{bad}");
    }
}

/// A store with some records, closed after a clean start (so it has a good copy).
fn good_store(dir: &Path) -> Vec<(String, Rec)> {
    let mut store = Store::open(dir).unwrap();
    store
        .write(|tx| {
            for i in 0..50 {
                tx.put(Table::Endpoints, &format!("ep{i:03}"), &rec("x", i))?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    drop(store);
    let (mut store, _) = Store::start(dir).unwrap();
    store.load(Table::Endpoints).unwrap()
}

#[test]
fn a_corrupt_store_refuses_to_start_with_a_way_out_that_works() {
    let dir = TempDir::new("corrupt");
    let path = dir.0.join(STORE_FILE);
    let records = good_store(&dir.0);
    assert_eq!(records.len(), 50);
    let len = fs::metadata(&path).unwrap().len();

    type Damage = fn(&Path, u64);
    let cases: [(&str, Damage); 3] = [
        ("truncated", |path, len| {
            let f = OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(len / 2).unwrap();
        }),
        ("garbage", |path, _| {
            fs::write(path, vec![0x5a; 64 * 1024]).unwrap()
        }),
        ("empty", |path, _| fs::write(path, b"").unwrap()),
    ];
    for (what, damage) in cases {
        damage(&path, len);
        let err = Store::start(&dir.0)
            .err()
            .unwrap_or_else(|| panic!("{what}: started"));
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::Unreadable { .. }),
            "{what}: {msg}"
        );
        assert!(msg.contains("cannot be read"), "{what}: {msg}");
        assert!(
            msg.contains("vswitchd --state-check --state-dir"),
            "{what}: {msg}"
        );
        let restore = format!("cp {} {}", dir.0.join(GOOD_COPY).display(), path.display());
        assert!(msg.contains(&restore), "{what}: {msg}");
        assert!(check_state_dir(&dir.0).is_err(), "{what}");
        // The damaged file is left as it was, for inspection: not re-initialised.
        assert!(Store::open(&dir.0).is_err(), "{what}");

        // The way out the message gives: keep the bad file, restore the good copy.
        fs::rename(&path, dir.0.join("state.redb.bad")).unwrap();
        fs::copy(dir.0.join(GOOD_COPY), &path).unwrap();
        let (mut store, _) = Store::start(&dir.0).unwrap();
        assert_eq!(
            store.load::<Rec>(Table::Endpoints).unwrap(),
            records,
            "{what}"
        );
    }
}

#[test]
fn a_store_that_is_not_ours_or_newer_is_refused() {
    let dir = TempDir::new("schema");
    drop(Store::open(&dir.0).unwrap());
    let path = dir.0.join(STORE_FILE);
    let set = |value: Option<&str>| {
        let db = Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx.open_table(META).unwrap();
            match value {
                Some(v) => meta.insert("schema_version", v).map(drop).unwrap(),
                None => meta.remove("schema_version").map(drop).unwrap(),
            }
        }
        tx.commit().unwrap();
    };
    set(Some("2"));
    let err = Store::open(&dir.0).err().unwrap();
    assert!(matches!(err, StoreError::Schema { found: 2, .. }), "{err}");
    set(None);
    let err = Store::open(&dir.0).err().unwrap();
    assert!(
        err.to_string().contains("not a vswitch state store"),
        "{err}"
    );
}

#[test]
fn state_check_reports_counts_and_refuses_a_bad_store() {
    let dir = TempDir::new("check");
    let none = check_state_dir(&dir.0).unwrap();
    assert!(!none.exists);
    assert!(none.to_string().contains("empty state"), "{none}");
    fs::create_dir_all(&dir.0).unwrap();
    fs::write(dir.0.join(LEGACY_FILE), FIXTURE).unwrap();
    let pending = check_state_dir(&dir.0).unwrap();
    assert!(
        pending.to_string().contains("will be imported"),
        "{pending}"
    );

    drop(Store::start(&dir.0).unwrap());
    let report = check_state_dir(&dir.0).unwrap();
    assert_eq!(report.schema_version, 1);
    assert_eq!(
        report.counts,
        vec![
            ("networks", 6),
            ("ports", 9),
            ("sandboxes", 2),
            ("endpoints", 4),
            ("ipam_pools", 4),
            ("ipam_addresses", 4)
        ]
    );
    let text = report.to_string();
    assert!(
        text.contains("endpoints: 4") && text.contains("good copy: "),
        "{text}"
    );

    let path = dir.0.join(STORE_FILE);
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let err = check_state_dir(&dir.0).unwrap_err();
    assert!(err.to_string().contains("cannot be read"), "{err}");
}

/// Runs `body` as root on a thread of its own mount namespace, with a tmpfs of `size` mounted
/// on a fresh directory (unmounted and removed by a guard); without root it skips (fails on CI).
fn with_small_tmpfs(size: &str, body: impl FnOnce(&Path) + Send) {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs root, and CI=true requires it to run");
        }
        println!("skipped: needs root");
        return;
    }
    struct Mounted(TempDir);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0 .0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: only the mount namespace (and with it the filesystem attributes) of this
            // thread is unshared; no file descriptor table is, so fds stay valid everywhere.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                .expect("unshare the mount namespace");
            // Mounts made here must not propagate to the machine's namespace.
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            )
            .expect("make / private in the test's mount namespace");
            let dir = TempDir::new("tmpfs");
            fs::create_dir_all(&dir.0).unwrap();
            let data = std::ffi::CString::new(format!("size={size},mode=0700")).unwrap();
            rustix::mount::mount(
                "vst-store-test",
                &dir.0,
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                data.as_c_str(),
            )
            .expect("mount a tmpfs");
            let mounted = Mounted(dir);
            body(&mounted.0 .0);
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}

#[test]
fn a_full_disk_fails_the_write_and_loses_nothing() {
    with_small_tmpfs("2m", |disk| {
        let dir = disk.join("state");
        let mut store = Store::open(&dir).unwrap();
        let mut ipam = ipam::DefaultIpam::new();
        ipam.track_changes();
        let pool = ipam.request_pool(PoolRequest::default()).unwrap();
        store
            .write(|tx| {
                for i in 0..20 {
                    tx.put(Table::Endpoints, &format!("ep{i:02}"), &rec("x", i))?;
                    ipam.request_address(&pool, &format!("ep{i:02}"), None)
                        .map_err(|e| StoreError::Encode {
                            table: "ipam",
                            key: e.to_string(),
                            detail: String::new(),
                        })?;
                }
                tx.apply_ipam(&ipam.take_changes())
            })
            .unwrap();
        let before: Vec<(String, Rec)> = store.load(Table::Endpoints).unwrap();
        let ipam_before = store.load_ipam().unwrap();

        // Fill the disk.
        let filler = disk.join("filler");
        let mut f = File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let full = loop {
            if let Err(e) = io::Write::write_all(&mut f, &chunk) {
                break e;
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
        drop(f);

        // A change too big for what is left: refused, with the reason.
        let big = "y".repeat(512 * 1024);
        let err = store
            .write(|tx| {
                tx.put(Table::Endpoints, "ep99", &big)?;
                tx.delete(Table::Endpoints, "ep00")?;
                Ok::<_, StoreError>(())
            })
            .unwrap_err();
        assert!(err.is_no_space(), "{err:?}");
        assert!(err.to_string().contains("No space left on device"), "{err}");

        // Nothing already stored is lost, nothing of the failed change is kept: as seen now,
        // and after a fresh open with the full integrity check.
        match store.load::<Rec>(Table::Endpoints) {
            Ok(now) => assert_eq!(now, before),
            Err(e) => assert!(e.is_no_space(), "reading on a full disk: {e}"),
        }
        fs::remove_file(&filler).unwrap();
        assert_eq!(store.load::<Rec>(Table::Endpoints).unwrap(), before);
        drop(store);
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load::<Rec>(Table::Endpoints).unwrap(), before);
        assert_eq!(store.load_ipam().unwrap(), ipam_before);
        // With room again, writes work.
        store
            .write(|tx| tx.put(Table::Endpoints, "ep99", &rec("z", 99)))
            .unwrap();
        assert_eq!(store.load::<Rec>(Table::Endpoints).unwrap().len(), 21);
    });
}

/// The environment variable that turns [`crash_writer_child`] into the writer of [`kill_9_during_writes_loses_nothing_acknowledged`].
const CRASH_DIR: &str = "VST_STORE_CRASH_DIR";

/// In a child process only (with `VST_STORE_CRASH_DIR` set): connects endpoints one transaction
/// at a time, printing `acked N` once each commit returned, until it is killed.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let mut store = Store::open(Path::new(&dir)).unwrap();
    let mut ipam = ipam::DefaultIpam::new();
    ipam.track_changes();
    let pool = ipam.request_pool(PoolRequest::default()).unwrap();
    store
        .write(|tx| tx.apply_ipam(&ipam.take_changes()))
        .unwrap();
    for i in 0u32.. {
        let key = format!("ep{i:06}");
        ipam.request_address(&pool, &key, None).unwrap();
        let changes = ipam.take_changes();
        store
            .write(|tx| {
                tx.put(Table::Endpoints, &key, &rec(&key, i))?;
                tx.put(Table::Ports, &key, &rec(&key, i))?;
                tx.apply_ipam(&changes)
            })
            .unwrap();
        println!("acked {i}");
    }
}

#[test]
fn kill_9_during_writes_loses_nothing_acknowledged() {
    use std::io::BufRead;
    let dir = TempDir::new("kill9");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "daemon::store::tests::crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR, &dir.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Kill it at a point that depends on the run: after 40 to 79 acknowledged commits.
    let stop = 40 + std::process::id() % 40;
    let mut acked = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("acked ") {
            let n: u32 = n.trim().parse().unwrap();
            acked = Some(n);
            if n >= stop {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    let acked = acked.expect("the writer acknowledged commits before it was killed");

    let (mut store, _) = Store::start(&dir.0).unwrap();
    let endpoints: Vec<(String, Rec)> = store.load(Table::Endpoints).unwrap();
    let ports: Vec<(String, Rec)> = store.load(Table::Ports).unwrap();
    let ipam = store.load_ipam().unwrap();
    // Every acknowledged commit is there (one more may have committed before its line was read).
    let n = endpoints.len() as u32;
    assert!(
        n == acked + 1 || n == acked + 2,
        "acked {acked}, stored {n}"
    );
    // All three tables agree: each commit was all or nothing.
    assert_eq!(ports.len(), endpoints.len());
    let (_, pool) = ipam.pools().next().unwrap();
    assert_eq!(pool.allocated_count(), endpoints.len());
    for (i, (key, r)) in endpoints.iter().enumerate() {
        assert_eq!(key, &format!("ep{i:06}"));
        assert_eq!(r.n, i as u32);
    }
}
