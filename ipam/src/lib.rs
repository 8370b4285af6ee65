//! IP address management for vswitch: subnets, pools, gateways, reserved addresses, allocation and release.
//!
//! The pieces, from the bottom up:
//! - [`cidr`]: [`Cidr`], an IPv4 network written as `172.17.0.0/16`;
//! - [`defaults`]: Docker's default pools and [`choose_default_subnet`];
//! - [`pool`]: [`Pool`], one subnet's addresses and who holds them;
//! - [`driver`]: the [`IpamDriver`] trait (Docker's IPAM driver API) and [`DefaultIpam`].
//!
//! The crate is plain data and logic: it makes no system call, prints nothing and never touches
//! the network. The caller passes in what it needs to know of the host (its routes) and saves the
//! serializable state itself. Every error is an [`IpamError`], and every failing operation
//! leaves the state as it was.
//!
//! ```
//! use ipam::{DefaultIpam, IpamDriver, PoolRequest};
//!
//! let mut ipam = DefaultIpam::new();
//! let pool = ipam.request_pool(PoolRequest::default())?;
//! assert_eq!(pool.as_str(), "172.17.0.0/16");
//! assert_eq!(ipam.pool(&pool).unwrap().gateway(), Some("172.17.0.1".parse().unwrap()));
//! assert_eq!(ipam.request_address(&pool, "container-1", None)?, "172.17.0.2".parse::<std::net::Ipv4Addr>().unwrap());
//! # Ok::<(), ipam::IpamError>(())
//! ```

#![warn(missing_docs)]

pub mod cidr;
pub mod defaults;
pub mod driver;
pub mod error;
pub mod pool;

pub use cidr::Cidr;
pub use defaults::{choose_default_subnet, default_pool_candidates};
pub use driver::{check_usable_subnet, DefaultIpam, IpamChange, IpamDriver, PoolId, PoolRequest};
pub use error::{IpamError, Unusable, UnusableSubnet};
pub use pool::{Pool, PoolMeta, MAX_POOL_PREFIX_LEN};
