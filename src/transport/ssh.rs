//! The `ssh` transport: each command on its own channel of a pooled connection, under the remote wrapper,
//! killed through the host's kill desk, which signals its process group from another channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::{Channel, ChannelMsg, client::Msg};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::VERDICT_SLACK;
use super::kill_script::Group;
use super::local::sleep_until_opt;
use super::process::feed_stdin;
use super::ssh_kill::SshKills;
use super::startup::{MAX_STARTUP_NOISE, Scanned, StartupScan, log_chatter};
use super::wrapper::{Invocation, Report, exec_line, fresh_nonce, in_place_prelude};
use super::{
    CommandSpec, ExitStatus, KillPolicy, KillReporter, KillState, OutputStream, Process,
    ProcessEvent, Stdin,
};
use crate::error::{Error, Result};
use crate::ssh::pool::{Lease, OnRefusal, PooledConnection};
use crate::ssh::{SshPool, SshTarget};

/// After the command's exit status, how long its channel may stay silent (held open by a
/// background child it left behind) before the command counts as done, as on `local`.
const DRAIN_IDLE: Duration = Duration::from_millis(300);
/// After a confirmed kill, how long the command's channel gets to close.
const CLOSE_AFTER_KILL: Duration = Duration::from_secs(1);

/// Runs commands on one SSH host through the shared pool.
#[derive(Clone)]
pub struct Ssh {
    target: SshTarget,
    pool: Arc<SshPool>,
    kills: SshKills,
    kill: KillPolicy,
}

impl std::fmt::Debug for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ssh")
            .field("target", &self.target.display())
            .finish()
    }
}

impl Ssh {
    pub fn new(target: SshTarget, pool: Arc<SshPool>, kills: SshKills, kill: KillPolicy) -> Self {
        Self {
            target,
            pool,
            kills,
            kill,
        }
    }

    fn channel_error(&self, e: impl std::fmt::Display) -> Error {
        Error::SshChannel {
            host: self.target.name.clone(),
            reason: e.to_string(),
        }
    }

    /// Starts `spec` under the wrapper; returns once the remote side reports the command running.
    /// A spare channel, whose shell already waits for a command, is used when one is parked (one
    /// that turns out gone is left for a fresh channel); afterwards the next spare is started.
    /// Env names are checked by the caller ([`super::Transport::spawn_holding`]).
    pub async fn spawn(&self, spec: CommandSpec) -> Result<Process> {
        let invocation =
            |nonce| Invocation::with_nonce(nonce, &spec.command, spec.cwd.as_deref(), &spec.env);
        if let Some((lease, claimed)) = self.pool.claim_spare(&self.target).await {
            let invocation = invocation(claimed.tag);
            let stdin = spec.stdin.clone();
            let channel = (claimed.channel, claimed.early);
            tracing::debug!(host = %self.target.name, "sending the command to a spare shell");
            match self
                .start(lease, channel, invocation, stdin, spec.cwd.as_deref())
                .await
            {
                Err(Start::NotStarted(e)) => {
                    tracing::debug!(host = %self.target.name, error = %e, "a spare shell was gone; opening a channel");
                }
                started => return started.map_err(Start::into_error),
            }
        }
        let invocation = invocation(fresh_nonce());
        let (lease, channel) = self.open_channel().await?;
        let in_place = lease.connection.in_place_known().flatten();
        channel
            .exec(true, invocation.exec(in_place))
            .await
            .map_err(|e| self.channel_error(e))?;
        let cwd = spec.cwd.as_deref();
        self.start(lease, (channel, Vec::new()), invocation, spec.stdin, cwd)
            .await
            .map_err(Start::into_error)
    }

    /// Sends the header and stdin to a channel whose wrapper runs (with what it received so far),
    /// waits for the report and hands the channel to a supervisor.
    async fn start(
        &self,
        lease: Lease,
        (channel, early): (Channel<Msg>, Vec<ChannelMsg>),
        mut invocation: Invocation,
        stdin: Stdin,
        cwd: Option<&str>,
    ) -> std::result::Result<Process, Start> {
        let mut pending = Pending(Some(channel));
        let gone = || Start::NotStarted(Error::Cancelled);
        let channel = pending.channel().ok_or_else(gone)?;
        channel
            .data_bytes(Bytes::from(std::mem::take(&mut invocation.header)))
            .await
            .map_err(|e| Start::NotStarted(self.channel_error(e)))?;
        let kill = CancellationToken::new();
        // Until the command has started, a failure stops feeding its stdin.
        let unstarted = kill.clone().drop_guard();
        let stdin = match stdin {
            Stdin::Null => {
                channel.eof().await.map_err(|e| self.channel_error(e))?;
                None
            }
            Stdin::Bytes(data) => {
                feed_stdin(channel.make_writer(), data, kill.clone());
                None
            }
            Stdin::Pipe => Some(Box::pin(channel.make_writer()) as super::StdinWriter),
        };
        // A login shell stuck in its startup files must not hang the call.
        let limit = self.target.connect_timeout;
        let report = self.await_report(channel, early, &invocation, cwd);
        let mut start = tokio::time::timeout(limit, report).await.map_err(|_| {
            Start::Failed(self.channel_error(format!(
                "the remote shell did not start the command within {}s (slow or interactive shell startup files?)",
                limit.as_secs_f64()
            )))
        })??;
        unstarted.disarm();
        let channel = pending.started().ok_or_else(gone)?;
        if let Some(shell) = &start.login_shell {
            lease.connection.learn_login_shell(in_place_prelude(shell));
        }
        self.start_spare(&lease.connection);
        let pid = start.group.pgid;
        tracing::debug!(host = %self.target.name, pgid = pid, "remote command started");
        let (tx, rx) = mpsc::channel(super::EVENT_BUFFER);
        for (stream, data) in std::mem::take(&mut start.early) {
            let _ = tx.try_send(ProcessEvent::Output(stream, data));
        }
        let (report, kill_state) = watch::channel(KillState::NotAsked);
        let supervisor = Supervisor {
            channel,
            lease,
            target: self.target.clone(),
            kills: self.kills.clone(),
            group: start.group,
            tx,
            kill: kill.clone(),
            report,
            grace: self.kill.grace,
        };
        tokio::spawn(supervisor.run(start.exit));
        Ok(Process::new(rx, stdin, kill, kill_state, Some(pid)))
    }

    /// Has the next spare started on `connection` (see [`PooledConnection::start_spare`]), once
    /// its login shell is known, unless spares are off.
    fn start_spare(&self, connection: &Arc<PooledConnection>) {
        if !self.pool.spares() {
            return;
        }
        let Some(in_place) = connection.in_place_known() else {
            return;
        };
        connection.start_spare(move || {
            let nonce = fresh_nonce();
            (exec_line(&nonce, in_place), nonce)
        });
    }

    /// A session channel on a pooled connection (see [`SshPool::open_channel`]).
    async fn open_channel(&self) -> Result<(Lease, Channel<Msg>)> {
        let open = |c: Arc<PooledConnection>| async move { c.handle.channel_open_session().await };
        self.pool
            .open_channel(&self.target, OnRefusal::TryAnotherConnection, open)
            .await
    }

    /// Reads until the wrapper's report line; output after it is kept for the process.
    async fn await_report(
        &self,
        channel: &mut Channel<Msg>,
        early: Vec<ChannelMsg>,
        invocation: &Invocation,
        cwd: Option<&str>,
    ) -> std::result::Result<Started, Start> {
        let mut scan = StartupScan::new(invocation);
        // sshd may send the exit status before the last output (a command that ends at once).
        let mut exit = ExitStatus::default();
        let mut early = early.into_iter();
        loop {
            let message = match early.next() {
                Some(message) => Some(message),
                None => channel.wait().await,
            };
            let scanned = match message {
                Some(ChannelMsg::Data { data }) => scan.stdout(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => scan.stderr(&data),
                Some(ChannelMsg::Failure) => {
                    let refused = self.channel_error("the server refused to run a command");
                    return Err(Start::NotStarted(refused));
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    exit.code = Some(exit_status as i32);
                    continue;
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit.signal = Some(signal_label(&signal_name));
                    continue;
                }
                // The server closes a channel after its output: no report, nothing ran.
                Some(ChannelMsg::Close) => {
                    return Err(Start::NotStarted(self.channel_error(format!(
                        "the remote shell ended before the command started (is `sh` there?): {}",
                        scan.stderr_text()
                    ))));
                }
                // The connection broke: the report may have been on its way.
                None => {
                    return Err(Start::Failed(self.channel_error(format!(
                        "the connection broke before the command was known to start: {}",
                        scan.stderr_text()
                    ))));
                }
                Some(_) => continue,
            };
            match scanned {
                Scanned::Pending => {}
                Scanned::TooNoisy => {
                    return Err(Start::Failed(self.channel_error(format!(
                        "the remote shell printed over {MAX_STARTUP_NOISE} bytes without starting the command"
                    ))));
                }
                Scanned::Reported(Report::Started { group, login_shell }, early) => {
                    log_chatter(&self.target.name, &scan);
                    return Ok(Started {
                        group,
                        login_shell,
                        early,
                        exit,
                    });
                }
                Scanned::Reported(Report::NoCwd, _) => {
                    return Err(Start::Failed(Error::MissingCwd {
                        host: self.target.name.clone(),
                        cwd: cwd.unwrap_or_default().to_owned(),
                    }));
                }
            }
        }
    }
}

/// A channel whose command has not yet been reported started. Dropped so (the start failed, or
/// its future was dropped), it closes the channel: sshd then closes the wrapper's pipes, so a
/// shell that reads the header late dies at its report (SIGPIPE), before the command.
struct Pending(Option<Channel<Msg>>);

impl Pending {
    /// The channel (always there until `started`).
    fn channel(&mut self) -> Option<&mut Channel<Msg>> {
        self.0.as_mut()
    }

    /// The channel, for the supervisor.
    fn started(mut self) -> Option<Channel<Msg>> {
        self.0.take()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(channel) = self.0.take() {
            // Short-lived: one message to the connection's task.
            tokio::spawn(async move {
                let _ = channel.close().await;
            });
        }
    }
}

/// Why a command did not start on a channel.
enum Start {
    /// Nothing ran: the channel was refused or gone before the wrapper's report (a spare's
    /// shell that ended can be replaced by a fresh channel).
    NotStarted(Error),
    /// Anything else.
    Failed(Error),
}

impl Start {
    fn into_error(self) -> Error {
        match self {
            Start::NotStarted(e) | Start::Failed(e) => e,
        }
    }
}

impl From<Error> for Start {
    fn from(e: Error) -> Self {
        Start::Failed(e)
    }
}

struct Started {
    group: Group,
    /// `$SHELL` on the host, as the wrapper reported it.
    login_shell: Option<String>,
    early: Vec<(OutputStream, Bytes)>,
    /// The exit status, when it came with the start.
    exit: ExitStatus,
}

/// Owns a command's channel: forwards its output, has the kill desk kill its group on request,
/// and reports the exit last. The lease (the channel slot) is held until the channel is done.
struct Supervisor {
    channel: Channel<Msg>,
    lease: Lease,
    target: SshTarget,
    kills: SshKills,
    group: Group,
    tx: mpsc::Sender<ProcessEvent>,
    kill: CancellationToken,
    report: KillReporter,
    grace: Duration,
}

/// Why a supervisor stopped reading its channel.
#[derive(PartialEq, Eq)]
enum End {
    /// The channel closed.
    Closed,
    /// The command exited and its channel stayed silent (a background child holds it open).
    Drained,
    /// A kill was asked for and the call stops waiting: confirmed, or not to be confirmed soon.
    Killed,
}

impl Supervisor {
    async fn run(mut self, mut status: ExitStatus) {
        let end = self.read(&mut status).await;
        if end != End::Closed {
            self.close().await;
        }
        let lost = status.code.is_none() && status.signal.is_none();
        if end == End::Closed && lost && !self.kill.is_cancelled() {
            let host = &self.target.name;
            let note = format!(
                "\n[outpost: the connection to `{host}` was lost before the command ended; it may still be running there]\n"
            );
            let _ = self
                .tx
                .send(ProcessEvent::Output(OutputStream::Stderr, note.into()))
                .await;
        }
        let Self { lease, tx, .. } = self;
        drop(lease);
        let _ = tx.send(ProcessEvent::Exited(status)).await;
    }

    /// Forwards output until the channel closes, the command is done with it silent, or a kill
    /// is settled (or not settled within the grace and VERDICT_SLACK).
    async fn read(&mut self, status: &mut ExitStatus) -> End {
        let mut drained_at = status.code.map(|_| Instant::now() + DRAIN_IDLE);
        let mut give_up_at: Option<Instant> = None;
        let mut verdict = self.report.subscribe();
        let mut confirmed = false;
        let mut closed = false;
        loop {
            tokio::select! {
                message = self.channel.wait(), if !closed => match message {
                    Some(ChannelMsg::Data { data }) => {
                        self.forward(OutputStream::Stdout, &data).await;
                        drained_at = drained_at.map(|_| Instant::now() + DRAIN_IDLE);
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        self.forward(OutputStream::Stderr, &data).await;
                        drained_at = drained_at.map(|_| Instant::now() + DRAIN_IDLE);
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        status.code = Some(exit_status as i32);
                        drained_at = Some(Instant::now() + DRAIN_IDLE);
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status.signal = Some(signal_label(&signal_name));
                        drained_at = Some(Instant::now() + DRAIN_IDLE);
                    }
                    // Ended; a kill under way still gets its verdict, for the result to say.
                    Some(ChannelMsg::Close) | None if give_up_at.is_some() && !confirmed => closed = true,
                    Some(ChannelMsg::Close) | None => return End::Closed,
                    Some(_) => {}
                },
                _ = self.kill.cancelled(), if give_up_at.is_none() => {
                    self.kills.kill(&self.target, self.group.clone(), self.report.clone());
                    give_up_at = Some(Instant::now() + self.grace + VERDICT_SLACK);
                }
                dead = settled(&mut verdict), if give_up_at.is_some() && !confirmed => {
                    if !dead {
                        return End::Killed;
                    }
                    if closed {
                        return End::Closed;
                    }
                    confirmed = true;
                    // Dead: the channel closes as soon as the host has seen it.
                    let close_by = Instant::now() + CLOSE_AFTER_KILL;
                    give_up_at = give_up_at.map(|t| t.min(close_by));
                }
                _ = sleep_until_opt(give_up_at), if give_up_at.is_some() => {
                    return if closed { End::Closed } else { End::Killed };
                }
                // A kill under way waits for its verdict instead.
                _ = sleep_until_opt(drained_at), if drained_at.is_some() && give_up_at.is_none() => {
                    return End::Drained;
                }
            }
        }
    }

    async fn forward(&self, stream: OutputStream, data: &[u8]) {
        let event = ProcessEvent::Output(stream, Bytes::copy_from_slice(data));
        let _ = self.tx.send(event).await;
    }

    /// Closes a channel the server has not closed (a background child holds it, or the kill's
    /// close wait ran out), without waiting: russh does not pass on the server's answer to a
    /// close sent from here. sshd lets the session go once its shell has exited (at once for a
    /// drained command); after a kill in doubt it may count the session a while longer.
    async fn close(&mut self) {
        let _ = self.channel.close().await;
    }
}

/// Waits until a kill is settled or being retried; whether it is confirmed.
async fn settled(state: &mut watch::Receiver<KillState>) -> bool {
    let settled = state
        .wait_for(|s| !matches!(s, KillState::NotAsked | KillState::Sent))
        .await;
    settled.is_ok_and(|s| *s == KillState::Confirmed)
}

fn signal_label(signal: &russh::Sig) -> String {
    match signal {
        russh::Sig::Custom(name) => format!("SIG{name}"),
        other => format!("SIG{other:?}"),
    }
}
