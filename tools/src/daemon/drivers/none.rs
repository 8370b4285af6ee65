//! The `none` driver: a sandbox with loopback only. Its endpoint is a record, nothing more.

use super::super::endpoints::Connect;
use super::super::undo::Undo;
use super::super::{ApiError, Daemon, EndpointRecord};
use super::NetworkDriver;

/// The `none` driver.
pub(super) struct NoneDriver;

impl NetworkDriver for NoneDriver {
    fn has_pool(&self) -> bool {
        false
    }

    fn only_one(&self) -> bool {
        true
    }

    fn sole_network(&self) -> bool {
        true
    }

    fn connect(
        &self,
        _daemon: &mut Daemon,
        c: &Connect<'_>,
        _undo: &mut Undo,
    ) -> Result<EndpointRecord, ApiError> {
        Ok(c.bare_endpoint())
    }
}
