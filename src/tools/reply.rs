//! Turning tool outcomes into MCP results: structured content plus a text. Claude Code gives a
//! model only the structured content of a success and only the text of an error, so a success's
//! text is a short summary while an error's text carries every field of the structured part.

use std::fmt::Write as _;

use rmcp::model::{CallToolResult, ContentBlock};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// Strings longer than this (or with a line break) get a block of their own in an error's text.
const INLINE_STRING: usize = 120;

/// A successful result: `value` as `structuredContent`, `summary` for clients that show text.
pub fn success<T: Serialize>(value: &T, summary: String) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(summary)]);
    result.structured_content = structured(value);
    result
}

/// An `isError` result that still has its data (a timeout, a failed Claude turn): `value` as
/// `structuredContent`, and a text that is `headline` followed by every field of `value`.
pub fn failed_with<T: Serialize>(value: &T, headline: &str) -> CallToolResult {
    let text = format!("{headline}\n{}", fields_text(value));
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = structured(value);
    result
}

/// A failure to do what was asked, as an `isError` result the model can read and act on.
pub fn failure(error: &Error) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.to_string())])
}

fn structured<T: Serialize>(value: &T) -> Option<Value> {
    serde_json::to_value(value)
        .inspect_err(|e| tracing::error!(error = %e, "cannot serialize a tool result"))
        .ok()
}

/// Every field of `value`, in declaration order: one `name: value` line each (null fields left
/// out), then each multi-line or long string as a block under a `--- name ---` line.
fn fields_text<T: Serialize>(value: &T) -> String {
    let fields = serde_json::to_string(value)
        .and_then(|json| serde_json::from_str::<Fields>(&json))
        .map(|f| f.0)
        .unwrap_or_default();
    let mut lines = String::new();
    let mut blocks = String::new();
    for (name, value) in fields {
        let _ = match value {
            Value::Null => Ok(()),
            Value::String(s) if s.contains('\n') || s.chars().count() > INLINE_STRING => {
                writeln!(
                    blocks,
                    "--- {name} ---\n{}",
                    s.strip_suffix('\n').unwrap_or(&s)
                )
            }
            Value::String(s) if s.is_empty() => writeln!(lines, "{name}: \"\""),
            Value::String(s) => writeln!(lines, "{name}: {s}"),
            other => writeln!(lines, "{name}: {other}"),
        };
    }
    lines.push_str(&blocks);
    lines.truncate(lines.trim_end().len());
    lines
}

/// A JSON object's fields in the order they were written.
struct Fields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// Seconds given as a JSON number, checked to be positive and at most `max`.
pub fn seconds(field: &'static str, value: f64, max: u64) -> Result<std::time::Duration, Error> {
    if !value.is_finite() || value <= 0.0 {
        return Err(Error::InvalidArgument {
            field,
            reason: format!("must be a positive number of seconds, got {value}"),
        });
    }
    if value > max as f64 {
        return Err(Error::InvalidArgument {
            field,
            reason: format!("{value} is over the limit of {max} seconds"),
        });
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Outcome {
        status: &'static str,
        exit_code: Option<i32>,
        signal: Option<&'static str>,
    }

    #[derive(Serialize)]
    struct Example {
        host: &'static str,
        #[serde(flatten)]
        outcome: Outcome,
        stdout: String,
        stderr: String,
        truncated: bool,
        job_id: Option<&'static str>,
        tags: Vec<&'static str>,
    }

    fn text_of(result: &CallToolResult) -> String {
        let block = result.content.first().and_then(|c| c.as_text());
        block.map(|t| t.text.clone()).unwrap_or_default()
    }

    #[test]
    fn an_error_text_carries_every_field_in_order_with_output_last() {
        let value = Example {
            host: "box",
            outcome: Outcome {
                status: "timed_out",
                exit_code: None,
                signal: Some("SIGTERM"),
            },
            stdout: "one\ntwo\n".into(),
            stderr: String::new(),
            truncated: true,
            job_id: Some("job-1-abc"),
            tags: vec!["a", "b"],
        };
        let result = failed_with(&value, "timed out after 1.0s on box");
        assert_eq!(result.is_error, Some(true));
        assert_eq!(
            text_of(&result),
            "timed out after 1.0s on box\nhost: box\nstatus: timed_out\nsignal: SIGTERM\n\
             stderr: \"\"\ntruncated: true\njob_id: job-1-abc\ntags: [\"a\",\"b\"]\n\
             --- stdout ---\none\ntwo"
        );
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["job_id"], "job-1-abc");
        assert_eq!(structured["exit_code"], Value::Null);
    }

    #[test]
    fn a_success_text_is_the_summary_alone() {
        let result = success(&serde_json::json!({"a": 1}), "done".into());
        assert_eq!(
            (result.is_error, text_of(&result)),
            (Some(false), "done".into())
        );
        assert_eq!(result.structured_content, Some(serde_json::json!({"a": 1})));
    }
}
