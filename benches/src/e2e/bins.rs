//! Finding (and, under `cargo run`, first building) the vswitchd and vswitchctl binaries the
//! harnesses measure.

use super::proc::display;
use super::switches::VswitchBins;
use std::path::{Path, PathBuf};
use std::process::Command;

/// vswitchd and vswitchctl: given, or found next to the running binary or in the workspace's
/// target/release (after `cargo build --release -p tools --bins` when running under cargo,
/// unless `no_build`). `tag` prefixes progress messages.
pub fn vswitch_bins(
    vswitchd: Option<&Path>,
    vswitchctl: Option<&Path>,
    no_build: bool,
    tag: &str,
) -> Result<VswitchBins, String> {
    let vswitchd = match vswitchd {
        Some(p) => p.to_path_buf(),
        None => {
            if !no_build {
                build_tools(tag)?;
            }
            default_vswitchd().ok_or_else(|| {
                "vswitchd not found next to this binary nor in target/release: build it with \
                 `cargo build --release -p tools` or pass --vswitchd PATH"
                    .to_string()
            })?
        }
    };
    if !vswitchd.is_file() {
        return Err(format!("{}: no such file", vswitchd.display()));
    }
    let vswitchctl = vswitchctl.map(Path::to_path_buf).unwrap_or_else(|| {
        vswitchd
            .parent()
            .unwrap_or(Path::new("."))
            .join("vswitchctl")
    });
    if !vswitchctl.is_file() {
        return Err(format!(
            "{}: no such file (pass --vswitchctl PATH)",
            vswitchctl.display()
        ));
    }
    Ok(VswitchBins {
        vswitchd,
        vswitchctl,
    })
}

/// The workspace this crate was built from.
fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// `cargo build --release -p tools --bins`, when running under cargo (which sets `CARGO`).
fn build_tools(tag: &str) -> Result<(), String> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-p", "tools", "--bins"])
        .current_dir(workspace_dir());
    eprintln!("{tag}: building vswitchd: {}", display(&cmd));
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "`{}` failed ({s}); to measure the vswitchd already built, pass --no-build",
            display(&cmd)
        )),
        Err(e) => Err(format!("running `{}`: {e}", display(&cmd))),
    }
}

/// vswitchd next to the running binary (same target dir and profile), else in the workspace's
/// target/release.
fn default_vswitchd() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vswitchd")));
    let workspace = workspace_dir().join("target/release/vswitchd");
    beside.into_iter().chain([workspace]).find(|p| p.is_file())
}
