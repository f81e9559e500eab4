//! Decoding one incoming JSON-RPC text for any MCP transport, and the error reply a bad one deserves.

use rmcp::RoleServer;
use rmcp::model::{ErrorData, JsonRpcError, RequestId};
use rmcp::service::RxJsonRpcMessage;
use serde::Deserialize;
use serde_json::Value;

/// What to do with one incoming text (a line on stdio, a frame on a WebSocket).
#[derive(Debug)]
pub enum Incoming {
    /// A message for the MCP service.
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    /// Nothing to do: blank, or a notification nobody needs to answer.
    Ignore,
    /// Not a valid message: send this JSON-RPC error back.
    Reply(String),
}

/// Parses `text` as one JSON-RPC message. Invalid JSON gets a Parse error (-32700); valid JSON
/// that is not an MCP message gets Invalid Request (-32600) with its id when it has a valid
/// one, else with `"id": null`.
pub fn parse_incoming(text: &[u8]) -> Incoming {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Incoming::Ignore;
    }
    let value: Value = match serde_json::from_slice(text) {
        Ok(value) => value,
        Err(e) => return reply(None, ErrorData::parse_error(format!("not JSON: {e}"), None)),
    };
    if value.is_array() {
        let error = ErrorData::invalid_request("JSON-RPC batches are not supported by MCP", None);
        return reply(None, error);
    }
    let has_method = value.get("method").is_some();
    let id = match value.get("id").map(RequestId::deserialize) {
        None => None,
        Some(Ok(id)) => Some(id),
        // A request whose id is no string or integer (1.5, true, null, {}, []) cannot be
        // answered by its id, nor ignored as a notification.
        Some(Err(_)) if has_method => {
            let error = ErrorData::invalid_request("the id must be a string or an integer", None);
            return reply(None, error);
        }
        Some(Err(_)) => None,
    };
    match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value) {
        Ok(message) => Incoming::Message(Box::new(message)),
        // A notification (no id) is never answered, even when malformed or unknown.
        Err(_) if id.is_none() && has_method => Incoming::Ignore,
        Err(e) => reply(
            id,
            ErrorData::invalid_request(format!("not a valid MCP message: {e}"), None),
        ),
    }
}

/// Invalid Request for a message over the size limit.
pub fn too_large(limit: usize) -> String {
    let error = ErrorData::invalid_request(
        format!("message larger than the limit of {limit} bytes; it was discarded"),
        None,
    );
    serialize(&JsonRpcError::new(None, error))
}

fn reply(id: Option<RequestId>, error: ErrorData) -> Incoming {
    tracing::debug!(message = %error.message, "answering a bad incoming message");
    Incoming::Reply(serialize(&JsonRpcError::new(id, error)))
}

/// The error as JSON. One that names no request carries `"id": null`, as JSON-RPC 2.0 requires
/// (rmcp's type leaves the id out).
fn serialize(error: &JsonRpcError) -> String {
    let Ok(mut value) = serde_json::to_value(error) else {
        return r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#
            .to_owned();
    };
    if let Some(fields) = value.as_object_mut() {
        fields.entry("id").or_insert(Value::Null);
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> Value {
        match parse_incoming(text.as_bytes()) {
            Incoming::Reply(json) => serde_json::from_str(&json).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_parse_error_for_id_null() {
        let e = error_of("garbage{");
        assert_eq!(e["error"]["code"], -32700);
        assert_eq!(e["jsonrpc"], "2.0");
        assert_eq!(e.get("id"), Some(&Value::Null));
        let large: Value = serde_json::from_str(&too_large(10)).unwrap();
        assert_eq!(large.get("id"), Some(&Value::Null));
    }

    #[test]
    fn requests_with_unusable_ids_are_invalid_for_id_null() {
        for id in ["1.5", "true", "null", "{}", "[]"] {
            let e = error_of(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            assert_eq!(e["error"]["code"], -32600, "{id}");
            assert_eq!(e.get("id"), Some(&Value::Null), "{id}");
        }
    }

    #[test]
    fn non_message_with_id_is_invalid_request_for_that_id() {
        let e = error_of(r#"{"jsonrpc":"2.0","id":7,"params":{}}"#);
        assert_eq!(e["error"]["code"], -32600);
        assert_eq!(e["id"], 7);
        assert_eq!(error_of("[1,2]")["error"]["code"], -32600);
    }

    #[test]
    fn requests_and_notifications_pass_or_are_ignored() {
        let ping = r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#;
        assert!(matches!(
            parse_incoming(ping.as_bytes()),
            Incoming::Message(_)
        ));
        let odd = r#"{"jsonrpc":"2.0","method":"notifications/whatever","params":5}"#;
        assert!(matches!(parse_incoming(odd.as_bytes()), Incoming::Ignore));
        assert!(matches!(parse_incoming(b"  \r"), Incoming::Ignore));
    }
}
