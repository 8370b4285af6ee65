//! Requests as named steps: each step that changes something registers how to undo it, and a
//! failed request undoes the steps already done, last first.

use super::{ApiError, Daemon};

/// One step's undo.
type Step = Box<dyn FnOnce(&mut Daemon)>;

/// The undo of the steps done so far in one request.
#[derive(Default)]
pub(super) struct Undo {
    steps: Vec<Step>,
}

impl Undo {
    /// Registers how to undo the step just done.
    pub(super) fn push(&mut self, step: impl FnOnce(&mut Daemon) + 'static) {
        self.steps.push(Box::new(step));
    }
}

impl Daemon {
    /// Runs `steps`; when they fail, undoes every step they registered, last first, puts IPAM
    /// back as the store holds it, and returns their error.
    pub(super) fn transaction<T>(
        &mut self,
        steps: impl FnOnce(&mut Daemon, &mut Undo) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut undo = Undo::default();
        let result = steps(self, &mut undo);
        if result.is_err() {
            for step in undo.steps.into_iter().rev() {
                step(self);
            }
            self.forget_uncommitted_ipam();
        }
        result
    }
}
