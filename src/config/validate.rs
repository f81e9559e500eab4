//! The checks a config passes before anything uses it: limits, names, each remote's fields, the
//! host each engine runs on (`via`) and groups. Each failure names the file and the field.

use std::path::Path;

use super::{Config, LOCAL, RemoteKind};
use crate::error::{Error, Result};

impl Config {
    /// Checks what the types alone cannot; the error names `path` and the field at fault.
    pub(super) fn validate(&self, path: &Path) -> Result<()> {
        let invalid = |field: String, message: String| Error::ConfigInvalid {
            path: path.to_owned(),
            line: 0,
            column: 0,
            field,
            message,
        };
        if self.exec.output_limit_bytes < 1024 {
            return Err(invalid(
                "exec.output_limit_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.exec.default_timeout_secs > self.exec.max_timeout_secs {
            return Err(invalid(
                "exec.default_timeout_secs".into(),
                "must not exceed exec.max_timeout_secs".into(),
            ));
        }
        if self.remotes.contains_key(LOCAL) {
            return Err(invalid(
                "remotes.local".into(),
                "`local` is the built-in host for this machine; choose another name".into(),
            ));
        }
        for (name, remote) in &self.remotes {
            remote
                .check()
                .map_err(|(field, message)| invalid(format!("remotes.{name}.{field}"), message))?;
            self.check_via(name)
                .map_err(|message| invalid(format!("remotes.{name}.via"), message))?;
        }
        for (name, group) in &self.groups {
            self.check_group(name, group.members())
                .map_err(|message| invalid(format!("groups.{name}"), message))?;
        }
        let policies = std::iter::once(("policy".to_owned(), &self.policy))
            .chain(
                self.groups
                    .iter()
                    .map(|(name, g)| (format!("groups.{name}.policy"), g.policy())),
            )
            .chain(
                self.remotes
                    .iter()
                    .map(|(name, r)| (format!("remotes.{name}.policy"), &r.policy)),
            );
        for (field, policy) in policies {
            if let Some((at, message)) = policy.invalid_patterns().into_iter().next() {
                return Err(invalid(
                    format!("{field}.{at}"),
                    format!("not a valid regular expression: {message}"),
                ));
            }
        }
        Ok(())
    }

    /// An engine's CLI runs on `local` or an SSH host: never inside itself, another engine or
    /// a group (which would also allow cycles). A name the config does not know may be an
    /// `~/.ssh/config` alias or `user@host`; it is resolved when used.
    fn check_via(&self, name: &str) -> std::result::Result<(), String> {
        let Some(via) = self.remotes.get(name).and_then(|r| r.via.as_deref()) else {
            return Ok(());
        };
        let fix = "an engine's CLI runs on `local` or an SSH host";
        if via == name {
            return Err(format!("`{via}` is this remote itself; {fix}"));
        }
        if self.groups.contains_key(via) {
            return Err(format!("`{via}` is a group; {fix}, not on a group"));
        }
        match self.remotes.get(via) {
            Some(target) if target.kind != RemoteKind::Ssh => {
                let kind = format!("{:?}", target.kind).to_lowercase();
                let cycle = if target.via.as_deref() == Some(name) {
                    format!(" (and `{via}` runs via `{name}`: a cycle)")
                } else {
                    String::new()
                };
                Err(format!(
                    "`{via}` is a {kind} remote{cycle}; {fix}, not inside another engine"
                ))
            }
            _ => Ok(()),
        }
    }

    fn check_group(&self, name: &str, members: &[String]) -> std::result::Result<(), String> {
        if name == LOCAL || self.remotes.contains_key(name) {
            return Err(format!(
                "`{name}` already names a host; a group needs its own name"
            ));
        }
        if members.is_empty() {
            return Err("a group needs at least one member".into());
        }
        if let Some(nested) = members.iter().find(|m| self.groups.contains_key(*m)) {
            return Err(format!("member `{nested}` is a group; groups cannot nest"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(remotes: &str) -> String {
        let text = format!(r#"{{"remotes": {remotes}, "groups": {{"pool": ["gpu"]}}}}"#);
        Config::parse(&text, Path::new("/etc/o.json"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn via_must_be_local_or_an_ssh_host() {
        let gpu = r#""gpu": {"host": "gpu.example"}"#;
        let ok = format!(
            r#"{{{gpu}, "a": {{"kind": "docker", "container": "c", "via": "gpu"}},
                "b": {{"kind": "command", "command": ["x"], "via": "local"}},
                "c": {{"kind": "kubernetes", "pod": "p", "via": "me@elsewhere"}}}}"#
        );
        let text = format!(r#"{{"remotes": {ok}}}"#);
        Config::parse(&text, Path::new("o.json")).unwrap();

        let cases = [
            (
                r#""d": {"kind": "docker", "container": "c", "via": "d"}"#,
                "remotes.d.via: `d` is this remote itself",
            ),
            (
                r#""a": {"kind": "docker", "container": "c", "via": "b"},
                   "b": {"kind": "kubernetes", "pod": "p", "via": "a"}"#,
                "remotes.a.via: `b` is a kubernetes remote (and `b` runs via `a`: a cycle)",
            ),
            (
                r#""a": {"kind": "command", "command": ["x"], "via": "b"},
                   "b": {"kind": "docker", "container": "c"}"#,
                "remotes.a.via: `b` is a docker remote; an engine's CLI runs on `local` or an SSH host",
            ),
            (
                r#""a": {"kind": "docker", "container": "c", "via": "pool"}"#,
                "remotes.a.via: `pool` is a group",
            ),
        ];
        for (remotes, expected) in cases {
            let msg = refusal(&format!("{{{gpu}, {remotes}}}"));
            assert!(msg.starts_with("config file /etc/o.json: "), "{msg}");
            assert!(msg.contains(expected), "{msg}");
        }
    }
}
