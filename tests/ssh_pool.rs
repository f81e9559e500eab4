//! The SSH pool in-process, against an in-process russh server on 127.0.0.1: at twice one
//! connection's channel limit (where kills once went without a channel), its idle close in
//! tokio's paused time, and its spare channels (handed over, given back, never handed out dead).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outpost::config::HostKeyPolicy;
use outpost::ssh::pool::{
    Attempt, CHANNELS_PER_CONNECTION, Lease, OnRefusal, PooledConnection, Purpose,
};
use outpost::ssh::spare::SpareState;
use outpost::ssh::{SshPool, SshTarget};
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::net::TcpListener;

/// Accepts every key, opens every session channel and takes every command without running it;
/// a command `die` ends at once (exit status 1, then close), the others at their input's end.
/// Counts commands, and the channels ended by their input's end.
#[derive(Clone, Default)]
struct Sessions {
    commands: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    /// How many session opens to refuse still (as `MaxSessions` does), whatever the connection.
    refuse: Arc<AtomicUsize>,
}

impl Handler for Sessions {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _: &str,
        _: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _: Channel<Msg>,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        let refuse = |n: usize| n.checked_sub(1);
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, refuse)
            .is_ok()
        {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        } else {
            reply.accept().await;
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.commands.fetch_add(1, Ordering::SeqCst);
        session.channel_success(channel)?;
        if data == b"die" {
            session.exit_status_request(channel, 1)?;
            session.eof(channel)?;
            session.close(channel)?;
        }
        Ok(())
    }

    /// As a shell waiting on stdin does: ends at its input's end.
    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.ended.fetch_add(1, Ordering::SeqCst);
        session.exit_status_request(channel, 125)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }
}

/// A server on 127.0.0.1 that counts the connections it accepted.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

async fn server(dir: &Path) -> Server {
    server_with(dir, Sessions::default()).await
}

async fn server_with(dir: &Path, handler: Sessions) -> Server {
    keygen(&dir.join("host_key"));
    let key = russh::keys::load_secret_key(dir.join("host_key"), None).expect("host key");
    let config = Arc::new(russh::server::Config {
        keys: vec![key],
        inactivity_timeout: None,
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let (config, handler) = (config.clone(), handler.clone());
            tokio::spawn(async move {
                if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
                    let _ = session.await;
                }
            });
        }
    });
    Server {
        port,
        accepted,
        _task: task,
    }
}

fn target(dir: &Path, port: u16) -> SshTarget {
    keygen(&dir.join("id"));
    SshTarget {
        name: "box".into(),
        hostname: "127.0.0.1".into(),
        port,
        user: "me".into(),
        identity_files: vec![dir.join("id")],
        identities_only: true,
        key_host: "127.0.0.1".into(),
        key_port: port,
        known_hosts: dir.join("known_hosts"),
        host_key_policy: HostKeyPolicy::AcceptNew,
        connect_timeout: Duration::from_secs(30),
        keepalive: None,
        keepalive_max: 3,
        jump: None,
    }
}

/// How many distinct connections the leases are on.
fn connections(leases: &[Lease]) -> usize {
    let set: HashSet<*const _> = leases.iter().map(|l| Arc::as_ptr(&l.connection)).collect();
    set.len()
}

#[tokio::test]
async fn twice_the_channel_limit_opens_connections_and_kills_still_find_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let target = target(dir.path(), server.port);
    let pool = Arc::new(SshPool::new(Duration::from_secs(3600)));
    // Every command slot of two connections, asked for all at once.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..2 * CHANNELS_PER_CONNECTION {
        let (pool, target) = (pool.clone(), target.clone());
        burst.spawn(async move { pool.lease(&target).await });
    }
    let mut commands = Vec::new();
    while let Some(lease) = burst.join_next().await {
        commands.push(lease.unwrap().expect("a command slot"));
    }
    assert_eq!(connections(&commands), 2);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.state(&target), "connected (2 connections)");
    // With every command slot taken, kills still get channels of their own, on those connections.
    let mut kills = Vec::new();
    for _ in 0..4 {
        let kill = pool.lease_for(&target, Purpose::Kill, Attempt::WhenDue);
        kills.push(kill.await.expect("a kill slot"));
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    // A fifth kill finds both connections' kill slots taken: it opens a connection, it never waits.
    let refused = kills[0].connection.clone();
    kills.push(
        pool.lease_for(&target, Purpose::Kill, Attempt::Now)
            .await
            .unwrap(),
    );
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    // A channel refused on one connection is asked of another one.
    let elsewhere = pool.lease_elsewhere(&target, Purpose::Kill, &refused).await;
    assert!(!Arc::ptr_eq(&elsewhere.unwrap().connection, &refused));
    // One more command goes to the third connection; freed slots are reused, not reopened.
    commands.push(pool.lease(&target).await.unwrap());
    commands.truncate(3);
    for _ in 0..2 * CHANNELS_PER_CONNECTION - 2 {
        commands.push(pool.lease(&target).await.unwrap());
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_and_busy_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let target = target(dir.path(), server.port);
    let idle = Duration::from_secs(300);
    let pool = SshPool::new(idle);
    let mut busy = Vec::new();
    for _ in 0..CHANNELS_PER_CONNECTION {
        busy.push(pool.lease(&target).await.unwrap());
    }
    let spare = pool.lease(&target).await.unwrap();
    assert_eq!(pool.state(&target), "connected (2 connections)");
    drop(spare);
    tokio::time::pause();
    // Just short of the timeout: both stay.
    tokio::time::sleep(idle - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(pool.state(&target), "connected (2 connections)");
    // Past it: the idle one is closed, the busy one is not, however long it stays busy.
    tokio::time::sleep(idle * 3).await;
    settle().await;
    assert_eq!(pool.state(&target), "connected (1 connection)");
    drop(busy);
    tokio::time::sleep(idle * 2).await;
    settle().await;
    assert_eq!(pool.state(&target), "not connected");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

/// Lets the reaper and the connections' tasks run what the last time step woke.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// A server that takes commands, a pool and one connection to it, for the spare tests.
struct Spares {
    sessions: Sessions,
    server: Server,
    target: SshTarget,
    pool: SshPool,
    connection: Arc<PooledConnection>,
    _dir: tempfile::TempDir,
}

impl Spares {
    async fn new(idle: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::default();
        let server = server_with(dir.path(), sessions.clone()).await;
        let target = target(dir.path(), server.port);
        let pool = SshPool::new(idle);
        let connection = pool.lease(&target).await.unwrap().connection.clone();
        Self {
            sessions,
            server,
            target,
            pool,
            connection,
            _dir: dir,
        }
    }
}

fn start_spare(connection: &Arc<PooledConnection>, exec: &str, tag: &str) {
    connection.start_spare(|| (exec.into(), tag.into()));
}

/// Waits (in real time, briefly) until `done` holds.
async fn until(done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_spare_is_handed_over_once_and_gives_its_slot_back_when_the_connection_is_full() {
    let t = Spares::new(Duration::from_secs(3600)).await;
    start_spare(&t.connection, "wait", "first");
    // Only one spare per t.connection, whatever is asked.
    start_spare(&t.connection, "wait", "second");
    until(|| t.connection.spare_state() == SpareState::Parked).await;
    assert_eq!(t.sessions.commands.load(Ordering::SeqCst), 1);
    let (lease, claimed) = t
        .pool
        .claim_spare(&t.target)
        .await
        .expect("the parked spare");
    assert_eq!(claimed.tag, "first");
    assert!(Arc::ptr_eq(&lease.connection, &t.connection));
    assert!(
        t.pool.claim_spare(&t.target).await.is_none(),
        "handed over once"
    );
    drop((lease, claimed));
    // Parked again, it holds a slot; a full t.connection takes that slot back and opens no other.
    start_spare(&t.connection, "wait", "third");
    until(|| t.connection.spare_state() == SpareState::Parked).await;
    let ended = t.sessions.ended.load(Ordering::SeqCst);
    let mut leases = Vec::new();
    for _ in 0..CHANNELS_PER_CONNECTION {
        leases.push(t.pool.lease(&t.target).await.unwrap());
    }
    assert_eq!(connections(&leases), 1);
    assert_eq!(t.server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        t.sessions.ended.load(Ordering::SeqCst),
        ended + 1,
        "the spare's channel ended before its slot was used again"
    );
    assert!(t.pool.claim_spare(&t.target).await.is_none());
    // With no slot free, no spare starts.
    start_spare(&t.connection, "wait", "fourth");
    assert_eq!(t.connection.spare_state(), SpareState::None);
}

#[tokio::test]
async fn a_spare_whose_shell_ended_is_not_handed_over() {
    let t = Spares::new(Duration::from_secs(3600)).await;
    start_spare(&t.connection, "die", "dead");
    until(|| t.sessions.commands.load(Ordering::SeqCst) == 1).await;
    until(|| t.connection.spare_state() == SpareState::Dead).await;
    assert!(t.pool.claim_spare(&t.target).await.is_none());
    // Its slot is free again: all of the t.connection's command slots can be leased.
    let mut leases = Vec::new();
    for _ in 0..CHANNELS_PER_CONNECTION {
        leases.push(t.pool.lease(&t.target).await.unwrap());
    }
    assert_eq!(t.server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_with_only_its_spare_is_idle_and_closes() {
    let idle = Duration::from_secs(300);
    let t = Spares::new(idle).await;
    start_spare(&t.connection, "wait", "spare");
    until(|| t.connection.spare_state() == SpareState::Parked).await;
    drop(t.connection);
    tokio::time::pause();
    tokio::time::sleep(idle * 3).await;
    settle().await;
    assert_eq!(t.pool.state(&t.target), "not connected");
    assert_eq!(t.server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_session_is_tried_on_another_connection_and_a_refused_tunnel_is_not() {
    let t = Spares::new(Duration::from_secs(3600)).await;
    let open = |c: Arc<PooledConnection>| async move { c.handle.channel_open_session().await };
    t.sessions.refuse.store(1, Ordering::SeqCst);
    let pool = &t.pool;
    let (lease, _channel) = pool
        .open_channel(&t.target, OnRefusal::TryAnotherConnection, open)
        .await
        .expect("a channel on another connection");
    assert!(!Arc::ptr_eq(&lease.connection, &t.connection));
    assert_eq!(t.server.accepted.load(Ordering::SeqCst), 2);
    t.sessions.refuse.store(1, Ordering::SeqCst);
    let refused = pool.open_channel(&t.target, OnRefusal::Fail, open).await;
    assert!(refused.is_err());
    assert_eq!(t.server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_spare_older_than_the_idle_timeout_is_closed_not_handed_over() {
    let idle = Duration::from_secs(300);
    let t = Spares::new(idle).await;
    // A command keeps the connection busy, so only the spare's age can stop its use.
    let _busy = t.pool.lease(&t.target).await.unwrap();
    start_spare(&t.connection, "wait", "old");
    until(|| t.connection.spare_state() == SpareState::Parked).await;
    tokio::time::pause();
    tokio::time::advance(idle + Duration::from_secs(1)).await;
    tokio::time::resume();
    assert!(t.pool.claim_spare(&t.target).await.is_none());
    assert_eq!(t.connection.spare_state(), SpareState::None);
    assert_eq!(
        t.sessions.ended.load(Ordering::SeqCst),
        1,
        "its shell was told to end"
    );
}
