//! AF_PACKET ports (filled in by the real-ports work).
