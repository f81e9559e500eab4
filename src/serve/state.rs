//! What every way of serving shares: the tool service with its jobs and Claude processes, and
//! the shutdown that kills them all.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditChoice, AuditLog, path_in_force};
use crate::auth::jwt;
use crate::claude::Claude;
use crate::claude::registry::Registry;
use crate::config::Config;
use crate::error::Result;
use crate::hosts::Hosts;
use crate::jobs::JobManager;
use crate::tools::{CallPolicy, Outpost};
use crate::transport::KillPolicy;

/// How calls are audited and limited.
#[derive(Debug, Default, Clone)]
pub struct StateOptions {
    /// The audit log the command line asks for (`--audit-log`, `--no-audit-log`).
    pub audit: AuditChoice,
    /// Serving on the network: the audit log is then on unless turned off.
    pub network: bool,
    /// Tool calls per minute per principal; 0: no limit.
    pub calls_per_minute: u32,
    /// The `--jwt-secret-file` given, whose content is redacted from the audit log.
    pub jwt_secret_file: Option<PathBuf>,
}

/// The tool service and the processes it owns. Shutting it down kills every job and Claude
/// process; dropping it does not (call [`ServerState::shutdown`]).
pub struct ServerState {
    pub outpost: Outpost,
    jobs: Arc<JobManager>,
    claude: Arc<Claude>,
    kill_limit: Duration,
}

impl ServerState {
    /// The service for `hosts`, auditing and limiting calls as `options` say.
    pub fn new(hosts: Arc<Hosts>, options: StateOptions) -> Result<Self> {
        let config = hosts.config();
        let settings = config.exec.clone();
        let mut audit_settings = config.audit.clone();
        audit_settings.path = path_in_force(&config.audit, &options.audit, options.network);
        let mut secrets = forwarded_values(config);
        let flag = options.jwt_secret_file.as_deref();
        secrets.extend(jwt::known_secrets(&config.serve.jwt, flag));
        let audit = AuditLog::open(&audit_settings, secrets)?;
        let calls_per_minute = options.calls_per_minute;
        let jobs = Arc::new(JobManager::new(Duration::from_secs(
            settings.job_retention_secs,
        )));
        let claude = Claude::new(hosts.clone(), Registry::new(Registry::default_path()));
        let policy = Arc::new(CallPolicy::new(audit, calls_per_minute));
        let outpost = Outpost::new(hosts, jobs.clone(), claude.clone()).with_policy(policy);
        Ok(Self {
            outpost,
            jobs,
            claude,
            kill_limit: KillPolicy {
                grace: settings.kill_grace(),
            }
            .verdict_within(),
        })
    }

    /// Kills every running job and Claude process, waiting for them to die.
    pub async fn shutdown(&self) {
        tokio::join!(self.jobs.shutdown(self.kill_limit), self.claude.shutdown());
    }
}

/// Values of the variables forwarded to Claude: they must never reach the audit log.
fn forwarded_values(config: &Config) -> Vec<String> {
    let remotes = config.remotes.values().flat_map(|r| r.forward_env.iter());
    (config.claude.forward_env.iter().chain(remotes))
        .filter_map(|name| std::env::var(name).ok())
        .collect()
}
