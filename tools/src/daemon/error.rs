//! A refused request: its kind (not found, conflict, invalid, internal) and its message.

use crate::api::{ErrorKind, Response};

/// A failed request: what kind of failure, and the message the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// How a client should take it.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// What the request names does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }

    /// The request clashes with what exists.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Conflict, message)
    }

    /// The request itself is wrong.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Invalid, message)
    }

    /// The daemon or the system failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, message)
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// The error of an address pool operation, with the kind it means for the client.
    pub fn from_ipam(e: ipam::IpamError) -> ApiError {
        use ipam::IpamError as E;
        let kind = match e {
            E::AddressInUse { .. }
            | E::OverlappingSubnets { .. }
            | E::PoolExhausted { .. }
            | E::NoDefaultSubnet => ErrorKind::Conflict,
            E::NotAllocated { .. } | E::UnknownPool { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Invalid,
        };
        ApiError::new(kind, e.to_string())
    }

    /// The answer of a teardown that went on past each problem: `done` when there was none,
    /// else an error saying `what` happened and listing every problem.
    pub fn unless_problems<T>(problems: &[String], what: &str, done: T) -> Result<T, ApiError> {
        if problems.is_empty() {
            return Ok(done);
        }
        Err(ApiError::internal(format!(
            "{what}, with problems: {}",
            problems.join("; ")
        )))
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        Response::refused(e.kind, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_reach_the_response() {
        let r: Response = ApiError::conflict("network blue already exists").into();
        assert_eq!(r.kind, Some(ErrorKind::Conflict));
        assert_eq!(r.error.as_deref(), Some("network blue already exists"));
        assert!(!r.ok);
        let e = ApiError::from_ipam(ipam::IpamError::NoDefaultSubnet);
        assert_eq!(e.kind, ErrorKind::Conflict);
        let e = ApiError::unless_problems(&["x".into(), "y".into()], "sandbox a removed", ())
            .unwrap_err();
        assert_eq!(e.to_string(), "sandbox a removed, with problems: x; y");
        assert_eq!(e.kind, ErrorKind::Internal);
        assert_eq!(ApiError::unless_problems(&[], "done", 7), Ok(7));
    }
}
