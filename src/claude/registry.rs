//! The session registry: a small state file remembering where each Claude session ran, so it can
//! be listed and resumed by id alone, across server restarts.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::atomic_file::{lock, write_atomic};
use crate::auth::Principal;

/// Sessions remembered at most; the least recently used are forgotten first.
const MAX_SESSIONS: usize = 500;

/// What the process of a session is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// A turn is under way.
    Running,
    /// Its process is alive and waiting: the next turn starts at once.
    Warm,
    /// No process: the next turn resumes it (`--resume`).
    Closed,
}

/// One session as the registry keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionRecord {
    pub session_id: String,
    pub host: String,
    /// Project directory on the host (as Claude reports it: symlinks resolved).
    pub cwd: String,
    /// When the session was started (RFC 3339).
    pub created: String,
    /// When its last turn started (RFC 3339).
    pub last_turn: String,
    pub status: SessionStatus,
    /// Turns run through outpost.
    #[serde(default)]
    pub turns: u64,
    /// Whether the last turn ended in error (API error, interrupt, turn limit, ...).
    #[serde(default)]
    pub last_is_error: bool,
    /// Start of the last result's text.
    #[serde(default)]
    pub last_result: String,
    /// Cost of the session so far, in US dollars, as Claude reports it.
    #[serde(default)]
    pub total_cost_usd: f64,
    /// The session this one was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// pid of the outpost server holding its process, while running or warm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
    /// The network principal (JWT `sub`) that started it; absent for the local client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl SessionRecord {
    /// Whether `principal` may see and resume it: the local client sees every session, a
    /// network principal only those it started.
    pub fn belongs_to(&self, principal: &Principal) -> bool {
        principal.is_local() || self.owner.as_deref() == Some(principal.as_str())
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    sessions: Vec<SessionRecord>,
}

/// The registry file. Updates are read-modify-write under an advisory lock, so several outpost
/// servers (Claude Desktop's, Claude Code's) can share it; each write is atomic.
pub struct Registry {
    path: PathBuf,
}

/// Now, in RFC 3339 (UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Registry {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// `$XDG_STATE_HOME/outpost/sessions.json` (or the platform's equivalent).
    pub fn default_path() -> PathBuf {
        crate::config::state_dir().join("sessions.json")
    }

    /// One session's record, if known.
    pub fn get(&self, session_id: &str) -> Option<SessionRecord> {
        self.all().into_iter().find(|r| r.session_id == session_id)
    }

    /// Every session, most recent turn first. A warm or running record whose server is gone
    /// reads as closed.
    pub fn all(&self) -> Vec<SessionRecord> {
        let mut sessions = read(&self.path).unwrap_or_default().sessions;
        for record in &mut sessions {
            if record.status != SessionStatus::Closed && !record.server_pid.is_some_and(alive) {
                record.status = SessionStatus::Closed;
                record.server_pid = None;
            }
        }
        sessions.sort_by(|a, b| b.last_turn.cmp(&a.last_turn));
        sessions
    }

    /// Applies `change` to the record of `session_id` (or to `create` when there is none; with
    /// neither, nothing happens) and saves. Failures are logged: the registry never fails a turn.
    pub fn update(
        &self,
        session_id: &str,
        create: Option<SessionRecord>,
        change: impl FnOnce(&mut SessionRecord),
    ) {
        if let Err(e) = self.try_update(session_id, create, change) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot update the session registry");
        }
    }

    fn try_update(
        &self,
        session_id: &str,
        create: Option<SessionRecord>,
        change: impl FnOnce(&mut SessionRecord),
    ) -> std::io::Result<()> {
        let _lock = lock(&self.path)?;
        let mut state = read(&self.path).unwrap_or_else(|()| {
            // Never write over records this server cannot read (a newer outpost's, or damage):
            // keep them aside and start a new registry.
            let aside = self.path.with_extension(format!("unreadable-{}", std::process::id()));
            match std::fs::rename(&self.path, &aside) {
                Ok(()) => tracing::warn!(kept = %aside.display(), "unreadable session registry moved aside"),
                Err(e) => tracing::warn!(error = %e, "cannot move the unreadable session registry aside"),
            }
            StateFile::default()
        });
        let index = match state
            .sessions
            .iter()
            .position(|r| r.session_id == session_id)
        {
            Some(index) => index,
            None => match create {
                Some(record) => {
                    state.sessions.push(record);
                    state.sessions.len() - 1
                }
                None => return Ok(()),
            },
        };
        change(&mut state.sessions[index]);
        if state.sessions.len() > MAX_SESSIONS {
            state.sessions.sort_by(|a, b| b.last_turn.cmp(&a.last_turn));
            state.sessions.truncate(MAX_SESSIONS);
        }
        let mut text = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_atomic(&self.path, &text)
    }
}

/// The state file's content (a missing file is an empty registry); `Err` when it cannot be
/// parsed, after logging why.
fn read(path: &Path) -> Result<StateFile, ()> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable session registry");
        }),
        Err(_) => Ok(StateFile::default()),
    }
}

fn alive(pid: u32) -> bool {
    pid == std::process::id()
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, turn: &str) -> SessionRecord {
        SessionRecord {
            session_id: id.into(),
            host: "gpu".into(),
            cwd: "/p".into(),
            created: turn.into(),
            last_turn: turn.into(),
            status: SessionStatus::Warm,
            turns: 1,
            last_is_error: false,
            last_result: String::new(),
            total_cost_usd: 0.0,
            forked_from: None,
            server_pid: Some(std::process::id()),
            owner: None,
        }
    }

    #[test]
    fn updates_persist_and_dead_servers_read_as_closed() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path().join("state/sessions.json"));
        registry.update("a", Some(record("a", "2026-01-01T00:00:00Z")), |_| {});
        registry.update("b", Some(record("b", "2026-01-02T00:00:00Z")), |r| {
            r.server_pid = Some(i32::MAX as u32);
        });
        registry.update("a", None, |r| r.turns = 2);
        registry.update("c", None, |r| r.turns = 9);
        let all = registry.all();
        assert_eq!(
            all.iter()
                .map(|r| r.session_id.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(all[0].status, SessionStatus::Closed);
        assert_eq!(all[1].status, SessionStatus::Warm);
        assert_eq!(registry.get("a").unwrap().turns, 2);
        assert!(registry.get("c").is_none());
    }

    #[test]
    fn sessions_belong_to_the_network_principal_that_started_them() {
        let mut ana = record("a", "2026-01-01T00:00:00Z");
        ana.owner = Some("ana".into());
        assert!(ana.belongs_to(&Principal::new("ana")));
        assert!(!ana.belongs_to(&Principal::new("bob")));
        assert!(
            ana.belongs_to(&Principal::stdio()),
            "the local client sees all"
        );
        let local = record("b", "2026-01-01T00:00:00Z");
        assert!(
            !local.belongs_to(&Principal::new("stdio")),
            "a token named stdio is not it"
        );
        assert!(local.belongs_to(&Principal::stdio()));
    }

    #[test]
    fn an_unreadable_registry_is_kept_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        std::fs::write(&path, "{\"sessions\": \"from a newer outpost\"}").unwrap();
        let registry = Registry::new(path.clone());
        assert!(registry.all().is_empty());
        registry.update("a", Some(record("a", "2026-01-01T00:00:00Z")), |_| {});
        assert_eq!(registry.all().len(), 1);
        let aside = path.with_extension(format!("unreadable-{}", std::process::id()));
        assert!(
            std::fs::read_to_string(aside)
                .unwrap()
                .contains("newer outpost")
        );
    }
}
