//! `outpost tunnel NAME [-L ...]`: a remote's port tunnels in the foreground, until Ctrl-C.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::tunnel::{Tunnels, forwards};

/// Opens the tunnels configured for `name` plus `extra` (`-L` specs), prints them, and serves
/// them until SIGINT or SIGTERM.
pub async fn run(hosts: Arc<Hosts>, name: &str, extra: &[String]) -> Result<()> {
    let forwards = forwards(&hosts, name, extra)?;
    if forwards.is_empty() {
        return Err(Error::Tunnel(format!(
            "no tunnels for `{name}`: add `tunnels` to remote `{name}` in the config, or pass -L PORT:HOST:HOSTPORT"
        )));
    }
    let tunnels = Tunnels::open(hosts, name, forwards).await?;
    for label in &tunnels.labels {
        println!("tunnel {label}");
    }
    eprintln!("outpost: tunnels open; Ctrl-C closes them");
    tunnels.run_until(crate::serve::termination()).await;
    Ok(())
}
