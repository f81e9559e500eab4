//! Turning tool outcomes into MCP results: structured content plus a short text for clients that ignore it.

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

use crate::error::Error;

/// A result carrying `value` as `structuredContent` and `text` as its readable rendering.
pub fn structured<T: Serialize>(value: &T, text: String, is_error: bool) -> CallToolResult {
    let mut result = if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    match serde_json::to_value(value) {
        Ok(json) => result.structured_content = Some(json),
        Err(e) => tracing::error!(error = %e, "cannot serialize a tool result"),
    }
    result
}

/// A failure to do what was asked, as an `isError` result the model can read and act on.
pub fn failure(error: &Error) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.to_string())])
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
