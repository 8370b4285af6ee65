//! The stack of things a setup made (namespaces, daemons, temp dirs), taken down in reverse order
//! of creation. Teardown goes on past a failure and reports every one; if the stack is dropped
//! instead (an error or a panic during setup or measurement), it is taken down all the same.

use super::proc::Daemon;
use super::{Error, Result};
use std::path::{Path, PathBuf};

/// Something the harness made and must remove.
pub trait Resource {
    /// What it is, for messages ("netns vsb123-sw").
    fn describe(&self) -> String;
    /// Removes it. Called once by [`Cleanup`]; implementations are idempotent anyway.
    fn release(&mut self) -> Result<()>;
}

/// Resources in creation order; released last-made first.
#[derive(Default)]
pub struct Cleanup {
    stack: Vec<Box<dyn Resource>>,
}

impl Cleanup {
    /// An empty stack.
    pub fn new() -> Cleanup {
        Cleanup::default()
    }

    /// Takes ownership of a resource; it is released before everything pushed earlier.
    pub fn push(&mut self, r: impl Resource + 'static) {
        self.stack.push(Box::new(r));
    }

    /// Releases everything, last-made first, and returns every failure.
    pub fn release_all(mut self) -> Vec<Error> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        while let Some(mut r) = self.stack.pop() {
            if let Err(e) = r.release() {
                errors.push(Error::Unexpected(format!("removing {}: {e}", r.describe())));
            }
        }
        errors
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for e in self.release_inner() {
            eprintln!("e2e: cleanup: {e}");
        }
    }
}

impl Resource for Daemon {
    fn describe(&self) -> String {
        format!("{} (pid {})", self.name(), self.pid())
    }
    fn release(&mut self) -> Result<()> {
        self.stop()
    }
}

/// A directory the harness made; removed with its contents.
pub struct TempDir {
    path: PathBuf,
    removed: bool,
}

impl TempDir {
    /// Creates `path` (its parent must exist; it must not).
    pub fn create(path: PathBuf) -> Result<TempDir> {
        std::fs::create_dir(&path).map_err(|source| Error::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        Ok(TempDir {
            path,
            removed: false,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Resource for TempDir {
    fn describe(&self) -> String {
        format!("directory {}", self.path.display())
    }
    fn release(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.removed, true) {
            return Ok(());
        }
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                context: format!("removing {}", self.path.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("e2e: cleanup: {e}");
        }
    }
}
