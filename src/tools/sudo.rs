//! `remote_exec` with `sudo: true`: the command line that runs through `sudo -n`, and sudo's
//! refusals turned into errors that name the sudoers rule to add.

use std::time::Duration;

use super::Outpost;
use super::exec::{ExecResult, RemoteExecParams};
use crate::error::{Error, Result};
use crate::transport::CommandSpec;
use crate::transport::sudo::{self, Refusal};

/// How long the look-up of the login user and the program's path may take.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// A command to run through sudo, as the call asked.
pub(super) struct SudoRun {
    user: String,
    command: String,
    env_names: Vec<String>,
}

impl SudoRun {
    /// The sudo part of `params`: None without `sudo: true`; an error for a bad `sudo_user`, or
    /// one given without `sudo`.
    pub(super) fn from_params(params: &RemoteExecParams) -> Result<Option<Self>> {
        if !params.sudo {
            return match params.sudo_user {
                Some(_) => Err(Error::InvalidArgument {
                    field: "sudo_user",
                    reason: "needs `sudo: true`".into(),
                }),
                None => Ok(None),
            };
        }
        let user = params.sudo_user.clone().unwrap_or_else(|| "root".into());
        sudo::check_user(&user)?;
        Ok(Some(Self {
            user,
            command: params.command.clone(),
            env_names: params.env.keys().cloned().collect(),
        }))
    }

    /// The command as a person would type it: `sudo -n -u USER -- COMMAND`.
    pub(super) fn as_typed(&self) -> String {
        let prefix = shell_words::join(["sudo", "-n", "-u", &self.user, "--"]);
        format!("{prefix} {}", self.command)
    }

    /// The shell text that runs the command through `sudo -n`.
    pub(super) fn line(&self) -> String {
        sudo::sudo_line(
            &self.command,
            &self.user,
            self.env_names.iter().map(String::as_str),
        )
    }
}

impl Outpost {
    /// When sudo refused to run the command of `result` (the command never started), the error
    /// that says why and which sudoers rule to add.
    pub(super) async fn sudo_refusal(&self, run: &SudoRun, result: &ExecResult) -> Option<Error> {
        let host = result.host.clone();
        let refusal = sudo::refusal(result.outcome.exit_code, &result.stderr)?;
        if refusal == Refusal::NotInstalled {
            return Some(Error::SudoMissing { host });
        }
        let mut argv = sudo::sudo_argv(&run.command);
        let (login, path) = self.probe(&host, &argv[0]).await;
        argv[0] = path;
        let setenv = refusal == Refusal::EnvNotAllowed || !run.env_names.is_empty();
        let rule = sudo::rule(&login, &run.user, &argv, setenv);
        Some(match refusal {
            Refusal::EnvNotAllowed => Error::SudoEnvRefused {
                host,
                names: run.env_names.join(", "),
                rule,
            },
            _ => Error::SudoNeedsPassword { host, rule },
        })
    }

    /// The login user's name on `host` and `program`'s full path there; what was asked when
    /// the host does not say.
    async fn probe(&self, host: &str, program: &str) -> (String, String) {
        let spec = |_: &str| CommandSpec {
            command: sudo::probe_line(program),
            ..CommandSpec::default()
        };
        let asked = async { Ok::<_, Error>(self.hosts.spawn(host, spec).await?.1.output().await) };
        let said = match tokio::time::timeout(PROBE_LIMIT, asked).await {
            Ok(Ok(output)) => String::from_utf8_lossy(&output.stdout).into_owned(),
            Ok(Err(e)) => {
                tracing::warn!(%host, error = %e, "cannot look up the sudo rule's user and path");
                String::new()
            }
            Err(_) => String::new(),
        };
        let mut lines = said.lines().map(str::trim).filter(|l| !l.is_empty());
        let login = lines.next().unwrap_or("LOGIN_USER").to_owned();
        let path = lines.next().unwrap_or(program).to_owned();
        (login, path)
    }
}
