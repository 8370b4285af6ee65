//! vxlan
