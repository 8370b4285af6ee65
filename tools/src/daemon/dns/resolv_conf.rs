//! `/etc/netns/SANDBOX/resolv.conf`: `ip netns exec SANDBOX …` bind-mounts every file of
//! `/etc/netns/SANDBOX/` over `/etc/`, so programs started that way ask `127.0.0.11`.
//!
//! The file we write starts with [`MARKER`]. A file that is there already and is not ours (an
//! adopted namespace's own) is kept aside as `resolv.conf.vswitchd-saved` and put back when
//! the sandbox is removed; the directory is removed if we made it and it is empty again.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where iproute2 looks for per-namespace configuration files.
pub const ETC_NETNS: &str = "/etc/netns";

/// The first line of every resolv.conf we write.
pub const MARKER: &str =
    "# written by vswitchd: the sandbox's DNS server is vswitchd at 127.0.0.11";

/// The name a foreign resolv.conf is kept under while ours is in place.
const SAVED: &str = "resolv.conf.vswitchd-saved";

fn context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// The content of the sandbox's resolv.conf: our nameserver, the host's `search` and
/// `domain` lines (as Docker copies them), and `ndots:0` so single names are asked as they are.
pub fn render(host_resolv_conf: &str) -> String {
    let mut text = format!("{MARKER}\nnameserver 127.0.0.11\n");
    for line in host_resolv_conf.lines() {
        let line = line.trim();
        if line.starts_with("search") || line.starts_with("domain") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str("options ndots:0\n");
    text
}

/// Writes `DIR/SANDBOX/resolv.conf` (DIR is `/etc/netns` in the daemon), keeping a foreign
/// file aside; returns the path written.
pub fn write_in(dir: &Path, sandbox: &str, host_resolv_conf: &str) -> io::Result<PathBuf> {
    crate::netns::validate_netns_name(sandbox)?;
    let sandbox_dir = dir.join(sandbox);
    fs::create_dir_all(&sandbox_dir)
        .map_err(|e| context(e, format!("create {}", sandbox_dir.display())))?;
    let path = sandbox_dir.join("resolv.conf");
    if let Ok(existing) = fs::read_to_string(&path) {
        if !existing.starts_with(MARKER) {
            let saved = sandbox_dir.join(SAVED);
            fs::rename(&path, &saved).map_err(|e| {
                context(e, format!("keep {} as {}", path.display(), saved.display()))
            })?;
        }
    }
    let tmp = sandbox_dir.join(".resolv.conf.vswitchd-tmp");
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(render(host_resolv_conf).as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| context(e, format!("write {}", path.display())))?;
    Ok(path)
}

/// Removes our `DIR/SANDBOX/resolv.conf` (never a foreign one), puts a kept file back, and
/// removes the directory if it is empty.
pub fn remove_in(dir: &Path, sandbox: &str) -> io::Result<()> {
    crate::netns::validate_netns_name(sandbox)?;
    let sandbox_dir = dir.join(sandbox);
    let path = sandbox_dir.join("resolv.conf");
    match fs::read_to_string(&path) {
        Ok(text) if text.starts_with(MARKER) => {
            fs::remove_file(&path).map_err(|e| context(e, format!("remove {}", path.display())))?;
        }
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e, format!("read {}", path.display()))),
    }
    let saved = sandbox_dir.join(SAVED);
    if saved.exists() {
        fs::rename(&saved, &path).map_err(|e| {
            context(
                e,
                format!("restore {} from {}", path.display(), saved.display()),
            )
        })?;
    }
    // Only succeeds if empty: a directory holding other files of the user's stays.
    let _ = fs::remove_dir(&sandbox_dir);
    Ok(())
}

/// Writes `/etc/netns/SANDBOX/resolv.conf` from the daemon's `/etc/resolv.conf`.
pub fn write(sandbox: &str) -> io::Result<PathBuf> {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write_in(Path::new(ETC_NETNS), sandbox, &host)
}

/// Removes `/etc/netns/SANDBOX/resolv.conf` if it is ours.
pub fn remove(sandbox: &str) -> io::Result<()> {
    remove_in(Path::new(ETC_NETNS), sandbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vswitch-dns-resolv-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn render_points_at_us_and_keeps_search_domains() {
        let text = render("nameserver 10.0.0.1\nsearch corp.example\noptions rotate\n");
        assert!(text.starts_with(MARKER));
        assert!(text.contains("\nnameserver 127.0.0.11\n"));
        assert!(text.contains("\nsearch corp.example\n"));
        assert!(!text.contains("10.0.0.1") && !text.contains("rotate"));
    }

    #[test]
    fn a_foreign_file_is_kept_and_restored() {
        let dir = scratch_dir();
        let sb = dir.join("sb");
        fs::create_dir_all(&sb).unwrap();
        fs::write(sb.join("resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
        let path = write_in(&dir, "sb", "").unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains("127.0.0.11"));
        // Writing again keeps the first saved copy.
        write_in(&dir, "sb", "").unwrap();
        remove_in(&dir, "sb").unwrap();
        assert_eq!(
            fs::read_to_string(sb.join("resolv.conf")).unwrap(),
            "nameserver 9.9.9.9\n"
        );
        // Ours alone: the directory goes away.
        write_in(&dir, "fresh", "").unwrap();
        remove_in(&dir, "fresh").unwrap();
        assert!(!dir.join("fresh").exists());
        assert!(write_in(&dir, "../x", "").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
