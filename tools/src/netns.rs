//! Network namespaces: named ones under `/run/netns`, adopted ones, and running code inside one.
//!
//! A named namespace is made the way iproute2's `ip netns add NAME` makes it, so `ip netns exec
//! NAME …` works on ours and we can adopt theirs: `/run/netns` is a shared mount point, and
//! `/run/netns/NAME` is an empty file with the namespace bind-mounted onto it. The bind mount is
//! what keeps the namespace alive without any process in it.
//!
//! Entering a namespace (`setns`) or making one (`unshare`) changes only the calling *thread*.
//! Every function here does it on a fresh short-lived thread, so the caller's thread never moves:
//! [`in_netns`] runs a closure in a namespace and hands back its result, and a
//! [`Netlink`](crate::netlink::Netlink) opened inside that closure talks to that namespace.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::thread;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::netlink::Netlink;

/// Where named network namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The longest namespace name accepted here.
pub const MAX_NETNS_NAME_LEN: usize = 64;

/// The calling thread's own network namespace (`/proc/self/ns/net` is the main thread's).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`, returns the `CLONE_NEW*` type.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// `NSFS_MAGIC` from `<linux/magic.h>`: the `f_type` of namespace files (`fstatfs`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The (device, inode) of the daemon's own network namespace, recorded at start.
static OWN_NETNS: OnceLock<(u64, u64)> = OnceLock::new();

/// The one-time setup of `/run/netns` within this process: true once it is done.
static RUN_DIR_SETUP: Mutex<bool> = Mutex::new(false);

/// Wraps an error with what was being attempted, keeping its kind.
fn context(err: impl Into<io::Error>, what: impl std::fmt::Display) -> io::Error {
    let err = err.into();
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Checks a namespace (sandbox) name as network names are checked: 1 to 64 of `A-Z a-z 0-9 _
/// . -`, not starting with `.` or `-` (so no `/`, no whitespace or newline, never an option).
pub fn validate_netns_name(name: &str) -> io::Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NETNS_NAME_LEN {
        Some("is longer than 64 bytes")
    } else if name.starts_with(['.', '-']) {
        Some("starts with '.' or '-'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("has a character other than letters, digits, '_', '.' and '-'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name {name:?}: it {problem}"),
        )),
        None => Ok(()),
    }
}

/// Returns `/run/netns/NAME` for a valid name.
pub fn netns_path(name: &str) -> io::Result<PathBuf> {
    validate_netns_name(name)?;
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// Tells whether `/run/netns/NAME` exists (what `ip netns list` shows).
pub fn netns_exists(name: &str) -> bool {
    netns_path(name).is_ok_and(|path| path.symlink_metadata().is_ok())
}

/// Creates `/run/netns` and makes it a shared mount point, as `ip netns add` does.
///
/// Shared propagation lets an unmount in one mount namespace reach the others, so a deleted
/// namespace is really freed. If the directory is not a mount point yet (`EINVAL`), it is first
/// bind-mounted onto itself; any other failure is an error, as in iproute2.
///
/// Done once per process: `--make-rshared` walks every mount below `/run/netns`, one per
/// namespace, so repeating it for each new namespace made creating the 10,000th cost 10,000
/// steps. A mount made under a shared mount joins its peer group by itself.
fn prepare_run_dir() -> io::Result<()> {
    let mut prepared = RUN_DIR_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if *prepared {
        return Ok(());
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(NETNS_RUN_DIR)
            .map_err(|e| context(e, format!("create {NETNS_RUN_DIR}")))?;
    }
    let mut made_mount_point = false;
    loop {
        let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
        match rustix::mount::mount_change(NETNS_RUN_DIR, shared) {
            Ok(()) => {
                *prepared = true;
                return Ok(());
            }
            Err(Errno::INVAL) if !made_mount_point => {
                rustix::mount::mount_bind_recursive(NETNS_RUN_DIR, NETNS_RUN_DIR)
                    .map_err(|e| context(e, format!("mount --bind {NETNS_RUN_DIR} on itself")))?;
                made_mount_point = true;
            }
            Err(e) => return Err(context(e, format!("mount --make-rshared {NETNS_RUN_DIR}"))),
        }
    }
}

/// Creates the empty file a namespace is bind-mounted on, exclusively, so an existing
/// namespace is never replaced (`AlreadyExists`).
fn create_mount_point(path: &Path) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        context(
            e,
            format!("create network namespace file {}", path.display()),
        )
    })?;
    drop(fd);
    Ok(())
}

/// Creates the network namespace `/run/netns/NAME` with `lo` up, and returns its path.
///
/// The namespace is made on a separate thread (unshare + bind mount of that thread's
/// `ns/net`), so the caller's thread stays where it is. On failure nothing is left behind.
pub fn create_named_netns(name: &str) -> io::Result<PathBuf> {
    let path = netns_path(name)?;
    prepare_run_dir()?;

    create_mount_point(&path)?;

    let made = in_new_netns(|| {
        rustix::mount::mount_bind(THREAD_NETNS, &path)
            .map_err(|e| context(e, format!("bind {THREAD_NETNS} on {}", path.display())))?;
        // Inside the new namespace: bring up loopback so 127.0.0.1 works there.
        Netlink::new()
            .and_then(|mut nl| nl.set_up("lo"))
            .map_err(|e| context(e, format!("bring up lo in network namespace {name}")))
    });
    match made {
        Ok(()) => {
            tracing::debug!(name, "created network namespace");
            Ok(path)
        }
        Err(err) => {
            // Undo: the mount may or may not exist; the file does.
            let _ = rustix::mount::unmount(&path, UnmountFlags::DETACH);
            let _ = fs::remove_file(&path);
            Err(context(err, format!("create network namespace {name}")))
        }
    }
}

/// Makes `/run/netns/NAME` name an existing namespace (`source`, e.g. `/proc/PID/ns/net`), by
/// bind mount, so `ip netns exec NAME` enters it. `source` must be a network namespace.
pub fn bind_named_netns(name: &str, source: impl AsRef<Path>) -> io::Result<PathBuf> {
    let source = source.as_ref();
    let ns = adopt_netns(source)?;
    netns_path(name)?;
    bind_named_netns_file(name, &ns)
        .map_err(|e| context(e, format!("adopt {} as {name}", source.display())))
}

/// Deletes the named namespace: detaches its bind mount and removes `/run/netns/NAME`.
///
/// A name with no file is a `NotFound` error. The namespace itself lives on while a process
/// or an open file still holds it.
pub fn delete_named_netns(name: &str) -> io::Result<()> {
    let path = netns_path(name)?;
    if let Err(e) = path.symlink_metadata() {
        return Err(context(e, format!("delete network namespace {name}")));
    }
    match rustix::mount::unmount(&path, UnmountFlags::DETACH) {
        // EINVAL: not mounted (a leftover file of a failed creation); remove it all the same.
        Ok(()) | Err(Errno::INVAL) => {}
        Err(e) => return Err(context(e, format!("unmount {}", path.display()))),
    }
    fs::remove_file(&path).map_err(|e| context(e, format!("remove {}", path.display())))?;
    tracing::debug!(name, "deleted network namespace");
    Ok(())
}

/// Opens a namespace file (such as `/run/netns/NAME` or `/proc/PID/ns/net`) without checks.
pub fn open_netns(path: impl AsRef<Path>) -> io::Result<File> {
    let path = path.as_ref();
    File::open(path).map_err(|e| context(e, format!("open network namespace {}", path.display())))
}

/// Records the calling thread's network namespace as the daemon's own (call it at start, on
/// the main thread, before any thread moves): [`open_foreign_netns`] refuses it. Without a
/// record, the main thread's namespace (`/proc/self/ns/net`) is taken.
pub fn record_own_netns() -> io::Result<()> {
    let meta =
        fs::metadata(THREAD_NETNS).map_err(|e| context(e, format!("stat {THREAD_NETNS}")))?;
    use std::os::unix::fs::MetadataExt;
    let _ = OWN_NETNS.set((meta.dev(), meta.ino()));
    Ok(())
}

/// The daemon's own network namespace: recorded, else the main thread's.
fn own_netns() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    OWN_NETNS.get().copied().or_else(|| {
        fs::metadata("/proc/self/ns/net")
            .ok()
            .map(|m| (m.dev(), m.ino()))
    })
}

/// A namespace file, opened and checked: the file and the (device, inode) naming the namespace.
struct CheckedNetns {
    file: File,
    id: (u64, u64),
}

/// Opens `path` without ever blocking and checks that it is a network namespace.
///
/// The first open is `O_PATH | O_NONBLOCK`, which opens nothing for I/O: a FIFO, a device or
/// a socket there cannot block it nor be poked. `fstatfs` must then say nsfs (`NSFS_MAGIC`),
/// and only that inode is opened for reading (through `/proc/thread-self/fd`, the same inode,
/// not the path again), which `setns` and `NS_GET_NSTYPE` need.
fn open_checked(path: &Path) -> io::Result<CheckedNetns> {
    let not_netns = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a network namespace ({why})", path.display()),
        )
    };
    let flags = OFlags::PATH | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let handle = rustix::fs::open(path, flags, Mode::empty())
        .map_err(|e| context(e, format!("open network namespace {}", path.display())))?;
    let fs = rustix::fs::fstatfs(&handle)
        .map_err(|e| context(e, format!("fstatfs {}", path.display())))?;
    #[allow(clippy::unnecessary_cast)] // f_type is i64 or u32 depending on the target.
    if fs.f_type as i64 != NSFS_MAGIC {
        return Err(not_netns("not a namespace file".into()));
    }
    let st =
        rustix::fs::fstat(&handle).map_err(|e| context(e, format!("stat {}", path.display())))?;
    let id = (st.st_dev, st.st_ino);
    let again = format!("/proc/thread-self/fd/{}", handle.as_raw_fd());
    let file: File = rustix::fs::open(
        again.as_str(),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| context(e, format!("open network namespace {}", path.display())))?
    .into();
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which `file` keeps open.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype < 0 {
        let err = io::Error::last_os_error();
        return Err(not_netns(format!("not a namespace file: {err}")));
    }
    if nstype != libc::CLONE_NEWNET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a namespace, but not a network namespace (type {nstype:#x})",
                path.display()
            ),
        ));
    }
    #[allow(clippy::useless_conversion)] // st_dev and st_ino are u64 on most targets.
    Ok(CheckedNetns {
        file,
        id: (u64::from(id.0), u64::from(id.1)),
    })
}

/// Opens an existing namespace file and checks that it really is a network namespace; never
/// blocks, whatever is at `path` (see [`open_checked`]).
pub fn adopt_netns(path: impl AsRef<Path>) -> io::Result<File> {
    open_checked(path.as_ref()).map(|c| c.file)
}

/// Opens a namespace a client named (`sandbox create --netns PATH`) for adoption: never
/// blocks, must be a network namespace, and must not be the daemon's own (a sandbox there
/// would change the daemon's routes and outlive `sandbox rm`).
pub fn open_foreign_netns(path: impl AsRef<Path>) -> io::Result<File> {
    let path = path.as_ref();
    let checked = open_checked(path)?;
    if own_netns() == Some(checked.id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is vswitchd's own network namespace: a sandbox needs a namespace of its own",
                path.display()
            ),
        ));
    }
    Ok(checked.file)
}

/// Makes `/run/netns/NAME` name the namespace `ns` (an open, checked namespace file) by bind
/// mount, so `ip netns exec NAME` enters it. The mount source is the open file itself, not a
/// path that could have changed since it was checked.
pub fn bind_named_netns_file(name: &str, ns: &File) -> io::Result<PathBuf> {
    let path = netns_path(name)?;
    prepare_run_dir()?;
    create_mount_point(&path)?;
    let source = format!("/proc/thread-self/fd/{}", ns.as_raw_fd());
    if let Err(e) = rustix::mount::mount_bind(source.as_str(), &path) {
        let _ = fs::remove_file(&path);
        return Err(context(
            e,
            format!("bind a network namespace on {}", path.display()),
        ));
    }
    Ok(path)
}

/// Creates an anonymous network namespace with `lo` up; the returned file keeps it alive.
pub fn new_netns() -> io::Result<File> {
    in_new_netns(|| {
        Netlink::new()
            .and_then(|mut nl| nl.set_up("lo"))
            .map_err(|e| context(e, "bring up lo in a new network namespace"))?;
        open_netns(THREAD_NETNS)
    })
}

/// Runs `f` on a fresh thread that first enters the network namespace `ns`, and returns its result.
///
/// The caller's thread never changes namespace. A panic in `f` is passed on to the caller.
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let fd = ns.as_fd();
    on_scoped_thread(move || {
        rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
            .map_err(|e| context(e, "enter network namespace (setns)"))?;
        Ok(f())
    })
}

/// Runs `f` on a fresh thread that first moves into a new, empty network namespace.
pub(crate) fn in_new_netns<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    on_scoped_thread(move || {
        // SAFETY: only CLONE_NEWNET is unshared; the file descriptor table stays shared, which
        // is what makes `unshare_unsafe` unsafe.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
            .map_err(|e| context(e, "create network namespace (unshare CLONE_NEWNET)"))?;
        f()
    })
}

/// Runs `f` on a scoped thread, joins it and passes a panic on to the caller.
fn on_scoped_thread<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, f)
            .map_err(|e| context(e, "spawn a thread for a network namespace"))?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Helpers for tests that need root: they run inside namespaces of their own.
#[cfg(test)]
pub(crate) mod test_support {
    /// Runs `body` as root in a fresh network namespace; without root it skips (fails on CI).
    pub(crate) fn run_as_root_in_new_netns(body: impl FnOnce() + Send) {
        if !switch::testing::needs_root() {
            return;
        }
        super::in_new_netns(|| {
            body();
            Ok(())
        })
        .expect("set up a network namespace for the test");
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::run_as_root_in_new_netns;
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique named-namespace name for this test process, deleted again on drop.
    struct NamedNetns(String);

    impl NamedNetns {
        fn unique() -> NamedNetns {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            NamedNetns(format!("vst-{}-{n}", std::process::id()))
        }
    }

    impl Drop for NamedNetns {
        fn drop(&mut self) {
            let _ = delete_named_netns(&self.0);
        }
    }

    /// The inode of a namespace file, which identifies the namespace.
    fn ns_inode(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn netns_names_are_validated() {
        for good in [
            "a",
            "sandbox-1",
            "with.dot",
            "x..",
            "A_b-9",
            &"x".repeat(64),
        ] {
            assert!(
                validate_netns_name(good).is_ok(),
                "{good:?} should be valid"
            );
        }
        let too_long = "x".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            "..x",
            ".hidden",
            "-rf",
            "a/b",
            "/",
            "a\0b",
            "a b",
            "a\nb",
            "tab\t",
            "é",
            "a:b",
            too_long.as_str(),
        ] {
            let err = validate_netns_name(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!(netns_path("sb").unwrap(), Path::new("/run/netns/sb"));
        assert!(netns_path("../etc").is_err());
        assert!(!netns_exists("../etc"));
    }

    #[test]
    fn bad_names_are_refused_before_touching_anything() {
        assert_eq!(
            create_named_netns("a/b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            delete_named_netns("..").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn adopt_netns_accepts_only_network_namespaces() {
        // Opening /proc/self/ns/* and NS_GET_NSTYPE need no privilege.
        adopt_netns("/proc/self/ns/net").expect("our own network namespace");

        let err = adopt_netns("/proc/self/ns/uts").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not a network namespace"), "{err}");

        let plain = std::env::temp_dir().join(format!("vst-plain-{}", std::process::id()));
        fs::write(&plain, b"not a namespace\n").unwrap();
        let err = adopt_netns(&plain).unwrap_err();
        let _ = fs::remove_file(&plain);
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not a network namespace"), "{err}");

        if Path::new("/etc/hostname").exists() {
            let err = adopt_netns("/etc/hostname").unwrap_err();
            assert!(
                err.to_string()
                    .contains("/etc/hostname is not a network namespace"),
                "{err}"
            );
        }
        let err = adopt_netns("/nonexistent/ns").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let fifo = std::env::temp_dir().join(format!("vst-fifo-{}", std::process::id()));
        let _ = fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A plain open for reading would block here until a writer came.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send((adopt_netns(&path).err(), open_foreign_netns(&path).err()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        if got.is_err() {
            // Unblock the stuck open before failing, so the test process can end.
            let _ = fs::OpenOptions::new().write(true).open(&fifo);
        }
        let _ = fs::remove_file(&fifo);
        let (a, b) = got.expect("opening a FIFO as a namespace must not block");
        for err in [a.expect("refused"), b.expect("refused")] {
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("not a network namespace"), "{err}");
        }
    }

    #[test]
    fn the_daemons_own_namespace_is_not_adopted() {
        record_own_netns().unwrap();
        let err = open_foreign_netns("/proc/self/ns/net").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("own network namespace"), "{err}");
        // Still a fine namespace for the daemon's own uses.
        adopt_netns("/proc/self/ns/net").unwrap();
        let err = open_foreign_netns("/proc/self/ns/uts").unwrap_err();
        assert!(err.to_string().contains("not a network namespace"), "{err}");
    }

    #[test]
    fn root_a_foreign_namespace_is_adopted_by_its_open_file() {
        run_as_root_in_new_netns(|| {
            let other = new_netns().unwrap();
            let path = format!("/proc/thread-self/fd/{}", other.as_raw_fd());
            let file = open_foreign_netns(&path).unwrap();
            let netns = NamedNetns::unique();
            let bound = bind_named_netns_file(&netns.0, &file).unwrap();
            use std::os::unix::fs::MetadataExt;
            let want = other.metadata().unwrap().ino();
            assert_eq!(fs::metadata(&bound).unwrap().ino(), want);
        });
    }

    #[test]
    fn root_in_netns_sees_only_lo_of_a_fresh_namespace() {
        run_as_root_in_new_netns(|| {
            let before = ns_inode(THREAD_NETNS);
            let fresh = new_netns().unwrap();
            let (links, inside) = in_netns(&fresh, || {
                let links = Netlink::new().unwrap().list_links().unwrap();
                (links, ns_inode(THREAD_NETNS))
            })
            .unwrap();
            assert_eq!(
                ns_inode(THREAD_NETNS),
                before,
                "the caller's thread must not move"
            );
            assert_ne!(inside, before);
            assert_eq!(links.len(), 1, "{links:?}");
            assert_eq!(links[0].name, "lo");
            assert!(links[0].up, "lo is up");
        });
    }

    #[test]
    fn root_in_netns_passes_panics_on() {
        run_as_root_in_new_netns(|| {
            let ns = adopt_netns(THREAD_NETNS).unwrap();
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                in_netns(&ns, || panic!("inside")).unwrap();
            }));
            assert!(caught.is_err());
        });
    }

    #[test]
    fn root_named_netns_is_created_with_lo_up_and_deleted() {
        run_as_root_in_new_netns(|| {
            let netns = NamedNetns::unique();
            let name = netns.0.as_str();
            assert!(!netns_exists(name));

            let path = create_named_netns(name).unwrap();
            assert_eq!(path, Path::new(NETNS_RUN_DIR).join(name));
            assert!(path.exists());
            assert!(netns_exists(name));

            // It is a real, separate network namespace, with lo up.
            let file = adopt_netns(&path).unwrap();
            let (lo, inode) = in_netns(&file, || {
                let lo = Netlink::new().unwrap().link_info("lo").unwrap();
                (lo, ns_inode(THREAD_NETNS))
            })
            .unwrap();
            assert!(lo.expect("lo").up);
            assert_ne!(inode, ns_inode(THREAD_NETNS));
            drop(file);

            // iproute2 sees it too (when it is installed).
            if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
                let listed = String::from_utf8_lossy(&out.stdout);
                assert!(listed
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(name)));
            }

            // A second one of the same name is refused and the first one is untouched.
            let err = create_named_netns(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            assert!(adopt_netns(&path).is_ok());

            delete_named_netns(name).unwrap();
            assert!(!path.exists());
            assert!(!netns_exists(name));
            let err = delete_named_netns(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        });
    }
}
