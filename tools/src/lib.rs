//! The control plane of vswitch: the API, the daemon's pieces, and the netlink plumbing.
//!
//! - [`api`]: requests and responses on the unix socket (JSON lines).
//! - [`daemon`]: what `vswitchd` does: networks, ports, the server loop, the state store.
//! - [`netlink`], [`netns`]: links, addresses, routes and namespaces, over netlink and syscalls.

pub mod api;
pub mod daemon;
pub mod netlink;
pub mod netns;
pub mod underlay;
