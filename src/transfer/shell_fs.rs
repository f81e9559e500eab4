//! A host's files through its transport alone (containers, pods, command prefixes): one small
//! POSIX `sh` command per step, file contents over the command's stdin and stdout. Needs only
//! `sh`, `find`, `stat`, `cat`, `tail`, `touch`, `mv` and `df` there (coreutils or busybox).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::AsyncWrite;
use tokio_util::io::StreamReader;

use super::fs::{Reader, Writer, meta_from_mode};
use super::tree::{Entry, Meta};
use crate::home::shell_word;
use crate::transport::{
    CommandSpec, Output, OutputStream, Process, ProcessEvent, Stdin, StdinWriter, Transport,
};

/// Most error text kept from a command.
const STDERR_KEPT: usize = 2048;

/// A host's files, reached by running commands through `transport`.
pub struct ShellFs {
    transport: Transport,
}

impl ShellFs {
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }

    /// Paths are the host's; a relative one starts from its home (not an image's WORKDIR).
    pub fn resolve(path: &str) -> String {
        if path.starts_with('/') || crate::home::in_home(path).is_some() {
            path.to_owned()
        } else {
            format!("~/{path}")
        }
    }

    async fn start(&self, command: String, stdin: Stdin) -> io::Result<Process> {
        let spec = CommandSpec {
            command,
            cwd: Some("/".to_owned()),
            env: Default::default(),
            stdin,
        };
        (self.transport.spawn(spec).await).map_err(|e| io::Error::other(e.to_string()))
    }

    /// Runs `command` to its end; a non-zero exit is an error of the kind its stderr tells.
    async fn run(&self, command: String) -> io::Result<Vec<u8>> {
        let output = self.start(command, Stdin::Null).await?.output().await;
        match output.status.code {
            Some(0) => Ok(output.stdout),
            _ => Err(failure(&output)),
        }
    }

    pub async fn stat(&self, path: &str, follow: bool) -> io::Result<Meta> {
        let p = shell_word(path);
        let flag = if follow { "-L " } else { "" };
        let text = self
            .run(format!(
                "stat {flag}-c '%f %s %Y' -- {p} && if [ -z '{flag}' ] && [ -L {p} ]; then readlink -- {p}; fi"
            ))
            .await?;
        let text = String::from_utf8_lossy(&text);
        let mut lines = text.lines();
        let head = lines.next().unwrap_or_default();
        parse_stat(head, lines.next().map(str::to_owned)).ok_or_else(|| garbled(head))
    }

    /// One listing of the whole tree below folder `path`: `(relative path, metadata)`.
    pub async fn read_tree(&self, path: &str) -> io::Result<Vec<Entry>> {
        self.list(path, "").await
    }

    /// The entries right in folder `path`.
    pub async fn read_dir(&self, path: &str) -> io::Result<Vec<(String, Meta)>> {
        let entries = self.list(path, "-maxdepth 1 ").await?;
        Ok(entries.into_iter().map(|e| (e.rel, e.meta)).collect())
    }

    /// The entries below folder `path` that `find` selects with `depth` (options before tests).
    async fn list(&self, path: &str, depth: &str) -> io::Result<Vec<Entry>> {
        let p = shell_word(path);
        let text = self
            .run(format!(
                "cd -- {p} && find . {depth}! -name . -exec stat -c '%f %s %Y %n' {{}} + && echo '--links' && find . {depth}-type l -exec sh -c 'for l; do printf \"%s\\n\" \"$l\"; readlink -- \"$l\"; done' sh {{}} +"
            ))
            .await?;
        parse_tree(&String::from_utf8_lossy(&text))
    }

    pub async fn open_read(&self, path: &str, offset: u64) -> io::Result<Reader> {
        let p = shell_word(path);
        let command = match offset {
            0 => format!("exec cat -- {p}"),
            n => format!("exec tail -c +{} -- {p}", n + 1),
        };
        let process = self.start(command, Stdin::Null).await?;
        Ok(Box::new(StreamReader::new(stdout_of(process))))
    }

    pub async fn open_write(&self, path: &str, offset: u64) -> io::Result<Writer> {
        let p = shell_word(path);
        let redirect = if offset == 0 { ">" } else { ">>" };
        // The file is opened before anything is sent: a bad path fails here, with its reason.
        let mut process = self
            .start(
                format!("exec 3{redirect}{p} && echo ok && exec cat >&3"),
                Stdin::Pipe,
            )
            .await?;
        let stdin = process.take_stdin();
        match process.next_event().await {
            Some(ProcessEvent::Output(OutputStream::Stdout, _)) => {}
            first => return Err(failure(&rest_of(process, first).await)),
        }
        let stdin = stdin.ok_or_else(|| io::Error::other("the command has no stdin"))?;
        Ok(Box::new(CommandWriter {
            stdin: Some(stdin),
            process: Some(process),
            closing: None,
        }))
    }

    pub async fn set_meta(&self, path: &str, mode: u32, mtime: i64) -> io::Result<()> {
        let p = shell_word(path);
        let stamp = touch_stamp(mtime);
        let script = format!("chmod {mode:o} -- {p} && TZ=UTC0 touch -c -t {stamp} -- {p}");
        self.run(script).await.map(drop)
    }

    pub async fn mkdir(&self, path: &str) -> io::Result<()> {
        self.run(format!("mkdir -- {}", shell_word(path)))
            .await
            .map(drop)
    }

    pub async fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        let (t, p) = (shell_words::quote(target), shell_word(path));
        self.run(format!("ln -s -- {t} {p}")).await.map(drop)
    }

    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (shell_word(from), shell_word(to));
        self.run(format!("mv -f -- {f} {t}")).await.map(drop)
    }

    pub async fn remove(&self, path: &str) -> io::Result<()> {
        // Without -f: a missing file is an error ("No such file"), as the other file systems say.
        self.run(format!("rm -- {}", shell_word(path)))
            .await
            .map(drop)
    }

    pub async fn free_space(&self, path: &str) -> Option<u64> {
        let text = self
            .run(format!("df -Pk -- {}", shell_word(path)))
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&text);
        let free: u64 = text
            .lines()
            .last()?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()?;
        Some(free * 1024)
    }
}

/// `%f %s %Y` (hex mode, size, mtime) and the link's target, if any.
fn parse_stat(line: &str, link: Option<String>) -> Option<Meta> {
    let mut fields = line.split(' ');
    let mode = u32::from_str_radix(fields.next()?, 16).ok()?;
    let size = fields.next()?.parse().ok()?;
    let mtime = fields.next()?.parse().ok()?;
    Some(meta_from_mode(mode, size, mtime, link))
}

/// The listing of [`ShellFs::read_tree`]: `%f %s %Y ./path` lines, then `--links`, then each
/// link's path and target on two lines.
fn parse_tree(text: &str) -> io::Result<Vec<Entry>> {
    let (stats, links) = text.split_once("--links\n").unwrap_or((text, ""));
    let mut targets = std::collections::HashMap::new();
    let mut lines = links.lines();
    while let (Some(path), Some(target)) = (lines.next(), lines.next()) {
        targets.insert(path.to_owned(), target.to_owned());
    }
    let mut entries = Vec::new();
    for line in stats.lines() {
        let mut fields = line.splitn(4, ' ');
        let head: Vec<&str> = fields.by_ref().take(3).collect();
        let name = fields.next().ok_or_else(|| garbled(line))?;
        let link = targets.get(name).cloned();
        let meta = parse_stat(&head.join(" "), link).ok_or_else(|| garbled(line))?;
        let rel = name.strip_prefix("./").ok_or_else(|| garbled(line))?;
        entries.push(Entry {
            rel: rel.to_owned(),
            meta,
        });
    }
    // Parents before children, as the walk of the other file systems gives them.
    entries.sort_by(|a, b| a.rel.split('/').cmp(b.rel.split('/')));
    Ok(entries)
}

fn garbled(line: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "cannot read the listing line `{line}` (a name with a newline in it?); rename such files or copy them another way"
        ),
    )
}

/// `mtime` as `touch -t`'s `CCYYMMDDhhmm.SS`, in UTC.
fn touch_stamp(mtime: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    format!("{}.{}", &digits[..12], &digits[12..14])
}

/// The error a failed command stands for, its kind read from its stderr (the C library's words
/// for them are the same in glibc, musl and busybox).
fn failure(output: &Output) -> io::Error {
    let text = String::from_utf8_lossy(&output.stderr);
    let text = text.trim();
    // dash says "Directory nonexistent" where others say "No such file or directory".
    let kind = if text.contains("No such file") || text.contains("nonexistent") {
        io::ErrorKind::NotFound
    } else if text.contains("Permission denied") || text.contains("Operation not permitted") {
        io::ErrorKind::PermissionDenied
    } else if text.contains("No space left") {
        io::ErrorKind::StorageFull
    } else if text.contains("Not a directory") {
        io::ErrorKind::NotADirectory
    } else {
        io::ErrorKind::Other
    };
    let code = output.status.shell_code();
    let text: String = text.chars().take(STDERR_KEPT).collect();
    io::Error::new(kind, format!("the command failed (exit {code}): {text}"))
}

/// What is left of `process` after `first`, collected as an [`Output`].
async fn rest_of(process: Process, first: Option<ProcessEvent>) -> Output {
    let mut output = process.output().await;
    match first {
        Some(ProcessEvent::Output(OutputStream::Stderr, data)) => {
            output.stderr.splice(0..0, data.iter().copied());
        }
        Some(ProcessEvent::Exited(status)) => output.status = status,
        _ => {}
    }
    output
}

/// `process`'s stdout as a stream; a non-zero exit at the end is an error with its stderr.
fn stdout_of(process: Process) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin {
    let state = (process, Vec::new());
    Box::pin(futures::stream::unfold(Some(state), |state| async move {
        let (mut process, mut stderr) = state?;
        loop {
            match process.next_event().await? {
                ProcessEvent::Output(OutputStream::Stdout, data) => {
                    return Some((Ok(data), Some((process, stderr))));
                }
                ProcessEvent::Output(OutputStream::Stderr, data) => {
                    stderr.extend_from_slice(&data);
                    stderr.truncate(STDERR_KEPT);
                }
                ProcessEvent::Exited(status) if status.code == Some(0) => return None,
                ProcessEvent::Exited(status) => {
                    let output = Output {
                        stderr,
                        status,
                        ..Output::default()
                    };
                    return Some((Err(failure(&output)), None));
                }
            }
        }
    }))
}

/// A command's stdin as a file being written: `shutdown` closes it and waits for the command,
/// so a failure to write (a full disk) is told there. Dropping it kills the command.
struct CommandWriter {
    /// Shut down, then dropped: a local pipe closes only when dropped.
    stdin: Option<StdinWriter>,
    process: Option<Process>,
    closing: Option<BoxFuture<'static, io::Result<()>>>,
}

impl AsyncWrite for CommandWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.as_mut().poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.as_mut().poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing.is_none() {
            // A stdin the command already closed (it failed) still lets its exit be read.
            if let Some(stdin) = self.stdin.as_mut() {
                let _ = ready!(stdin.as_mut().poll_shutdown(cx));
            }
            self.stdin = None;
            let process = self.process.take();
            self.closing = Some(Box::pin(async move {
                let Some(process) = process else {
                    return Ok(());
                };
                let output = process.output().await;
                match output.status.code {
                    Some(0) => Ok(()),
                    _ => Err(failure(&output)),
                }
            }));
        }
        match self.closing.as_mut() {
            Some(closing) => closing.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::tree::{Kind, join};

    #[test]
    fn listings_parse_with_links_and_spaces() {
        let text = "41ed 4096 100 ./d\n81a4 3 200 ./d/a b\na1ff 1 300 ./l\n--links\n./l\nd/a b\n";
        let entries = parse_tree(text).unwrap();
        let got: Vec<(&str, &Kind, u32)> = entries
            .iter()
            .map(|e| (e.rel.as_str(), &e.meta.kind, e.meta.mode))
            .collect();
        assert_eq!(
            got,
            [
                ("d", &Kind::Dir, 0o755),
                ("d/a b", &Kind::File, 0o644),
                ("l", &Kind::Symlink("d/a b".into()), 0o777)
            ]
        );
        assert_eq!(entries[1].meta.size, 3);
        assert!(parse_tree("zz 1 2 ./x\n").is_err());
    }

    #[test]
    fn touch_stamps_are_utc() {
        assert_eq!(touch_stamp(0), "197001010000.00");
        assert_eq!(touch_stamp(1_700_000_000), "202311142213.20");
    }

    /// The commands above, run by this machine's `sh` (dash on Debian) through the local
    /// transport.
    #[tokio::test]
    async fn the_commands_work_under_a_real_sh() {
        use crate::transport::{Activity, Backend, KillPolicy, Local};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_owned();
        let kill = KillPolicy {
            grace: Duration::from_secs(1),
        };
        let local = Backend::Local(Local::new("local", kill));
        let fs = ShellFs::new(Transport::new("local", local, Activity::default()));
        {
            let d = join(&root, "a d");
            fs.mkdir(&d).await.unwrap();
            let f = join(&d, "it's");
            let mut w = fs.open_write(&f, 0).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut w, b"hello")
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::shutdown(&mut w).await.unwrap();
            fs.set_meta(&f, 0o640, 1_700_000_000).await.unwrap();
            fs.symlink("it's", &join(&d, "l")).await.unwrap();
            let meta = fs.stat(&f, false).await.unwrap();
            assert_eq!(
                (meta.size, meta.mtime, meta.mode),
                (5, 1_700_000_000, 0o640)
            );
            let tree = fs.read_tree(&d).await.unwrap();
            let names: Vec<&str> = tree.iter().map(|e| e.rel.as_str()).collect();
            assert_eq!(names, ["it's", "l"]);
            assert_eq!(tree[1].meta.kind, Kind::Symlink("it's".into()));
            let mut r = fs.open_read(&f, 2).await.unwrap();
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut r, &mut text)
                .await
                .unwrap();
            assert_eq!(text, "llo");
            let missing = fs.stat(&join(&d, "nope"), true).await.unwrap_err();
            assert_eq!(missing.kind(), io::ErrorKind::NotFound);
            let bad = fs.open_write(&join(&d, "no/such"), 0).await.err().unwrap();
            assert_eq!(bad.kind(), io::ErrorKind::NotFound, "{bad}");
            assert!(fs.free_space(&d).await.unwrap() > 0);
        }
    }
}
