//! The `sandbox` API group: a sandbox is a network namespace bind-mounted at
//! `/run/netns/NAME`, made by us or adopted (`--netns`). Creating one makes the namespace, then
//! commits the record (the namespace goes again when the commit fails); removing one commits
//! that it and its endpoints are gone, then disconnects it from every network and removes the
//! namespace, going on past a failure and reporting every problem.

use super::commit::Order;
use super::store::Table;
use super::{ApiError, Daemon, EndpointRecord};
use crate::api::{EndpointRow, SandboxRow};
use crate::netns;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A sandbox as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub name: String,
    /// `/run/netns/NAME`.
    pub path: String,
    /// Made from an existing namespace (`--netns`), not created by us.
    #[serde(default)]
    pub adopted: bool,
    /// We bind-mounted the adopted namespace at `path` (it came from elsewhere, e.g.
    /// `/proc/PID/ns/net`): the name is ours to remove, the namespace is not.
    #[serde(default)]
    pub bound: bool,
    /// Joined to the `host` network: the path names the daemon's own namespace.
    #[serde(default)]
    pub host: bool,
}

/// A namespace operation's error, as the API reports it.
fn ns_err(e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => ApiError::invalid(e.to_string()),
        std::io::ErrorKind::NotFound => ApiError::not_found(e.to_string()),
        std::io::ErrorKind::AlreadyExists => ApiError::conflict(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

impl Daemon {
    pub(super) fn sandbox_create(
        &mut self,
        name: &str,
        adopt: Option<(&str, std::fs::File)>,
    ) -> Result<serde_json::Value, ApiError> {
        netns::validate_netns_name(name).map_err(ns_err)?;
        if self.sandboxes.contains_key(name) {
            return Err(ApiError::conflict(format!("sandbox {name} already exists")));
        }
        let own_path = netns::netns_path(name).map_err(ns_err)?;
        let (path, adopted, bound) = match adopt {
            Some((src, _)) if std::path::Path::new(src) == own_path => (own_path, true, false),
            Some((_, ns)) => (
                netns::bind_named_netns_file(name, &ns).map_err(ns_err)?,
                true,
                true,
            ),
            None => {
                if netns::netns_exists(name) {
                    return Err(ApiError::conflict(format!(
                        "a namespace named {name} already exists: adopt it with --netns {}",
                        own_path.display()
                    )));
                }
                (
                    netns::create_named_netns(name).map_err(ns_err)?,
                    false,
                    false,
                )
            }
        };
        let rec = SandboxRecord {
            name: name.to_string(),
            path: path.display().to_string(),
            adopted,
            bound,
            host: false,
        };
        let committed = self.commit(Order::SystemFirst, |tx| {
            tx.put(Table::Sandboxes, &rec.name, &rec)
        });
        if let Err(e) = committed {
            if !adopted || bound {
                let _ = netns::delete_named_netns(name);
            }
            return Err(e);
        }
        self.sandboxes.insert(name.to_string(), rec);
        Ok(json!({ "name": name, "netns": path.display().to_string() }))
    }

    pub(super) fn sandbox_rm(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        let sb = self.sandbox(name)?.clone();
        let eps: Vec<EndpointRecord> = self.endpoints.of_sandbox(name).cloned().collect();
        let mut problems = Vec::new();
        // The store first: the sandbox and its endpoints are forgotten in one commit, and
        // nothing changes when it fails.
        self.forget_endpoints(&eps, &mut problems, |tx| {
            tx.delete(Table::Sandboxes, name).map(drop)
        })?;
        self.tear_down_endpoints(&eps, &mut problems);
        self.names_sandbox_removed(name);
        // A namespace adopted under its own name stays; a name we bound or created is removed.
        if !sb.adopted || sb.bound || sb.host {
            if let Err(e) = netns::delete_named_netns(name) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    problems.push(e.to_string());
                }
            }
        }
        self.sandboxes.remove(name);
        let what = format!("sandbox {name} removed");
        ApiError::unless_problems(&problems, &what, json!({ "removed": name }))
    }

    pub(super) fn sandbox_ls(&self) -> Result<serde_json::Value, ApiError> {
        let rows: Vec<SandboxRow> = self
            .sandboxes
            .values()
            .map(|s| SandboxRow {
                name: s.name.clone(),
                netns: s.path.clone(),
                endpoints: self
                    .endpoints
                    .of_sandbox(&s.name)
                    .map(|e| EndpointRow {
                        network: e.network.clone(),
                        interface: e.interface.clone(),
                        ipv4: e.ipv4(),
                        mac: e.mac.clone(),
                        ports: e.publish.iter().map(super::edge::docker_port).collect(),
                    })
                    .collect(),
            })
            .collect();
        super::rows(rows)
    }
}
