//! `vswitchctl cluster status`: the etcd endpoints, this node, and every node with its VTEP
//! and lease (vswitchd started with `--cluster`).

use clap::Subcommand;
use serde_json::Value;
use tools::api::Request;
use tools::daemon::cluster::ClusterStatus;

/// `cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The etcd endpoints, this node, the other nodes with their VTEPs and lease ages.
    Status,
}

impl ClusterCmd {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        match self {
            ClusterCmd::Status => Request::ClusterStatus,
        }
    }

    /// Human output: the status as `ClusterStatus` prints it.
    pub fn render(&self, result: &Value) -> String {
        match serde_json::from_value::<ClusterStatus>(result.clone()) {
            Ok(status) => status.to_string(),
            Err(_) => serde_json::to_string_pretty(result).unwrap_or_default(),
        }
    }
}
