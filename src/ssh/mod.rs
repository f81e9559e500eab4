//! Everything SSH: where a host name leads, how to connect and authenticate, pooled connections, and the remote wrapper.

pub mod connect;
pub mod pool;
pub mod target;
pub mod wrapper;

pub use pool::SshPool;
pub use target::SshTarget;
