//! TAP ports (filled in by the real-ports work).
