//! Claude's permission prompts (`--permission-prompt-tool stdio`): the `can_use_tool` request it
//! prints, the decision outpost gets for it, and the `control_response` line that answers it.

use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A tool use Claude asks to be allowed (`control_request`, subtype `can_use_tool`).
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionRequest {
    /// To be echoed in the answer.
    pub request_id: String,
    pub tool_name: String,
    /// The tool's input (a command, a file path and content, ...).
    pub input: Value,
    /// Claude's own words for what the tool does, when it gives them.
    pub description: Option<String>,
}

impl PermissionRequest {
    /// The request in a `control_request` line, if it is one.
    pub fn from_line(event: &Value) -> Option<Self> {
        let request = &event["request"];
        if event["type"] != "control_request" || request["subtype"] != "can_use_tool" {
            return None;
        }
        Some(Self {
            request_id: event["request_id"].as_str()?.to_owned(),
            tool_name: request["tool_name"].as_str()?.to_owned(),
            input: request["input"].clone(),
            description: request["description"].as_str().map(str::to_owned),
        })
    }

    /// What the tool would do, in a few words for a person: the command, the file, or the input.
    pub fn what(&self) -> String {
        let field = |key: &str| self.input[key].as_str();
        let text = match (field("command"), field("file_path"), field("url")) {
            (Some(command), _, _) => command.to_owned(),
            (None, Some(path), _) => {
                let change = field("new_string").or(field("content")).unwrap_or_default();
                match change {
                    "" => path.to_owned(),
                    change => format!("{path}: {}", super::stream::excerpt(change)),
                }
            }
            (None, None, Some(url)) => url.to_owned(),
            _ => self.input.to_string(),
        };
        let mut text = text.replace('\n', " ⏎ ");
        if text.chars().count() > WHAT_CHARS {
            text = text.chars().take(WHAT_CHARS).collect::<String>() + "…";
        }
        text
    }
}

/// Most characters of a tool's input shown to a person.
const WHAT_CHARS: usize = 1000;

/// What was decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it, this once.
    Allow,
    /// Run it, and every later use of the same tool by this process without asking.
    AllowTool,
    /// Do not run it; Claude is told why.
    Deny(String),
}

/// A request waiting for its decision.
#[derive(Debug)]
pub struct Approval {
    pub request: PermissionRequest,
    pub decide: oneshot::Sender<Decision>,
}

/// The `control_response` line that answers `request` with `decision`.
pub fn response(request: &PermissionRequest, decision: &Decision) -> String {
    let answer = match decision {
        Decision::Allow | Decision::AllowTool => {
            json!({"behavior": "allow", "updatedInput": request.input})
        }
        Decision::Deny(message) => json!({"behavior": "deny", "message": message}),
    };
    let line = json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request.request_id, "response": answer},
    });
    format!("{line}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request line of the captured sample `25_perm_stdio_allow.jsonl`, shortened.
    const SAMPLE: &str = r#"{"type":"control_request","request_id":"62d2b678","request":{"subtype":"can_use_tool","tool_name":"Bash","display_name":"Bash","input":{"command":"touch /home/dev/work/proj1/perm-test-file","description":"Run a command"},"description":"Run a command","permission_suggestions":[],"blocked_path":"/home/dev/work/proj1/perm-test-file","tool_use_id":"toolu_mock_45"}}"#;

    #[test]
    fn reads_the_request_and_answers_it() {
        let event: Value = serde_json::from_str(SAMPLE).unwrap();
        let request = PermissionRequest::from_line(&event).unwrap();
        assert_eq!(request.tool_name, "Bash");
        assert_eq!(request.what(), "touch /home/dev/work/proj1/perm-test-file");
        let allow: Value = serde_json::from_str(&response(&request, &Decision::Allow)).unwrap();
        assert_eq!(allow["type"], "control_response");
        assert_eq!(allow["response"]["request_id"], "62d2b678");
        assert_eq!(allow["response"]["response"]["behavior"], "allow");
        assert_eq!(
            allow["response"]["response"]["updatedInput"],
            event["request"]["input"]
        );
        let deny = response(&request, &Decision::Deny("not on prod".into()));
        let deny: Value = serde_json::from_str(&deny).unwrap();
        assert_eq!(deny["response"]["response"]["message"], "not on prod");
        let interrupt = serde_json::json!({"type": "control_request", "request_id": "r", "request": {"subtype": "interrupt"}});
        assert_eq!(PermissionRequest::from_line(&interrupt), None);
    }

    #[test]
    fn edits_show_the_file_and_an_excerpt() {
        let request = PermissionRequest {
            request_id: "r".into(),
            tool_name: "Edit".into(),
            input: serde_json::json!({"file_path": "/p/a.rs", "old_string": "x", "new_string": "fn main() {}\n"}),
            description: None,
        };
        assert!(
            request.what().starts_with("/p/a.rs: fn main() {}"),
            "{}",
            request.what()
        );
    }
}
