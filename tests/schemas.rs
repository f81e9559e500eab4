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
use serde_json::Value;

fn check(path: &Path, value: &serde_json::Value, stale: &mut Vec<PathBuf>) {
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("OUTPOST_UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    } else if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
        stale.push(path.to_owned());
    }
}

/// The server as `tools/list` serves it.
fn server() -> Outpost {
    let hosts = Arc::new(Hosts::new(Config::default()));
    let state = tempfile::tempdir().unwrap();
    let registry = Registry::new(state.path().join("sessions.json"));
    Outpost::new(
        hosts.clone(),
        Arc::new(JobManager::new(Duration::from_secs(60))),
        Claude::new(hosts, registry),
    )
}

#[tokio::test]
async fn schemas_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut stale = Vec::new();
    let config = Config::json_schema();
    check(&root.join("config.schema.json"), &config, &mut stale);

    let tools = server().tools();
    assert!(!tools.is_empty());
    for tool in tools {
        let value = serde_json::json!({
            "name": tool.name,
            "title": tool.title,
            "description": tool.description,
            "annotations": tool.annotations,
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

/// The formats JSON Schema 2020-12 defines; validators warn about others (Ajv: `unknown format`).
const STANDARD_FORMATS: [&str; 19] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords whose value is one subschema; of them, those where `true`/`false` is customary.
const SUBSCHEMA: [&str; 12] = [
    "items",
    "contains",
    "not",
    "propertyNames",
    "if",
    "then",
    "else",
    "additionalProperties",
    "unevaluatedProperties",
    "additionalItems",
    "unevaluatedItems",
    "contentSchema",
];
const BOOLEAN_ALLOWED: [&str; 4] = [
    "additionalProperties",
    "unevaluatedProperties",
    "additionalItems",
    "unevaluatedItems",
];
/// Keywords that hold a list, or a map, of subschemas.
const SUBSCHEMA_LISTS: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
const SUBSCHEMA_MAPS: [&str; 6] = [
    "properties",
    "patternProperties",
    "dependentSchemas",
    "dependencies",
    "$defs",
    "definitions",
];
/// Keywords that constrain a value: a schema with none of them accepts anything (MCP Inspector
/// 2.12 `--strict` warns "untyped schema"), like a bare `true`.
const CONSTRAINING: [&str; 43] = [
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "format",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "items",
    "prefixItems",
    "contains",
    "additionalItems",
    "unevaluatedItems",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "dependentSchemas",
    "dependencies",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
];

/// What a strict client objects to in `schema` (at `path`, reached through `keyword`): a format
/// JSON Schema does not define, a bare boolean where a schema belongs, a schema that constrains
/// nothing. The rules are MCP Inspector 2.12's `--strict` lint, plus Ajv's formats.
fn problems(schema: &Value, path: &str, keyword: &str, found: &mut Vec<String>) {
    let node = match schema {
        Value::Bool(b) if !BOOLEAN_ALLOWED.contains(&keyword) => {
            return found.push(format!("{path}: bare `{b}` where a schema belongs"));
        }
        Value::Object(node) => node,
        _ => return,
    };
    // `if` constrains only with `then` or `else`.
    let conditional =
        node.contains_key("if") && (node.contains_key("then") || node.contains_key("else"));
    if keyword != "not" && !conditional && !node.keys().any(|k| CONSTRAINING.contains(&k.as_str()))
    {
        found.push(format!(
            "{path}: a schema that constrains nothing: {schema}"
        ));
    }
    if let Some(format) = node.get("format").and_then(Value::as_str)
        && !STANDARD_FORMATS.contains(&format)
    {
        found.push(format!("{path}: format `{format}` is not JSON Schema's"));
    }
    for (key, value) in node {
        let at = format!("{path}.{key}");
        match (key.as_str(), value) {
            (k, Value::Array(list)) if SUBSCHEMA_LISTS.contains(&k) || k == "items" => {
                for (i, sub) in list.iter().enumerate() {
                    problems(sub, &format!("{at}[{i}]"), k, found);
                }
            }
            (k, Value::Object(map)) if SUBSCHEMA_MAPS.contains(&k) => {
                for (name, sub) in map {
                    problems(sub, &format!("{at}.{name}"), k, found);
                }
            }
            (k, sub) if SUBSCHEMA.contains(&k) => problems(sub, &at, k, found),
            _ => {}
        }
    }
}

#[test]
fn the_checker_finds_what_strict_clients_refuse() {
    let bad = serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "n": {"type": "integer", "format": "uint64"},
            "list": {"type": "array", "items": true},
            "any": {"description": "anything"},
            "when": {"type": "string", "format": "date-time"},
            "none": {"not": {}}
        }
    });
    let mut found = Vec::new();
    problems(&bad, "#", "", &mut found);
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[tokio::test]
async fn every_schema_is_portable() {
    let mut found = Vec::new();
    problems(&Config::json_schema(), "config", "", &mut found);
    for tool in server().tools() {
        let input = Value::Object((*tool.input_schema).clone());
        problems(
            &input,
            &format!("{}.inputSchema", tool.name),
            "",
            &mut found,
        );
        let output = tool.output_schema.map(|o| Value::Object((*o).clone()));
        let output = output.unwrap_or_else(|| panic!("{} has no outputSchema", tool.name));
        problems(
            &output,
            &format!("{}.outputSchema", tool.name),
            "",
            &mut found,
        );
    }
    assert!(found.is_empty(), "{found:#?}");
}
