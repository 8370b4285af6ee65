//! `vswitchd --state-check` on a good, a missing and a damaged store: summary and exit 0, or the reason and exit 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tools::daemon::store::{Store, Table, GOOD_COPY, STORE_FILE};

/// A state dir removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn state_check(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vswitchd"))
        .arg("--state-check")
        .arg("--state-dir")
        .arg(dir)
        .output()
        .expect("run vswitchd --state-check")
}

#[test]
fn state_check_summarises_a_good_store_and_refuses_a_damaged_one() {
    let dir = TempDir(std::env::temp_dir().join(format!("vst-statecheck-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);

    let out = state_check(&dir.0);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no store yet"));

    let mut store = Store::open(&dir.0).unwrap();
    store
        .write(|tx| {
            tx.put(
                Table::Networks,
                "front",
                &serde_json::json!({"name": "front"}),
            )?;
            tx.put(Table::Endpoints, "e1", &serde_json::json!({"id": "e1"}))
        })
        .unwrap();
    drop(store);
    drop(Store::start(&dir.0).unwrap());
    let out = state_check(&dir.0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for line in [
        "schema version: 1",
        "networks: 1",
        "endpoints: 1",
        "ports: 0",
        GOOD_COPY,
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }

    // While another process holds the store, the check says so instead of reading under it.
    let held = Store::open(&dir.0).unwrap();
    let out = state_check(&dir.0);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    drop(held);

    std::fs::write(dir.0.join(STORE_FILE), b"this is not a database").unwrap();
    let out = state_check(&dir.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("cannot be read"), "{stderr}");
    assert!(
        stderr.contains(&format!("cp {}", dir.0.join(GOOD_COPY).display())),
        "{stderr}"
    );
}
