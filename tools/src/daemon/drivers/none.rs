//! The `none` driver: a sandbox with loopback only. Its endpoint is a record, nothing more.

use super::{Kind, NetworkDriver};

/// The `none` driver.
pub(super) struct NoneDriver;

impl NetworkDriver for NoneDriver {
    fn kind(&self) -> Kind {
        Kind::Namespace
    }
}
