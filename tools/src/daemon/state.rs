//! The state dir: the lock that keeps a second daemon off it, the ID that marks what this state
//! dir made, and [`StateDir`], the JSON documents of vswitchd before the store.
//!
//! The daemon keeps its state in the transactional [`super::store`]; [`StateDir`] is only the
//! old way (one JSON document per file, written to a temporary file, fsynced, renamed over the
//! old file, the directory fsynced), kept for the store bench's baseline and for tests that
//! write a `switch.json` as an old vswitchd did.

use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file inside the state dir, held (`flock`) by the daemon using it.
pub const LOCK_FILE: &str = "lock";

/// The file holding the state dir's ID, made once.
pub const ID_FILE: &str = "id";

/// The mode of the state dir: only its owner enters.
const DIR_MODE: u32 = 0o700;

/// The mode of every file in the state dir.
const FILE_MODE: u32 = 0o600;

/// How long a start waits for a lock whose holder is exiting (killed, its files being closed).
const EXITING_HOLDER_WAIT: Duration = Duration::from_secs(10);

/// A directory of JSON documents written atomically.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed, mode 0700) the state directory.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<StateDir> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads `name`; `Ok(None)` if it was never written.
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> io::Result<Option<T>> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| context(e.into(), "parsing", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(context(e, "reading", &path)),
        }
    }

    /// Replaces `name` with `value`: write, fsync, rename, fsync the directory.
    pub fn save<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let bytes = serde_json::to_vec_pretty(value)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(|e| context(e, "creating", &tmp))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| context(e, "writing", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| context(e, "renaming into", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| context(e, "syncing", &self.dir))
    }
}

/// Creates `dir` (and its parents) and makes it mode 0700 whatever the umask, also when it
/// already existed.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| context(e, "creating", parent))?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(context(e, "creating state dir", dir)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| context(e, "setting the mode of", dir))
}

/// An exclusive `flock` on a file, held until dropped (or until the process ends, even by
/// `kill -9`: the kernel releases it with the last descriptor).
#[derive(Debug)]
pub struct LockFile {
    /// Held open, never read: the lock lives as long as this descriptor.
    _file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock on `path` (created mode 0600 if missing) and writes our pid into it.
    ///
    /// When another process holds it: if that process is exiting (its files are being closed
    /// after a `kill -9`) or gone, waits up to 10 s for the lock; otherwise fails at once with
    /// `WouldBlock` and `busy(pid)` as the message.
    pub fn acquire(path: &Path, busy: impl Fn(Option<u32>) -> String) -> io::Result<LockFile> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| context(e, "opening lock file", path))?;
        let deadline = Instant::now() + EXITING_HOLDER_WAIT;
        loop {
            // SAFETY: flock on a descriptor `file` keeps open; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(context(e, "locking", path));
            }
            let holder = read_pid(&mut file);
            let dying = holder.is_none_or(process_exiting);
            if !dying || Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, busy(holder)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE));
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| context(e, "writing our pid into", path))?;
        Ok(LockFile {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid a lock holder wrote into its lock file, if it did.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// True when process `pid` is gone, a zombie, exiting (`PF_EXITING` in its flags, the ninth
/// field of `/proc/PID/stat`) or about to (a `SIGKILL` pending, `/proc/PID/status`): its
/// locks are about to be released.
fn process_exiting(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let killed = status.lines().any(|l| {
        let pending = l
            .strip_prefix("SigPnd:")
            .or_else(|| l.strip_prefix("ShdPnd:"));
        pending
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|bits| bits & SIGKILL_BIT != 0)
    });
    if killed {
        return true;
    }
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

/// Takes the state dir's lock for as long as the returned guard lives: a second daemon on
/// the same state dir is refused with "another vswitchd is using state dir DIR (pid N)".
pub fn lock_state_dir(dir: &Path) -> io::Result<LockFile> {
    create_private_dir(dir)?;
    LockFile::acquire(&dir.join(LOCK_FILE), |pid| {
        let by = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        format!("another vswitchd is using state dir {}{by}", dir.display())
    })
}

/// The state dir's ID: 32 hex digits, random, made once and kept in `DIR/id`. Interfaces the
/// daemon makes carry it (in their alias), so a later start knows them for its own.
pub fn instance_id(dir: &Path) -> io::Result<String> {
    let path = dir.join(ID_FILE);
    let valid = |t: &str| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
    match fs::read_to_string(&path) {
        Ok(text) if valid(text.trim()) => return Ok(text.trim().to_string()),
        Ok(text) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not a state dir ID (32 hex digits): restore it or remove it \
                     (a new ID disowns the interfaces made under the old one)",
                    path.display(),
                    text.trim()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e, "reading", &path)),
    }
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes).map_err(|e| context(e, "making an ID for", dir))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Written aside and linked into place: a crash never leaves a half-written ID, and of two
    // racing starts the first link wins.
    let tmp = dir.join(format!(".{ID_FILE}.{}.tmp", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(|e| context(e, "creating", &tmp))?;
    let written = f
        .write_all(format!("{id}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| context(e, "writing", &tmp));
    drop(f);
    let linked = written.and_then(|_| match fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(context(e, "linking", &path)),
    });
    let _ = fs::remove_file(&tmp);
    linked?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "syncing", dir))?;
    let text = fs::read_to_string(&path).map_err(|e| context(e, "reading", &path))?;
    Ok(text.trim().to_string())
}

/// Fills `buf` from the kernel's random source (`getrandom`).
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_no_temp_left() {
        let dir = std::env::temp_dir().join(format!("vst-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(s.load::<Vec<u32>>("x.json").unwrap(), None);
        s.save("x.json", &vec![1u32, 2, 3]).unwrap();
        s.save("x.json", &vec![4u32]).unwrap();
        assert_eq!(s.load::<Vec<u32>>("x.json").unwrap(), Some(vec![4]));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
        fs::write(dir.join("bad.json"), b"{not json").unwrap();
        let err = s.load::<Vec<u32>>("bad.json").unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh directory path under the temp dir for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vst-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn modes_do_not_follow_the_umask() {
        let dir = scratch("modes");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing dir is made private");
        // The test process's umask may be anything; the file must be 0600 regardless. A file
        // made with a wide mode shows what the umask alone would have given.
        s.save("x.json", &1u32).unwrap();
        assert_eq!(mode(&dir.join("x.json")), 0o600);
        let id = instance_id(&dir).unwrap();
        assert_eq!(mode(&dir.join(ID_FILE)), 0o600);
        let lock = lock_state_dir(&dir).unwrap();
        assert_eq!(mode(lock.path()), 0o600);
        drop(lock);
        assert_eq!(id.len(), 32);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn instance_id_is_made_once_and_kept() {
        let dir = scratch("id");
        let s = StateDir::open(&dir).unwrap();
        let id = instance_id(s.path()).unwrap();
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(instance_id(s.path()).unwrap(), id);
        let other = scratch("id2");
        fs::create_dir_all(&other).unwrap();
        assert_ne!(
            instance_id(&other).unwrap(),
            id,
            "each state dir has its own"
        );
        fs::write(dir.join(ID_FILE), "garbage\n").unwrap();
        let err = instance_id(&dir).unwrap_err();
        assert!(err.to_string().contains("not a state dir ID"), "{err}");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(ID_FILE)],
            "no temp file left"
        );
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&other).unwrap();
    }

    #[test]
    fn a_second_lock_on_a_state_dir_is_refused_until_the_first_goes() {
        let dir = scratch("lock");
        let first = lock_state_dir(&dir).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too,
        // as a second daemon would.
        let err = lock_state_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let text = err.to_string();
        assert!(text.contains("another vswitchd"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&dir.display().to_string()), "{text}");
        drop(first);
        let again = lock_state_dir(&dir).unwrap();
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exiting_processes_are_told_apart() {
        assert!(!process_exiting(std::process::id()));
        assert!(process_exiting(u32::MAX), "a pid that does not exist");
    }
}
