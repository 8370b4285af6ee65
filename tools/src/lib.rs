//! tools
pub mod netlink;
pub mod netns;
