//! What the bridge remembers of its client's MCP session: the `initialize` to replay on a new
//! link, the log level, the calls in flight, and the messages waiting for a link.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

/// JSON-RPC error code for calls lost with the link or never sent.
const LINK_ERROR: i64 = -32000;
/// Prefix of the ids the bridge uses for its own requests.
pub const OWN_ID_PREFIX: &str = "outpost-bridge-";

/// One message from the client.
pub struct ClientMessage {
    pub text: String,
    /// Its id when it is a request.
    pub id: Option<Value>,
    pub method: Option<String>,
}

impl ClientMessage {
    pub fn parse(text: String) -> Result<Self, Value> {
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            json!({"jsonrpc": "2.0", "id": null,
                   "error": {"code": -32700, "message": format!("not JSON: {e}")}})
        })?;
        let method = value
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = method.as_ref().and(value.get("id")).cloned();
        Ok(Self { text, id, method })
    }
}

/// The client session as seen by the bridge.
#[derive(Default)]
pub struct Session {
    /// The client's `initialize` request, once sent.
    initialize: Option<Value>,
    /// The client's last `logging/setLevel` params.
    log_level: Option<Value>,
    /// Requests sent on the current link and not answered yet, by id (as JSON text).
    in_flight: HashMap<String, String>,
    /// Messages waiting for a link, with when they stop waiting.
    queue: VecDeque<(ClientMessage, Instant)>,
    own_ids: u64,
}

impl Session {
    /// Notes a client message about to be sent on the link.
    pub fn sending(&mut self, message: &ClientMessage) {
        let Some(id) = &message.id else { return };
        let method = message.method.clone().unwrap_or_default();
        if let Ok(value) = serde_json::from_str::<Value>(&message.text) {
            match method.as_str() {
                "initialize" => self.initialize = Some(value),
                "logging/setLevel" => self.log_level = value.get("params").cloned(),
                _ => {}
            }
        }
        self.in_flight.insert(id.to_string(), method);
    }

    /// Notes a message from the server; false when it answers one of the bridge's own requests
    /// (and must not reach the client).
    pub fn answered(&mut self, value: &Value) -> bool {
        if value.get("method").is_some() {
            return true;
        }
        let Some(id) = value.get("id") else {
            return true;
        };
        if id.as_str().is_some_and(|id| id.starts_with(OWN_ID_PREFIX)) {
            return false;
        }
        self.in_flight.remove(&id.to_string());
        true
    }

    /// Waits for a link, until `wait` from now.
    pub fn enqueue(&mut self, message: ClientMessage, wait: Duration) {
        self.queue.push_back((message, Instant::now() + wait));
    }

    pub fn take_queue(&mut self) -> VecDeque<(ClientMessage, Instant)> {
        std::mem::take(&mut self.queue)
    }

    /// Error replies for every queued request (their notifications are dropped).
    pub fn expire_all(&mut self, why: &str) -> Vec<Value> {
        self.expire(why, Instant::now() + Duration::from_secs(86_400 * 365))
    }

    /// Error replies for queued requests whose wait is over at `now` (their notifications are dropped).
    pub fn expire(&mut self, why: &str, now: Instant) -> Vec<Value> {
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.queue.drain(..).partition(|(_, until)| *until <= now);
        self.queue = kept.into();
        expired
            .into_iter()
            .filter_map(|(message, _)| message.id)
            .map(|id| link_error(id, format!("the call was not sent: {why}")))
            .collect()
    }

    /// Error replies for every call in flight on a lost link; forgets them.
    pub fn link_lost(&mut self, why: &str) -> Vec<Value> {
        self.in_flight
            .drain()
            .filter_map(|(id, method)| {
                let id: Value = serde_json::from_str(&id).ok()?;
                Some(link_error(
                    id,
                    format!("the connection to the remote outpost was lost while `{method}` was running ({why}); the server cancels a lost connection's calls and kills their processes. Retry the call."),
                ))
            })
            .collect()
    }

    /// What to send on a new link before anything else, so the server sees the same session:
    /// `initialize` (answered to the bridge), `notifications/initialized`, the log level.
    /// Empty when the client has not initialized yet.
    pub fn replay(&mut self) -> Vec<Value> {
        let Some(mut initialize) = self.initialize.clone() else {
            return Vec::new();
        };
        initialize["id"] = json!(self.own_id());
        let mut messages = vec![
            initialize,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ];
        if let Some(params) = self.log_level.clone() {
            let id = self.own_id();
            messages.push(
                json!({"jsonrpc": "2.0", "id": id, "method": "logging/setLevel", "params": params}),
            );
        }
        messages
    }

    fn own_id(&mut self) -> String {
        self.own_ids += 1;
        format!("{OWN_ID_PREFIX}{}", self.own_ids)
    }
}

fn link_error(id: Value, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": LINK_ERROR, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> ClientMessage {
        ClientMessage::parse(text.to_owned()).unwrap()
    }

    #[test]
    fn calls_in_flight_fail_when_the_link_is_lost() {
        let mut session = Session::default();
        session.sending(&message(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"x":1}}"#,
        ));
        session.answered(&json!({"jsonrpc":"2.0","id":1,"result":{}}));
        session.sending(&message(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{}}"#,
        ));
        let errors = session.link_lost("server gone");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["id"], "a");
        assert!(
            errors[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tools/call")
        );
        assert!(session.link_lost("again").is_empty());
    }

    #[test]
    fn replay_reinitializes_under_the_bridges_own_ids() {
        let mut session = Session::default();
        assert!(
            session.replay().is_empty(),
            "nothing before the client initializes"
        );
        session.sending(&message(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"x":1}}"#,
        ));
        session.sending(&message(
            r#"{"jsonrpc":"2.0","id":5,"method":"logging/setLevel","params":{"level":"debug"}}"#,
        ));
        let replay = session.replay();
        assert_eq!(replay.len(), 3);
        assert_eq!(replay[0]["params"]["x"], 1);
        assert!(!session.answered(&json!({"jsonrpc":"2.0","id": replay[0]["id"], "result":{}})));
        assert_eq!(replay[2]["params"]["level"], "debug");
    }

    #[test]
    fn queued_requests_expire_with_an_error() {
        let mut session = Session::default();
        session.enqueue(
            message(r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#),
            Duration::ZERO,
        );
        session.enqueue(
            message(r#"{"jsonrpc":"2.0","method":"notifications/x"}"#),
            Duration::ZERO,
        );
        let errors = session.expire("unreachable", Instant::now());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["id"], 9);
    }
}
