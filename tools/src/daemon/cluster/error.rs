//! The errors of the cluster client: etcd unreachable or refusing, and cluster rules broken.

use std::net::{Ipv4Addr, SocketAddr};

/// Why a cluster operation failed. Nothing was changed in etcd unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No etcd member answered within the deadline.
    #[error("etcd unreachable at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last transport error.
        reason: String,
    },
    /// etcd answered with an error.
    #[error("etcd refused {op}: {message}")]
    Etcd {
        /// The operation.
        op: &'static str,
        /// etcd's message.
        message: String,
    },
    /// etcd's answer could not be read.
    #[error("unreadable etcd answer to {op}: {reason}")]
    BadResponse {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A configured endpoint is not `etcd://HOST:PORT`.
    #[error("bad etcd endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name cannot be used as a key component.
    #[error("bad {what} {name:?}: {reason}")]
    BadName {
        /// What the name is of (network, node, endpoint).
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value stored in etcd does not decode.
    #[error("bad value at {key}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A network of that name exists already.
    #[error("cluster network {name} already exists")]
    NetworkExists {
        /// The network's name.
        name: String,
    },
    /// The network does not exist.
    #[error("no cluster network {name}")]
    NoSuchNetwork {
        /// The network's name.
        name: String,
    },
    /// The VNI is out of the 24-bit range of RFC 7348 § 5 (0 is not used).
    #[error("VNI {vni} is outside 1..=16777215 (RFC 7348 § 5)")]
    BadVni {
        /// The VNI given.
        vni: u32,
    },
    /// The VNI is claimed by another network.
    #[error("VNI {vni} is already used by cluster network {owner}")]
    VniInUse {
        /// The VNI.
        vni: u32,
        /// The network holding it.
        owner: String,
    },
    /// Every VNI in the automatic range is taken.
    #[error("no free VNI left in {low}..={high}")]
    VnisExhausted {
        /// The first VNI chosen automatically.
        low: u32,
        /// The last one.
        high: u32,
    },
    /// The network still has endpoints.
    #[error("cluster network {name} still has {count} endpoint(s), on node(s) {nodes}")]
    NetworkInUse {
        /// The network's name.
        name: String,
        /// How many endpoints.
        count: usize,
        /// The nodes holding them.
        nodes: String,
    },
    /// The network's address rules refuse the operation.
    #[error("cluster network {network}: {source}")]
    Ipam {
        /// The network.
        network: String,
        /// The pool's reason.
        source: ipam::IpamError,
    },
    /// The address is not allocated.
    #[error("address {address} is not allocated on cluster network {network}")]
    NotAllocated {
        /// The network.
        network: String,
        /// The address.
        address: Ipv4Addr,
    },
    /// Other clients kept winning the race for the same keys.
    #[error("gave up on {what} after {attempts} conflicting transactions")]
    Contention {
        /// The operation.
        what: String,
        /// How many transactions were tried.
        attempts: u32,
    },
    /// Another live node is registered under this name with another VTEP.
    #[error("node name {node} is registered by a live node with VTEP {vtep}; choose another name or wait for its lease to expire")]
    NodeNameTaken {
        /// The name.
        node: String,
        /// The other node's VTEP.
        vtep: SocketAddr,
    },
    /// This node's lease is gone (etcd forgot it); the keep-alive thread registers anew.
    #[error("the lease of node {node} expired; retry once it is registered again")]
    LeaseLost {
        /// This node.
        node: String,
    },
}
