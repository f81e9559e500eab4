//! The config file on disk: where it is, reading it (errors name file, line and field), and
//! changing it under a lock so that concurrent `outpost remote ...` commands all keep their edit.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::Config;
use crate::error::{Error, Result};

impl Config {
    /// Where the config lives: `$OUTPOST_CONFIG`, else `~/.config/outpost/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(path) = std::env::var_os("OUTPOST_CONFIG") {
            return PathBuf::from(path);
        }
        dirs::home_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".config/outpost/config.json")
    }

    /// Reads the config at `path`; a missing file is the default config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(Error::ConfigRead {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    /// Parses config text, naming the file, line, column and field of any error. A leading
    /// UTF-8 byte order mark (which some Windows editors write) is skipped.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut de = serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "(top level)".to_owned(),
                p => p,
            };
            let inner = e.into_inner();
            Error::ConfigInvalid {
                path: path.to_owned(),
                line: inner.line(),
                column: inner.column(),
                field,
                message: strip_position(&inner.to_string()),
            }
        })?;
        de.end().map_err(|e| Error::ConfigInvalid {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            field: "(top level)".to_owned(),
            message: strip_position(&e.to_string()),
        })?;
        config.validate(path)?;
        let mut config = config;
        config.origin = super::Origin(Some(path.to_owned()));
        Ok(config)
    }

    /// Changes the config file: under an exclusive lock (`config.lock` beside it), reads the
    /// file as it is now, applies `change`, validates the result and writes it atomically.
    /// Concurrent changes (several `outpost remote add` at once) wait for each other and each
    /// keeps the others' edits; an error from `change` or validation writes nothing.
    pub fn update<T>(path: &Path, change: impl FnOnce(&mut Config) -> Result<T>) -> Result<T> {
        let _lock = lock(path)?;
        let mut config = Self::load(path)?;
        let outcome = change(&mut config)?;
        config.validate(path)?;
        config.save(path)?;
        Ok(outcome)
    }

    /// Writes the config atomically (temp file, fsync, rename), readable by its owner only.
    /// Changes to an existing file go through [`Config::update`], which also locks it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let write_err = |source| Error::ConfigWrite {
            path: path.to_owned(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| write_err(e.into()))?;
        text.push('\n');
        crate::atomic_file::write_atomic(path, text.as_bytes()).map_err(write_err)
    }
}

/// Takes the exclusive lock of the config at `path`, held until the returned file is dropped.
fn lock(path: &Path) -> Result<File> {
    crate::atomic_file::lock(path).map_err(|source| Error::ConfigLock {
        path: path.to_owned(),
        lock: crate::atomic_file::lock_path(path),
        source,
    })
}

/// serde_json appends " at line L column C"; the error already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{HostKeyPolicy, RemoteConfig};
    use super::*;

    #[test]
    fn error_names_file_line_and_field() {
        let text = "{\n  \"exec\": {\n    \"default_timeout_secs\": \"soon\"\n  }\n}";
        let err = Config::parse(text, Path::new("/x/config.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config file /x/config.json:3:"), "{msg}");
        assert!(msg.contains("exec.default_timeout_secs"), "{msg}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = "{\"remotes\": {\"gpu\": {\"host\": \"g\", \"prot\": 22}}}";
        let msg = Config::parse(text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("remotes.gpu"), "{msg}");
        assert!(msg.contains("unknown field `prot`"), "{msg}");
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "\u{feff}{\"default_host\": \"gpu\"}").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.default_host.as_deref(), Some("gpu"));
        // Only a leading one: elsewhere it is not JSON whitespace.
        let msg = Config::parse("{}\u{feff}", &path).unwrap_err().to_string();
        assert!(msg.contains("trailing characters"), "{msg}");
    }

    #[test]
    fn empty_object_is_default_and_round_trips() {
        let config = Config::parse("{}", Path::new("c.json")).unwrap();
        assert_eq!(config, Config::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        let mut config = Config {
            default_host: Some("gpu".into()),
            ..Config::default()
        };
        config.remotes.insert(
            "gpu".into(),
            RemoteConfig {
                host: "gpu.example".into(),
                user: Some("me".into()),
                port: Some(2222),
                strict_host_key_checking: Some(HostKeyPolicy::AcceptNew),
                forward_env: vec!["ANTHROPIC_API_KEY".into()],
                ..RemoteConfig::default()
            },
        );
        config.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Config::load(&path).unwrap(), config);
    }

    #[test]
    fn missing_file_is_default() {
        let config = Config::load(Path::new("/nonexistent/outpost.json")).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn update_rereads_the_file_and_a_refused_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/config.json");
        let add = |name: &str| {
            Config::update(&path, |config| {
                let remote = RemoteConfig {
                    host: format!("{name}.example"),
                    ..RemoteConfig::default()
                };
                config.remotes.insert(name.to_owned(), remote);
                Ok(())
            })
        };
        add("a").unwrap();
        add("b").unwrap();
        let names: Vec<_> = Config::load(&path).unwrap().remotes.into_keys().collect();
        assert_eq!(names, ["a", "b"]);
        let before = std::fs::read(&path).unwrap();
        // `local` is refused by validation: nothing is written.
        assert!(add("local").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(dir.path().join("new/config.lock").exists());
    }
}
