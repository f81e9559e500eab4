//! Claude Code's stream-json protocol: the lines outpost writes to its stdin, and what it makes of
//! the lines it prints (the turn's result, one-line summaries for progress).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest excerpt of text or tool input in a progress summary, in characters.
const EXCERPT_CHARS: usize = 120;

/// The stdin line that starts a turn.
pub fn user_message(prompt: &str) -> String {
    let line = json!({"type": "user", "message": {"role": "user", "content": prompt}});
    format!("{line}\n")
}

/// The stdin line that interrupts the running turn (answered by a `control_response`, then an
/// aborted `result`).
pub fn interrupt_request(request_id: &str) -> String {
    let line = json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    });
    format!("{line}\n")
}

/// The `result` line that ends a turn, as Claude prints it.
///
/// API errors arrive as `subtype: "success"` with `is_error: true`: key on `is_error`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TurnResult {
    /// `success`, `error_during_execution`, `error_max_turns`, ...
    #[serde(default)]
    pub subtype: String,
    /// Whether the turn failed (API error, interrupt, turn limit).
    #[serde(default)]
    pub is_error: bool,
    /// Claude's final text (absent for error subtypes).
    #[serde(default)]
    pub result: Option<String>,
    /// The session the turn belongs to (outpost's results carry it once, beside this).
    #[serde(default, skip_serializing)]
    pub session_id: String,
    /// Model round-trips in the turn.
    #[serde(default)]
    pub num_turns: u64,
    /// Cost of the session so far, in US dollars, as Claude reports it.
    #[serde(default)]
    pub total_cost_usd: f64,
    /// Run time of the turn as Claude measured it, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Tool uses that were refused for lack of permission.
    #[serde(default)]
    #[schemars(schema_with = "permission_denials")]
    pub permission_denials: Vec<Value>,
    /// HTTP status of a failed API call, when that is why the turn failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_error_status: Option<u16>,
    /// Why the turn ended (`completed`, `aborted_streaming`, `max_turns`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_reason: Option<String>,
    /// Error messages of error subtypes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// `permission_denials`' schema: the objects Claude reports, kept as it sends them.
fn permission_denials(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "tool_name": { "type": "string" },
                "tool_use_id": { "type": "string" },
                "tool_input": { "type": "object", "description": "The refused call's arguments." }
            }
        }
    })
}

/// What one stdout line means to outpost.
#[derive(Debug)]
pub enum Line {
    /// `system/init`: the session id and the (physical) cwd Claude runs in.
    Init { session_id: String, cwd: String },
    /// The end of a turn.
    Result(Box<TurnResult>),
    /// Anything else: only reported.
    Other,
}

/// Classifies a parsed stdout line.
pub fn classify(event: &Value) -> Line {
    let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
    match (event["type"].as_str(), event["subtype"].as_str()) {
        (Some("system"), Some("init")) => Line::Init {
            session_id: text("session_id"),
            cwd: text("cwd"),
        },
        (Some("result"), _) => match serde_json::from_value::<TurnResult>(event.clone()) {
            Ok(result) => Line::Result(Box::new(result)),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable result line from claude");
                Line::Result(Box::new(TurnResult {
                    subtype: text("subtype"),
                    is_error: true,
                    errors: vec![format!("unreadable result line: {e}")],
                    ..TurnResult::default()
                }))
            }
        },
        _ => Line::Other,
    }
}

/// A readable one-line summary of an event, or `None` for events not worth a progress message.
pub fn summary(event: &Value) -> Option<String> {
    match (event["type"].as_str()?, event["subtype"].as_str()) {
        ("system", Some("init")) => Some(format!(
            "session {} started ({})",
            event["session_id"].as_str().unwrap_or("?"),
            event["model"].as_str().unwrap_or("default model")
        )),
        ("system", Some("api_retry")) => Some(format!(
            "API retry {}/{} in {:.1}s ({} {})",
            event["attempt"],
            event["max_retries"],
            event["retry_delay_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            event["error_status"],
            event["error"].as_str().unwrap_or("error")
        )),
        ("assistant", _) => blocks(&event["message"]["content"], "assistant"),
        ("user", _) => blocks(&event["message"]["content"], "user"),
        ("result", _) => Some(format!(
            "result: {}{}",
            if event["is_error"].as_bool() == Some(true) {
                "error: "
            } else {
                ""
            },
            excerpt(
                event["result"]
                    .as_str()
                    .or(event["errors"][0].as_str())
                    .or(event["subtype"].as_str())
                    .unwrap_or_default()
            )
        )),
        _ => None,
    }
}

/// Summary of the content blocks of an assistant or user message.
fn blocks(content: &Value, role: &str) -> Option<String> {
    if let Some(text) = content.as_str() {
        return Some(format!("{role}: {}", excerpt(text)));
    }
    let parts: Vec<String> = content
        .as_array()?
        .iter()
        .filter_map(|block| match block["type"].as_str()? {
            "text" => Some(format!("{role}: {}", excerpt(block["text"].as_str()?))),
            "thinking" => Some("thinking…".to_owned()),
            "tool_use" => Some(format!(
                "tool {}: {}",
                block["name"].as_str().unwrap_or("?"),
                excerpt(&tool_input(&block["input"]))
            )),
            "tool_result" => Some(format!(
                "tool result{}: {}",
                if block["is_error"].as_bool() == Some(true) {
                    " (error)"
                } else {
                    ""
                },
                excerpt(&result_text(&block["content"]))
            )),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" | "))
}

/// The telling part of a tool's input: its command, path or pattern when it has one.
fn tool_input(input: &Value) -> String {
    for key in [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "query",
        "prompt",
    ] {
        if let Some(text) = input[key].as_str() {
            return text.to_owned();
        }
    }
    input.to_string()
}

fn result_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// `text` on one line, cut to its first EXCERPT_CHARS characters.
pub fn excerpt(text: &str) -> String {
    let flat = one_line(text);
    match flat.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// `text` on one line, cut to its last EXCERPT_CHARS characters (for stderr, whose end matters).
pub fn excerpt_end(text: &str) -> String {
    let flat = one_line(text);
    let extra = flat.chars().count().saturating_sub(EXCERPT_CHARS);
    match flat.char_indices().nth(extra) {
        Some((cut, _)) if extra > 0 => format!("…{}", &flat[cut..]),
        _ => flat,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/claude");

    #[test]
    fn stderr_excerpts_keep_the_end() {
        let stderr = format!("{}\nError: the real cause", "noise ".repeat(100));
        let end = excerpt_end(&stderr);
        assert!(
            end.starts_with('…') && end.ends_with("Error: the real cause"),
            "{end}"
        );
        assert_eq!(end.chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt_end("short\n  one"), "short one");
    }

    fn sample(name: &str) -> Vec<Value> {
        std::fs::read_to_string(format!("{SAMPLES}/{name}"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn two_turns_give_init_and_results() {
        let events = sample("two_turns.jsonl");
        let results: Vec<TurnResult> = events
            .iter()
            .filter_map(|e| match classify(e) {
                Line::Result(r) => Some(*r),
                _ => None,
            })
            .collect();
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[1].result.as_deref(),
            Some("hello from mock #3 (msgs=4, last=second message)")
        );
        assert!(!results[0].is_error);
        match classify(&events[0]) {
            Line::Init { session_id, cwd } => {
                assert_eq!(session_id, "5e35e5e9-0662-402a-8a2a-79d32207d9ed");
                assert_eq!(cwd, "/home/dev/work/proj1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn api_error_is_success_subtype_with_is_error() {
        let events = sample("api_401.jsonl");
        let Line::Result(result) = classify(events.last().unwrap()) else {
            panic!("no result")
        };
        assert_eq!(result.subtype, "success");
        assert!(result.is_error);
        assert_eq!(result.api_error_status, Some(401));
        let retry = summary(&events[1]).unwrap();
        assert!(retry.starts_with("API retry 1/2"), "{retry}");
    }

    #[test]
    fn tool_use_and_result_are_summarised() {
        let events = sample("max_turns.jsonl");
        let lines: Vec<String> = events.iter().filter_map(summary).collect();
        assert!(
            lines.contains(&"tool Bash: echo tool-output-42".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"tool result: tool-output-42".to_owned()),
            "{lines:?}"
        );
        let Line::Result(result) = classify(events.last().unwrap()) else {
            panic!()
        };
        assert_eq!(result.subtype, "error_max_turns");
        assert_eq!(result.errors, vec!["Reached maximum number of turns (1)"]);
    }

    #[test]
    fn excerpts_are_one_line_and_cut_on_characters() {
        assert_eq!(excerpt("a\n  b"), "a b");
        let long = "é".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 1);
    }
}
