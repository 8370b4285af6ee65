//! The state store: what the daemon must remember across a crash, written atomically.
//!
//! One JSON document per store file. A write goes to a temporary file, is fsynced, renamed over
//! the old file, and the directory is fsynced (DESIGN.md principle 7), so after `kill -9` the file
//! holds either the old state or the new one, never a torn mix. The API answers only after the
//! write returned.

use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A directory of JSON documents written atomically.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed, mode 0700) the state directory.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<StateDir> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| context(e, "creating state dir", &dir))?;
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
}
