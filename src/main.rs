//! The `outpost` command: parses flags, sets up logging on stderr, and hands over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost::audit::AuditChoice;
use outpost::auth::Scope;
use outpost::auth::jwt::mint;
use outpost::bridge::ConnectOptions;
use outpost::cli::exec::ExecRequest;
use outpost::cli::remote::{self, AddRemote};
use outpost::config::Config;
use outpost::hosts::Hosts;
use outpost::serve::{ListenOptions, Protocol, serve_network};
use outpost::tools::Outpost;

/// An MCP server that puts remote machines at an AI assistant's fingertips.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about)]
struct Cli {
    /// Config file (default: $OUTPOST_CONFIG, else ~/.config/outpost/config.json).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The MCP server.
    Mcp {
        #[command(subcommand)]
        command: Option<McpCommand>,
    },
    /// Manage remote hosts.
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
    /// Bearer tokens for `outpost mcp serve --websocket|--http`.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Forward local ports to ports reachable from an SSH host, until Ctrl-C.
    Tunnel {
        /// The SSH host: its configured `tunnels` open, plus any -L.
        name: String,
        /// Another forward, as ssh's: `[BIND:]PORT:HOST:HOSTPORT`.
        #[arg(short = 'L', value_name = "SPEC")]
        forward: Vec<String>,
    },
    /// Copy a file or folder between hosts: `outpost cp gpu1:~/run/model.ckpt ./ckpt/`.
    Cp {
        /// `host:path` (a bare path is here).
        source: String,
        /// `host:path`; an existing folder, or a path ending in `/`, gets the source inside it.
        destination: String,
        /// Replace destination files that differ from the source.
        #[arg(long)]
        overwrite: bool,
        /// Compare and check files by SHA-256 instead of size and mtime.
        #[arg(long)]
        verify: bool,
    },
    /// Run a command on a host, streaming its output; exits with its exit code.
    Exec {
        /// Host name (`local`, a remote, an ssh alias, a group); or several, each line prefixed by its host: `gpu1,gpu2`, `@group` for every member.
        host: String,
        /// Working directory on the host.
        #[arg(long)]
        cwd: Option<String>,
        /// Kill the command after this many seconds (exit code 124).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// The command: one shell command line, or a program and its arguments.
        #[arg(last = true, required = true, num_args = 1..)]
        argv: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RemoteCommand {
    /// Add a remote host to the config file.
    Add(Box<AddRemote>),
    /// List every known host.
    List,
    /// Remove a remote from the config file.
    Remove { name: String },
    /// Make a host the default.
    SetDefault { name: String },
    /// Connect, check the host key, authenticate, run a command, look for `claude`; time each step.
    Test { name: String },
}

#[derive(Debug, Subcommand)]
enum McpCommand {
    /// Serve MCP: on stdin/stdout (the default), or on a port with --websocket or --http.
    Serve(ServeArgs),
    /// A stdio MCP server that forwards to `outpost mcp serve --websocket` elsewhere.
    Connect(ConnectOptions),
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// Serve MCP over WebSocket (ws://HOST:PORT/PATH) instead of stdio.
    #[arg(long, conflicts_with = "http")]
    websocket: bool,
    /// Serve MCP Streamable HTTP (http://HOST:PORT/PATH) instead of stdio.
    #[arg(long)]
    http: bool,
    #[command(flatten)]
    listen: Option<ListenOptions>,
    /// Append one JSON line per tool call to this file (default: `audit.path` of the config;
    /// on the network, else `$XDG_STATE_HOME/outpost/audit/audit.log`).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Keep no audit log, even on the network.
    #[arg(long, conflicts_with = "audit_log")]
    no_audit_log: bool,
}

impl ServeArgs {
    fn audit(&self) -> AuditChoice {
        match (&self.audit_log, self.no_audit_log) {
            (_, true) => AuditChoice::Off,
            (Some(path), false) => AuditChoice::File(path.clone()),
            (None, false) => AuditChoice::Configured,
        }
    }
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Print a bearer token signed with the server's JWT secret.
    GenerateToken {
        /// Lifetime, e.g. `24h`, `30m`, `7d`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// Who the token is for (its `sub`; shown in the audit log).
        #[arg(long, default_value = "outpost")]
        subject: String,
        /// Audience (`aud`; default: `serve.jwt.audience` of the config).
        #[arg(long)]
        audience: Option<String>,
        /// File holding the HS256 secret (default: $OUTPOST_JWT_SECRET, then `serve.jwt.secret_file`).
        #[arg(long, value_name = "FILE")]
        jwt_secret_file: Option<PathBuf>,
        /// Only these hosts and groups (comma-separated; the `hosts` claim). Default: any.
        #[arg(long, value_delimiter = ',', num_args = 1)]
        hosts: Option<Vec<String>>,
        /// Only these tools (comma-separated; the `tools` claim). Default: any.
        #[arg(long, value_delimiter = ',', num_args = 1)]
        tools: Option<Vec<String>>,
    },
}

/// The `hosts` and `tools` claims of a new token, checked: no empty names, only real tools.
fn token_scope(hosts: Option<Vec<String>>, tools: Option<Vec<String>>) -> anyhow::Result<Scope> {
    for (flag, names) in [("--hosts", &hosts), ("--tools", &tools)] {
        anyhow::ensure!(
            names.iter().flatten().all(|n| !n.trim().is_empty()),
            "{flag} holds an empty name: list names separated by commas, e.g. `{flag} a,b`"
        );
    }
    let known = Outpost::tool_names();
    if let Some(unknown) = tools.iter().flatten().find(|t| !known.contains(t)) {
        anyhow::bail!(
            "--tools: `{unknown}` is not a tool; the tools are: {}",
            known.join(", ")
        );
    }
    Ok(Scope::new(hosts.as_deref(), tools.as_deref()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("outpost: {}", outpost::error::report(&*e));
            ExitCode::from(255)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let path = cli.config.unwrap_or_else(Config::default_path);
    let mut config = Config::load(&path)?;
    config.check_principal_tools(&path, &Outpost::tool_names())?;
    // A one-shot command has no next command to start a shell ahead for.
    if !matches!(cli.command, None | Some(Command::Mcp { .. })) {
        config.ssh.warm_shell = false;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        // Background children of local commands whose shell has ended are reaped here.
        let _reaper = outpost::transport::Reaper::start();
        let hosts = Arc::new(Hosts::new(config));
        match cli.command {
            None | Some(Command::Mcp { command: None }) => {
                outpost::serve::serve_stdio(hosts, AuditChoice::Configured).await?;
                Ok(0)
            }
            Some(Command::Mcp {
                command: Some(McpCommand::Serve(args)),
            }) => {
                serve(hosts, args).await?;
                Ok(0)
            }
            Some(Command::Mcp {
                command: Some(McpCommand::Connect(options)),
            }) => {
                outpost::bridge::run_bridge(hosts, options).await?;
                Ok(0)
            }
            Some(Command::Auth {
                command:
                    AuthCommand::GenerateToken {
                        expires,
                        subject,
                        audience,
                        jwt_secret_file,
                        hosts: host_claim,
                        tools,
                    },
            }) => {
                let scope = token_scope(host_claim, tools)?;
                let jwt = &hosts.config().serve.jwt;
                let file = jwt_secret_file.as_deref();
                let token = mint(jwt, file, &subject, expires, audience, &scope)?;
                println!("{token}");
                Ok(0)
            }
            Some(Command::Remote { command }) => run_remote(&path, &hosts, command).await,
            Some(Command::Tunnel { name, forward }) => {
                outpost::cli::tunnel::run(hosts, &name, &forward).await?;
                Ok(0)
            }
            Some(Command::Cp {
                source,
                destination,
                overwrite,
                verify,
            }) => {
                let options = outpost::transfer::Options { overwrite, verify };
                Ok(outpost::cli::cp::run(&hosts, &source, &destination, options).await?)
            }
            Some(Command::Exec {
                host,
                cwd,
                timeout,
                argv,
            }) => {
                let timeout = timeout
                    .map(Duration::try_from_secs_f64)
                    .transpose()
                    .context("--timeout must be a positive number of seconds")?;
                if outpost::cli::fanout::is_fanout(&host) {
                    let command = outpost::cli::exec::command_line(&argv);
                    let run =
                        outpost::cli::fanout::run(&hosts, &host, &command, cwd.as_deref(), timeout);
                    return Ok(run.await?);
                }
                let request = ExecRequest {
                    host: Some(host),
                    cwd,
                    timeout,
                    argv,
                };
                Ok(outpost::cli::exec::run(&hosts, request).await?)
            }
        }
    });
    // Do not wait for blocking reads of our own stdin to return.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// `outpost mcp serve`: stdio unless --websocket or --http.
async fn serve(hosts: Arc<Hosts>, args: ServeArgs) -> anyhow::Result<()> {
    let protocol = match (args.websocket, args.http) {
        (true, _) => Protocol::WebSocket,
        (_, true) => Protocol::StreamableHttp,
        _ => {
            anyhow::ensure!(
                args.listen.is_none(),
                "--host, --port, --path and --auth need --websocket or --http"
            );
            return Ok(outpost::serve::serve_stdio(hosts, args.audit()).await?);
        }
    };
    let audit = args.audit();
    let listen = args.listen.unwrap_or_default();
    Ok(serve_network(hosts, protocol, listen, audit).await?)
}

/// `outpost remote ...`: edits go to the config file at `path`; `test` exits 1 when a step fails.
async fn run_remote(path: &Path, hosts: &Hosts, command: RemoteCommand) -> anyhow::Result<i32> {
    let message = match command {
        RemoteCommand::Add(add) => remote::add(path, *add)?,
        RemoteCommand::Remove { name } => remote::remove(path, &name)?,
        RemoteCommand::SetDefault { name } => remote::set_default(path, &name)?,
        RemoteCommand::List => remote::list(hosts).trim_end().to_owned(),
        RemoteCommand::Test { name } => {
            return Ok(if remote::test(hosts, &name).await? {
                0
            } else {
                1
            });
        }
    };
    println!("{message}");
    Ok(0)
}

/// Libraries whose debug/trace output carries message contents: request arguments (with `env`
/// values), handshake headers (with bearer tokens). They never log below info, whatever
/// `RUST_LOG` says (even for one of their modules).
const CONTENT_LOGGERS: [&str; 3] = ["rmcp", "tungstenite", "tokio_tungstenite"];

/// Logs go to stderr (stdout is the MCP channel), filtered by RUST_LOG (default `info`).
fn init_tracing() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let wanted = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let capped = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CONTENT_LOGGERS.map(|target| (target, LevelFilter::INFO)));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(wanted.and(capped));
    tracing_subscriber::registry().with(stderr).init();
}
