//! The control plane of vswitch: the API, the daemon's pieces, and the netlink plumbing.
//!
//! - [`api`]: requests and responses on the unix socket (JSON lines).
//! - [`daemon`]: what `vswitchd` does: networks, ports, the server loop, the state store.
//! - [`netlink`], [`netns`]: links, addresses, routes and namespaces, over netlink and syscalls.

pub mod api;
pub mod daemon;
pub mod netlink;
pub mod netns;
// The state store lives under daemon/ and is declared here until the daemon is wired to it
// (then: `pub mod store;` in daemon/mod.rs, and this goes).
#[path = "daemon/store/mod.rs"]
pub mod store;
