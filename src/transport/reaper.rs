//! Outpost as the reaper of what its local commands leave behind: on Linux it becomes a child
//! subreaper, so a background child whose shell has exited is re-parented to outpost (not to a
//! PID 1 that may never reap) and reaped here when it ends.
//!
//! Only processes outpost spawned itself are waited for by their owners (tokio's `Child`); they
//! are registered in [`DIRECT`] while they live, and the reaper leaves them alone. Everything
//! else re-parented to outpost is reaped as soon as it is a zombie.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Mutex, MutexGuard};

use tokio::process::{Child, Command};
use tokio_util::task::AbortOnDropHandle;

/// PIDs of the children outpost spawned and waits for itself. Held while spawning, so a child
/// that ends at once is never taken for an orphan.
static DIRECT: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn direct() -> MutexGuard<'static, BTreeSet<i32>> {
    DIRECT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Spawns `command` as a child that its caller waits for; call [`waited`] once it has been.
pub(super) fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut direct = direct();
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        direct.insert(pid as i32);
    }
    Ok(child)
}

/// The child `pid` from [`spawn`] has been waited for: its PID may be reused by anyone.
pub(super) fn waited(pid: Option<u32>) {
    if let Some(pid) = pid {
        direct().remove(&(pid as i32));
    }
}

/// Reaps orphans re-parented to outpost while it lives; dropping it stops that (outpost stays
/// a subreaper: orphans then wait as zombies until outpost exits and they move on to PID 1).
#[derive(Debug)]
pub struct Reaper {
    _task: Option<AbortOnDropHandle<()>>,
}

impl Reaper {
    /// Makes this process a child subreaper and starts reaping. Where that is not possible (not
    /// Linux, or the kernel refuses) orphans go to PID 1 as before; that is logged, not an error.
    pub fn start() -> Self {
        let task = match become_subreaper() {
            Ok(()) => match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                Ok(signals) => Some(AbortOnDropHandle::new(tokio::spawn(reap_on(signals)))),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch SIGCHLD; orphans are not reaped");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "not a child subreaper; orphans go to PID 1");
                None
            }
        };
        Self { _task: task }
    }
}

#[cfg(target_os = "linux")]
fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[cfg(not(target_os = "linux"))]
fn become_subreaper() -> nix::Result<()> {
    Err(nix::errno::Errno::ENOSYS)
}

async fn reap_on(mut signals: tokio::signal::unix::Signal) {
    loop {
        reap_orphans();
        if signals.recv().await.is_none() {
            return;
        }
    }
}

/// Waits for every zombie child of this process that is not one of [`DIRECT`]'s.
fn reap_orphans() {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let direct = direct();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if direct.contains(&pid) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if zombie_child_of(&stat, me) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let reaped = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            tracing::debug!(pid = pid.as_raw(), ?reaped, "reaped an orphan");
        }
    }
}

/// Whether a `/proc/PID/stat` line is of a zombie whose parent is `parent`.
fn zombie_child_of(stat: &str, parent: i32) -> bool {
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
    state == Some("Z") && ppid == Some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_parent_after_the_last_parenthesis() {
        assert!(zombie_child_of("12 (a) b) Z 7 12 12 0", 7));
        assert!(!zombie_child_of("12 (a) b) S 7 12 12 0", 7));
        assert!(!zombie_child_of("12 (a) b) Z 8 12 12 0", 7));
        assert!(!zombie_child_of("garbage", 7));
    }
}
