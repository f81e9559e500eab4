//! outpost: an MCP server that runs commands on this machine and remote hosts.
//!
//! A request flows one way: MCP request → tool ([`tools`]) → host lookup ([`hosts`]) →
//! transport ([`transport`]) → a [`transport::Process`] whose events a job ([`jobs`]) records
//! → progress notifications and the result. `spawn_claude` turns go through [`claude`], which keeps
//! Claude Code processes warm between turns on top of the same transports.

pub mod atomic_file;
pub mod audit;
pub mod auth;
pub mod bridge;
pub mod claude;
pub mod cli;
pub mod config;
pub mod error;
pub mod health;
pub mod home;
pub mod hosts;
pub mod jobs;
pub mod output;
pub mod schema;
pub mod serve;
pub mod ssh;
pub mod sync;
pub mod tls;
pub mod tools;
pub mod transfer;
pub mod transport;
pub mod tunnel;

pub use error::{Error, Result};
