//! Terminal commands other than serving: each subcommand's work in its own file.

pub mod cp;
pub mod exec;
pub mod fanout;
pub mod remote;
pub mod tunnel;
