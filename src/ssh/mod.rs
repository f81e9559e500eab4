//! Everything SSH: where a host name leads, how to connect and authenticate, and pooled connections.

pub mod connect;
pub mod pool;
pub mod spare;
pub mod target;

pub use pool::SshPool;
pub use target::SshTarget;
