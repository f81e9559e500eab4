//! `outpost cp SRC DST`: the `transfer` tool from a terminal, with a progress bar when stderr is
//! one; Ctrl-C or SIGTERM stops the copy (the file being written stays under its partial name).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Result;
use crate::hosts::{Hosts, LOCAL};
use crate::transfer::{self, Location, Options, Progress};

/// Exit code after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

/// Copies `source` to `dest` (`host:path`; a bare path is here, relative to this directory);
/// returns the exit code: 0 when done, 130 when interrupted. A failure is an error.
pub async fn run(hosts: &Hosts, source: &str, dest: &str, options: Options) -> Result<i32> {
    let source = here(Location::parse(source, "source")?);
    let dest = here(Location::parse(dest, "destination")?);
    let termination = crate::serve::termination();
    let progress = Progress::default();
    let bar = std::io::stderr().is_terminal().then(new_bar);
    let copy = transfer::open_and_copy(hosts, &source, &dest, &options, &progress);
    tokio::pin!(copy);
    tokio::pin!(termination);
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let outcome = loop {
        tokio::select! {
            result = &mut copy => break Some(result),
            _ = ticks.tick() => if let Some(bar) = &bar {
                bar.set_length(progress.bytes_total());
                bar.set_position(progress.bytes_done());
            },
            _ = &mut termination => break None,
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match outcome {
        Some(result) => {
            eprintln!("{}", result?.line());
            Ok(0)
        }
        None => {
            eprintln!(
                "outpost: interrupted; a file being written stays under its partial name and the same copy resumes it"
            );
            Ok(EXIT_INTERRUPTED)
        }
    }
}

/// A bare path is this machine's, relative to the current directory (as `cp` reads it).
fn here(mut location: Location) -> Location {
    if location.host == LOCAL
        && !location.path.starts_with('/')
        && crate::home::in_home(&location.path).is_none()
        && let Ok(cwd) = std::env::current_dir()
    {
        let joined = cwd.join(&location.path).to_string_lossy().into_owned();
        let slash = if location.path.ends_with('/') {
            "/"
        } else {
            ""
        };
        location.path = format!("{}{slash}", joined.trim_end_matches('/'));
    }
    location
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style =
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}");
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}
