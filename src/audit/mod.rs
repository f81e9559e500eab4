//! The audit log: one JSON line per tool call (who, what, where, outcome), secrets redacted, rotated by size.

mod decision;
mod redact;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use serde::Serialize;

pub use decision::{Decision, Verdict};
pub use redact::{REDACTED, Redactor};

use decision::DecisionRecord;

use crate::config::AuditSettings;
use crate::error::{Error, Result};

/// Characters of a command or prompt kept in a record.
const EXCERPT_CHARS: usize = 300;

/// One tool call as the audit log records it.
#[derive(Debug, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// JWT `sub`, `stdio` or `anonymous`.
    pub principal: String,
    pub tool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The command, prompt or arguments, redacted and cut to a few hundred characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// `ok`, `error` (the tool failed), `rejected` (never ran), `cancelled`, or a job status.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it failed, redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// What the command line says about the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuditChoice {
    /// As the config says (`audit`), with its defaults.
    #[default]
    Configured,
    /// `--audit-log FILE`: this file, whatever the config says.
    File(PathBuf),
    /// `--no-audit-log`: none.
    Off,
}

/// `$XDG_STATE_HOME/outpost/audit/audit.log`: where the log goes when nothing names a file.
pub fn default_path() -> PathBuf {
    crate::config::state_dir().join("audit/audit.log")
}

/// The file to audit to, if any: the flag's, else the config's when not turned off; a network
/// server (or `enabled: true`) keeps one at the default path when none is named.
pub fn path_in_force(
    settings: &AuditSettings,
    choice: &AuditChoice,
    network: bool,
) -> Option<PathBuf> {
    match (choice, settings.enabled) {
        (AuditChoice::Off, _) | (AuditChoice::Configured, Some(false)) => None,
        (AuditChoice::File(path), _) => Some(path.clone()),
        (AuditChoice::Configured, enabled) => match &settings.path {
            Some(path) => Some(path.clone()),
            None => (enabled == Some(true) || network).then(default_path),
        },
    }
}

/// An open audit log. Writes are small and synchronous; a failed write is logged, never fatal.
pub struct AuditLog {
    file: Mutex<FileRotate<AppendCount>>,
    redactor: Redactor,
}

impl AuditLog {
    /// Opens the log named by `settings` (none when no path is set); `secrets` are values to
    /// redact wherever they appear.
    pub fn open(settings: &AuditSettings, secrets: Vec<String>) -> Result<Option<Self>> {
        let Some(path) = &settings.path else {
            return Ok(None);
        };
        let cannot = |e: std::io::Error| {
            Error::Serve(format!("cannot open the audit log {}: {e}", path.display()))
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        // Directories it creates are the owner's alone; existing ones are left as they are.
        let mut directory = std::fs::DirBuilder::new();
        directory
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(cannot)?;
        // Fail here, with a message, rather than on the first write.
        let mut options = OpenOptions::new();
        options.append(true).create(true).mode(0o600);
        options.open(path).map_err(cannot)?;
        let file = FileRotate::new(
            path,
            AppendCount::new(settings.keep.max(1)),
            ContentLimit::BytesSurpassed(settings.max_bytes.max(1024) as usize),
            Compression::None,
            Some(options),
        );
        Ok(Some(Self {
            file: Mutex::new(file),
            redactor: Redactor::new(secrets),
        }))
    }

    /// `text` redacted and cut to an excerpt.
    pub fn excerpt(&self, text: &str) -> String {
        let clean = self.redactor.redact(text);
        match clean.char_indices().nth(EXCERPT_CHARS) {
            Some((end, _)) => format!("{}…", &clean[..end]),
            None => clean,
        }
    }

    /// Appends the record of `decision`, its texts redacted and cut.
    pub fn decision(&self, decision: &Decision<'_>) {
        self.write(&DecisionRecord {
            time: now(),
            event: "decision",
            principal: decision.principal.to_string(),
            host: decision.host.map(str::to_owned),
            what: self.excerpt(decision.what),
            decision: decision.verdict,
            decided_by: decision.decided_by.to_owned(),
            reason: decision.reason.map(|reason| self.excerpt(reason)),
        });
    }

    /// Appends one record as a JSON line.
    pub fn write(&self, record: &impl Serialize) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => return tracing::warn!(error = %e, "cannot encode an audit record"),
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

/// The time now in RFC 3339 with milliseconds, UTC.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Milliseconds in `elapsed`, saturating.
pub fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(input: &str) -> AuditRecord {
        AuditRecord {
            time: now(),
            principal: "ana".into(),
            tool: "remote_exec".into(),
            host: Some("gpu".into()),
            input: Some(input.into()),
            outcome: "ok".into(),
            exit_code: Some(0),
            error: None,
            duration_ms: 5,
        }
    }

    #[test]
    fn records_are_json_lines_and_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        let settings = AuditSettings {
            path: Some(path.clone()),
            max_bytes: 1024,
            keep: 2,
            ..AuditSettings::default()
        };
        let log = AuditLog::open(&settings, vec![]).unwrap().unwrap();
        for i in 0..40 {
            log.write(&record(&format!("echo {i}")));
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 1024 + 400, "{}", current.len());
        for line in current.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["principal"], "ana");
        }
        assert!(path.with_file_name("audit.log.1").exists());
        assert!(path.with_file_name("audit.log.2").exists());
        assert!(
            !path.with_file_name("audit.log.3").exists(),
            "only `keep` old files"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn network_servers_audit_by_default_and_off_means_off() {
        let default = AuditSettings::default();
        let configured = AuditChoice::Configured;
        assert_eq!(
            path_in_force(&default, &configured, true),
            Some(default_path())
        );
        assert_eq!(path_in_force(&default, &configured, false), None);
        let off = AuditSettings {
            enabled: Some(false),
            path: Some("/x/a.log".into()),
            ..default.clone()
        };
        assert_eq!(path_in_force(&off, &configured, true), None);
        let flag = AuditChoice::File("/y/b.log".into());
        assert_eq!(path_in_force(&off, &flag, false), Some("/y/b.log".into()));
        let named = AuditSettings {
            path: Some("/x/a.log".into()),
            ..default.clone()
        };
        assert_eq!(
            path_in_force(&named, &configured, false),
            Some("/x/a.log".into())
        );
        assert_eq!(path_in_force(&named, &AuditChoice::Off, true), None);
        let on = AuditSettings {
            enabled: Some(true),
            ..default
        };
        assert_eq!(path_in_force(&on, &configured, false), Some(default_path()));
    }

    #[test]
    fn the_directories_it_creates_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit/audit.log");
        let settings = AuditSettings {
            path: Some(path.clone()),
            ..AuditSettings::default()
        };
        AuditLog::open(&settings, vec![]).unwrap().unwrap();
        for private in [path.parent().unwrap(), &dir.path().join("state")] {
            let mode = std::fs::metadata(private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", private.display());
        }
    }

    #[test]
    fn excerpts_are_redacted_then_cut() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSettings {
            path: Some(dir.path().join("a.log")),
            ..AuditSettings::default()
        };
        let log = AuditLog::open(&settings, vec!["sekrit-value-42".into()])
            .unwrap()
            .unwrap();
        assert_eq!(log.excerpt("say sekrit-value-42"), "say [REDACTED]");
        let long = "x".repeat(1000);
        assert_eq!(log.excerpt(&long).chars().count(), EXCERPT_CHARS + 1);
    }
}
