//! The library's one error type: every failure that stops a request, with the cause and the fix.

use std::path::PathBuf;

/// Everything that can go wrong before or while running something on a host.
///
/// A command that runs and exits non-zero is *not* an error: it is a result.
/// Each message names the cause and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown host `{name}`. Known hosts: {known}. Add it with `outpost remote add {name} user@host`, or as a `Host` entry in ~/.ssh/config"
    )]
    UnknownHost { name: String, known: String },

    #[error(
        "no host given and no default host is set: pass `host` (see the `list_hosts` tool) or set one with `outpost remote set-default NAME`"
    )]
    NoDefaultHost,

    #[error(
        "working directory `{cwd}` does not exist on host `{host}`: pass an existing directory as `cwd`"
    )]
    MissingCwd { host: String, cwd: String },

    #[error("working directory `{cwd}` on host `{host}` is not a directory")]
    CwdNotDirectory { host: String, cwd: String },

    #[error("could not start the command on host `{host}`: {source}")]
    Spawn {
        host: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot run on `{host}`: `{program}` failed before the command started: {reason}{hint}"
    )]
    Engine {
        host: String,
        program: String,
        reason: String,
        hint: String,
    },

    #[error("host `{group}` is a group ({members}): name one of its members here")]
    IsGroup { group: String, members: String },

    #[error("no member of group `{group}` can take work now: {states}")]
    NoHealthyMember { group: String, states: String },

    #[error("tunnel: {0}")]
    Tunnel(String),

    #[error("authentication: {0}")]
    Auth(String),

    #[error("cannot serve: {0}")]
    Serve(String),

    /// A certificate or key file given with `flag` that cannot be used.
    #[error("{flag} {}: {problem}", path.display())]
    TlsFile {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },

    #[error("TLS: {0}")]
    Tls(String),

    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    #[error(
        "`{principal}` may not use host `{host}`, so nothing was run; its hosts are: {allowed}. Name one of them as `host`, or ask the server's operator to widen `serve.principals.{principal}.hosts` or the token's `hosts`"
    )]
    HostOutOfScope {
        principal: String,
        host: String,
        allowed: String,
    },

    #[error(
        "session `{session_id}` was started by another principal, so `{principal}` may not resume, fork or sync it: see `list_sessions` for yours, or start a new session without `session_id`"
    )]
    NotYourSession {
        principal: String,
        session_id: String,
    },

    #[error(
        "no job `{0}`: it never existed here, or it finished long enough ago to be dropped (jobs live in this server's memory and are lost on restart)"
    )]
    UnknownJob(String),

    /// `line` 0 for a problem found after parsing (the error then names the field only).
    #[error("config file {}{}: {field}: {message}", path.display(), position(*line, *column))]
    ConfigInvalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },

    #[error("cannot read config file {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write config file {}: {source}", path.display())]
    ConfigWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot lock {} to change config file {} (its directory must be writable): {source}",
        lock.display(),
        path.display()
    )]
    ConfigLock {
        path: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "sudo on `{host}` wants a password for this command, so nothing ran (outpost never answers a password prompt). Allow it without one by adding this rule on `{host}` (`visudo -f /etc/sudoers.d/outpost`):\n  {rule}"
    )]
    SudoNeedsPassword { host: String, rule: String },

    #[error(
        "sudo on `{host}` does not let `env` ({names}) through to this command, so nothing ran. Add the SETENV tag to its rule on `{host}`:\n  {rule}\nor leave out `env`"
    )]
    SudoEnvRefused {
        host: String,
        names: String,
        rule: String,
    },

    #[error(
        "`sudo` is not installed on `{host}`, so nothing ran: install it there (Debian: `apt-get install sudo`) and give the login user a NOPASSWD rule, or run without `sudo: true`"
    )]
    SudoMissing { host: String },

    /// A transfer step failed: `reason` names the cause and the fix.
    #[error("cannot {op} `{place}`: {reason}")]
    Transfer {
        op: &'static str,
        place: String,
        reason: String,
    },

    #[error(
        "{count} file(s) at the destination differ from the source and would be replaced ({paths}); nothing was copied. Pass `overwrite: true` to replace them, or pick another destination"
    )]
    TransferWouldOverwrite { count: usize, paths: String },

    #[error("cancelled by the client")]
    Cancelled,

    #[error("cannot connect to `{host}` ({addr}): {reason}")]
    SshConnect {
        host: String,
        addr: String,
        reason: String,
    },

    #[error(
        "host key of `{host}` is not known, so nothing was run. Its {algorithm} key has fingerprint {fingerprint}. If that is the right key, trust it with:\n  {command}\nor set `strict_host_key_checking: \"accept-new\"` for this remote"
    )]
    HostKeyUnknown {
        host: String,
        algorithm: String,
        fingerprint: String,
        command: String,
    },

    #[error(
        "HOST KEY OF `{host}` HAS CHANGED (now {fingerprint}); it does not match {path}:{line}. This may be an attack (or the host was reinstalled). Nothing was run. If the change is expected, remove the old key with `ssh-keygen -R {key_host} -f {path}` and connect again"
    )]
    HostKeyChanged {
        host: String,
        key_host: String,
        fingerprint: String,
        path: String,
        line: usize,
    },

    #[error(
        "authentication to `{host}` as `{user}` failed; tried: {tried}. outpost uses keys only (no passwords): load a key into ssh-agent, or set `identity_file`"
    )]
    AuthFailed {
        host: String,
        user: String,
        tried: String,
    },

    #[error("ssh channel to `{host}` failed: {reason}")]
    SshChannel { host: String, reason: String },

    #[error(
        "`claude` was not found on host `{host}`; tried: {tried}. Install Claude Code there (`npm install -g @anthropic-ai/claude-code`) or set `claude_path` for the remote in outpost's config"
    )]
    ClaudeNotFound { host: String, tried: String },

    #[error(
        "Claude found no session `{session_id}` in `{cwd}` on host `{host}`. Claude only resumes sessions started in the same project directory: pass the session's `cwd` (see `list_sessions`), or bring its file to this host with `sync_sessions`"
    )]
    ClaudeSessionNotFound {
        session_id: String,
        host: String,
        cwd: String,
    },

    #[error(
        "Claude's process on host `{host}` ended mid-turn ({status}){stderr}. The session stays resumable: call `spawn_claude` again with its `session_id`"
    )]
    ClaudeDied {
        host: String,
        status: String,
        stderr: String,
    },

    #[error(
        "session sync with host `{host}` failed: {reason}. Nothing was overwritten; run `sync_sessions` again to retry"
    )]
    Sync { host: String, reason: String },

    #[error("MCP session failed: {0}")]
    Mcp(String),

    #[error("the server is shutting down")]
    ShuttingDown,

    #[error(
        "host key of `{}` is not known, so nothing was run. Its {} key has fingerprint {}. strict_host_key_checking is `ask`, but nobody confirmed it: {}. If that is the right key, trust it with:\n  {}\nor set `strict_host_key_checking: \"accept-new\"` for this remote",
        .0.host, .0.algorithm, .0.fingerprint, .0.why, .0.command
    )]
    HostKeyToConfirm(Box<UnknownHostKey>),

    #[error(
        "the {algorithm} host key {fingerprint} of `{host}` was declined by the person asked; nothing was run and {known_hosts} is unchanged. Check the fingerprint with the host's administrator before trusting it"
    )]
    HostKeyDeclined {
        host: String,
        algorithm: String,
        fingerprint: String,
        known_hosts: String,
    },

    #[error(
        "{what} on `{host}` is refused by the deny pattern `{pattern}` of `{field}` in {file}; nothing was run. Deny patterns guard against mistakes; if this one is wrong, change `{field}` there"
    )]
    PolicyDenied {
        what: String,
        host: String,
        pattern: String,
        field: String,
        file: String,
    },

    #[error(
        "{what} on `{host}` needs a person's confirmation ({why}) and was not run: {answer}. To run it without asking, change `{field}` there"
    )]
    NotConfirmed {
        what: String,
        host: String,
        /// Which policy wants it, and in which file.
        why: String,
        field: String,
        answer: String,
    },
}

/// A host key not in known_hosts yet, under `strict_host_key_checking: ask`: what the person is
/// shown, and what recording it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHostKey {
    /// The host name as the call gave it.
    pub host: String,
    /// Name and port the key is recorded under.
    pub key_host: String,
    pub key_port: u16,
    pub known_hosts: PathBuf,
    /// e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// OpenSSH's `SHA256:...`.
    pub fingerprint: String,
    /// The key in OpenSSH format.
    pub key: String,
    /// The shell command that trusts it by hand.
    pub command: String,
    /// Why nobody confirmed it (when the error reaches the caller).
    pub why: String,
}

impl Error {
    /// Whether the host itself could not be reached or could not start anything (so another
    /// member of a group may do better), as opposed to a problem with the request.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::SshConnect { .. }
                | Error::AuthFailed { .. }
                | Error::SshChannel { .. }
                | Error::Engine { .. }
        )
    }
}

/// `:line:column`, or nothing when the position is unknown (line 0).
fn position(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{column}")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, `: `-separated, each said once. This crate's messages
/// already end with their `#[source]` (so that every `{error}` is complete); a cause whose text
/// the line holds already is not repeated.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapper that, like anyhow's `context`, says only its own part.
    #[derive(Debug, thiserror::Error)]
    #[error("while starting")]
    struct Context(#[source] Error);

    #[test]
    fn report_says_each_cause_once() {
        let read = Error::ConfigRead {
            path: "/etc".into(),
            source: std::io::Error::from(std::io::ErrorKind::IsADirectory),
        };
        let line = report(&Context(read));
        assert_eq!(
            line,
            "while starting: cannot read config file /etc: is a directory"
        );
        let plain = std::io::Error::other("disk on fire");
        assert_eq!(report(&plain), "disk on fire");
    }
}
