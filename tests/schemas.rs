//! The JSON Schemas in `schemas/` are generated from the Rust types; this test keeps them in sync.
//! Regenerate with `OUTPOST_UPDATE_SCHEMAS=1 cargo test --test schemas`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use outpost::claude::Claude;
use outpost::claude::registry::Registry;
use outpost::config::Config;
use outpost::hosts::Hosts;
use outpost::jobs::JobManager;
use outpost::tools::Outpost;

fn check(path: &Path, value: &serde_json::Value, stale: &mut Vec<PathBuf>) {
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("OUTPOST_UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    } else if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
        stale.push(path.to_owned());
    }
}

#[tokio::test]
async fn schemas_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut stale = Vec::new();
    let config = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
    check(&root.join("config.schema.json"), &config, &mut stale);

    let hosts = Arc::new(Hosts::new(Config::default()));
    let state = tempfile::tempdir().unwrap();
    let registry = Registry::new(state.path().join("sessions.json"));
    let server = Outpost::new(
        hosts.clone(),
        Arc::new(JobManager::new(Duration::from_secs(60))),
        Claude::new(hosts, registry),
    );
    let tools = server.tools();
    assert!(!tools.is_empty());
    for tool in tools {
        let value = serde_json::json!({
            "name": tool.name,
            "description": tool.description,
            "inputSchema": tool.input_schema,
            "outputSchema": tool.output_schema,
        });
        check(
            &root.join(format!("tools/{}.json", tool.name)),
            &value,
            &mut stale,
        );
    }
    assert!(
        stale.is_empty(),
        "schemas out of date: {stale:?}; regenerate with OUTPOST_UPDATE_SCHEMAS=1 cargo test --test schemas"
    );
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.json");
    let text = std::fs::read_to_string(&path).unwrap();
    Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
}
