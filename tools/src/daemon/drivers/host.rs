//! The `host` driver: the sandbox's name points at the daemon's own network namespace, so
//! it shares the host's interfaces; leaving gives it a fresh namespace of its own.

use super::super::endpoints::Connect;
use super::super::undo::Undo;
use super::super::{ApiError, Daemon, EndpointRecord, SandboxRecord};
use super::{Kind, NetworkDriver};
use crate::netns;

/// The `host` driver.
pub(super) struct HostDriver;

impl NetworkDriver for HostDriver {
    fn kind(&self) -> Kind {
        Kind::Namespace
    }

    fn connect(
        &self,
        daemon: &mut Daemon,
        c: &Connect<'_>,
        undo: &mut Undo,
    ) -> Result<EndpointRecord, ApiError> {
        join_host_namespace(daemon, c.sandbox)?;
        let name = c.sandbox.name.clone();
        undo.push(move |d| {
            let _ = leave_host_namespace(d, &name);
        });
        Ok(c.bare_endpoint())
    }

    fn disconnect(&self, daemon: &mut Daemon, sandbox: &str) -> Result<(), ApiError> {
        leave_host_namespace(daemon, sandbox)
    }
}

/// Points the sandbox's name at the daemon's own namespace.
fn join_host_namespace(d: &mut Daemon, sb: &SandboxRecord) -> Result<(), ApiError> {
    if sb.adopted {
        return Err(ApiError::conflict(format!(
            "sandbox {} was adopted from an existing namespace; it cannot join the host network",
            sb.name
        )));
    }
    netns::delete_named_netns(&sb.name).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Err(e) = netns::bind_named_netns(&sb.name, "/proc/thread-self/ns/net") {
        let _ = netns::create_named_netns(&sb.name);
        return Err(ApiError::internal(format!(
            "joining the host namespace: {e}"
        )));
    }
    if let Some(s) = d.sandboxes.get_mut(&sb.name) {
        s.host = true;
    }
    Ok(())
}

/// Gives a sandbox that left the host network a fresh namespace of its own.
fn leave_host_namespace(d: &mut Daemon, sandbox: &str) -> Result<(), ApiError> {
    let _ = netns::delete_named_netns(sandbox);
    netns::create_named_netns(sandbox).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(sb) = d.sandboxes.get_mut(sandbox) {
        sb.host = false;
    }
    Ok(())
}
