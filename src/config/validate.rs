//! The checks a config passes before anything uses it: limits, names, each remote's fields, the
//! host each engine runs on (`via`) and groups. Each failure names the file and the field.

use std::path::Path;

use super::{Config, LOCAL, PrincipalSettings, RemoteKind};
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
        if self.exec.fanout_concurrency == 0 {
            return Err(invalid(
                "exec.fanout_concurrency".into(),
                "must be at least 1".into(),
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
        for (name, principal) in &self.serve.principals {
            check_principal(name, principal).map_err(|(field, message)| {
                invalid(format!("serve.principals.{name}{field}"), message)
            })?;
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
            )
            .chain(
                (self.serve.principals.iter())
                    .map(|(name, p)| (format!("serve.principals.{name}.policy"), &p.policy)),
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

    /// Checks that `serve.principals` names only tools in `known` (the tools layer knows them).
    pub fn check_principal_tools(&self, path: &Path, known: &[String]) -> Result<()> {
        for (name, principal) in &self.serve.principals {
            let tools = principal.tools.iter().flatten();
            if let Some(unknown) = tools.into_iter().find(|t| !known.contains(t)) {
                return Err(Error::ConfigInvalid {
                    path: path.to_owned(),
                    line: 0,
                    column: 0,
                    field: format!("serve.principals.{name}.tools"),
                    message: format!(
                        "`{unknown}` is not a tool; the tools are: {}",
                        known.join(", ")
                    ),
                });
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

/// A principal's name and its lists hold no empty names: (field suffix, message) otherwise.
fn check_principal(
    name: &str,
    principal: &PrincipalSettings,
) -> std::result::Result<(), (String, String)> {
    if name.trim().is_empty() {
        return Err((
            String::new(),
            "a principal needs a name (its JWT `sub`)".into(),
        ));
    }
    for (field, names) in [("hosts", &principal.hosts), ("tools", &principal.tools)] {
        if names.iter().flatten().any(|n| n.trim().is_empty()) {
            return Err((format!(".{field}"), "holds an empty name; remove it".into()));
        }
    }
    Ok(())
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

    #[test]
    fn principals_name_real_tools_and_no_empty_names() {
        let path = Path::new("/etc/o.json");
        let text = r#"{"serve": {"principals": {"ana": {"hosts": ["gpu", " "]}}}}"#;
        let msg = Config::parse(text, path).unwrap_err().to_string();
        assert!(
            msg.contains("serve.principals.ana.hosts: holds an empty name"),
            "{msg}"
        );
        let text = r#"{"serve": {"principals": {"ana": {"tools": ["list_jobs", "rm"]}}}}"#;
        let config = Config::parse(text, path).unwrap();
        let known = ["list_jobs".to_owned(), "job_output".to_owned()];
        let msg = config.check_principal_tools(path, &known).unwrap_err();
        let msg = msg.to_string();
        assert!(msg.starts_with("config file /etc/o.json: "), "{msg}");
        assert!(
            msg.contains("serve.principals.ana.tools: `rm` is not a tool; the tools are: list_jobs, job_output"),
            "{msg}"
        );
        let fine = r#"{"serve": {"principals": {"bob": {"tools": ["job_output"]}}}}"#;
        let fine = Config::parse(fine, path).unwrap();
        fine.check_principal_tools(path, &known).unwrap();
    }
}
