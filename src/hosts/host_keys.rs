//! Meeting unknown host keys before a call starts: the SSH connections a call on a host (or any
//! member of a group) would open under `strict_host_key_checking: ask` are opened first, so a key
//! that needs a person's confirmation is found before anything runs.

use super::{Hosts, LOCAL};
use crate::config::HostKeyPolicy;
use crate::error::{Error, Result};
use crate::ssh::SshTarget;

impl Hosts {
    /// Opens (into the pool, for the call to use) the connections a call on `name` would make
    /// whose host-key policy, or a ProxyJump hop's, is `ask`. Only an unknown key to confirm
    /// ([`Error::HostKeyToConfirm`]) is an error here; any other failure is the call's to report.
    pub async fn meet_host_keys(&self, name: &str) -> Result<()> {
        let hosts = match self.group(name) {
            Some(members) => members.to_vec(),
            None => vec![name.to_owned()],
        };
        for host in hosts {
            let Some(target) = self.ssh_target_of(&host) else {
                continue;
            };
            if !asks(&target) {
                continue;
            }
            // The lease ends here; its connection stays pooled for the call.
            if let Err(e @ Error::HostKeyToConfirm(_)) = self.pool.lease(&target).await {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The SSH host a call on `name` connects to: itself, or the host its engine runs via.
    fn ssh_target_of(&self, name: &str) -> Option<SshTarget> {
        let via = self.config.remotes.get(name).and_then(|r| r.via.as_deref());
        match self.ssh_target(name) {
            Some(target) => Some(target),
            None => via.filter(|v| *v != LOCAL).and_then(|v| self.ssh_target(v)),
        }
    }
}

/// Whether connecting to `target` may meet a key to confirm: its policy or a hop's is `ask`.
fn asks(target: &SshTarget) -> bool {
    target.host_key_policy == HostKeyPolicy::Ask || target.jump.as_deref().is_some_and(asks)
}
