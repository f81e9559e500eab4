//! Asking the person behind the client (MCP elicitation, form mode): one decision among a few
//! choices, with an optional note, or why nobody could answer.

use std::time::Duration;

use rmcp::model::{
    ElicitRequestParams, ElicitationAction, ElicitationSchema, EnumSchema, StringSchema,
};
use rmcp::service::ElicitationMode;
use rmcp::{Peer, RoleServer};
use serde_json::Value;

/// A question for the person.
pub struct Question {
    /// What is asked and everything needed to decide (host, command, why).
    pub message: String,
    /// The choices: the value given back, and its label. The first is the default.
    pub choices: Vec<(&'static str, String)>,
    /// Label of an optional free-text field (a reason for a denial), if any.
    pub note: Option<&'static str>,
}

/// What came of a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The person picked `choice` (one of the question's values), with an optional note.
    Chose {
        choice: String,
        note: Option<String>,
    },
    /// The person declined or dismissed the question.
    Declined,
    /// Nobody could answer: the client cannot ask (no elicitation), did not answer in time, or
    /// failed; says which.
    Unanswered(String),
}

/// Whether the client on `peer` can be asked a question (it declared form elicitation, on a
/// protocol version that allows the server to send it requests).
pub fn can_ask(peer: &Peer<RoleServer>) -> bool {
    peer.supported_elicitation_modes()
        .contains(&ElicitationMode::Form)
        && peer
            .peer_info()
            .is_some_and(|info| info.protocol_version.has_initialize())
}

/// Asks `question` of the client on `peer`, waiting at most `timeout` for the answer.
pub async fn ask(peer: &Peer<RoleServer>, question: &Question, timeout: Duration) -> Answer {
    if !can_ask(peer) {
        return Answer::Unanswered(
            "the MCP client cannot ask its user (it declared no form elicitation capability)"
                .to_owned(),
        );
    }
    let schema = match schema(question) {
        Ok(schema) => schema,
        Err(e) => return Answer::Unanswered(format!("outpost could not phrase the question: {e}")),
    };
    let request = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: question.message.clone(),
        requested_schema: schema,
    };
    match peer
        .create_elicitation_with_timeout(request, Some(timeout))
        .await
    {
        Ok(result) => match result.action {
            ElicitationAction::Accept => read_choice(question, result.content.as_ref()),
            // Decline, Cancel, and whatever later versions add: not a yes.
            _ => Answer::Declined,
        },
        Err(rmcp::ServiceError::Timeout { .. }) => {
            Answer::Unanswered(format!("nobody answered within {} s", timeout.as_secs()))
        }
        Err(e) => Answer::Unanswered(format!("the question could not be asked: {e}")),
    }
}

/// The form: `decision` (one of the choices, titled) and, when asked for, an optional `note`.
fn schema(question: &Question) -> Result<ElicitationSchema, String> {
    let values = question
        .choices
        .iter()
        .map(|(v, _)| (*v).to_owned())
        .collect();
    let titles = question.choices.iter().map(|(_, t)| t.clone()).collect();
    let decision = EnumSchema::builder(values)
        .enum_titles(titles)?
        .title("Decision")
        .build();
    let builder = ElicitationSchema::builder().required_enum_schema("decision", decision);
    let builder = match question.note {
        Some(label) => builder.string_property("note", |s: StringSchema| s.title(label)),
        None => builder,
    };
    builder.build().map_err(str::to_owned)
}

/// The choice in an accepted form's content; anything not among the question's values is no
/// answer at all.
fn read_choice(question: &Question, content: Option<&Value>) -> Answer {
    let field = |name: &str| content.and_then(|c| c.get(name)).and_then(Value::as_str);
    match field("decision") {
        Some(choice) if question.choices.iter().any(|(v, _)| *v == choice) => Answer::Chose {
            choice: choice.to_owned(),
            note: field("note")
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        },
        other => Answer::Unanswered(format!(
            "the client's answer held no valid decision ({other:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question() -> Question {
        Question {
            message: "Run it?".into(),
            choices: vec![("allow", "Allow".into()), ("deny", "Deny".into())],
            note: Some("Reason"),
        }
    }

    #[test]
    fn the_form_offers_the_titled_choices_and_an_optional_note() {
        let schema = serde_json::to_value(schema(&question()).unwrap()).unwrap();
        assert_eq!(schema["required"], serde_json::json!(["decision"]));
        let choices = &schema["properties"]["decision"]["oneOf"];
        assert_eq!(
            choices[0],
            serde_json::json!({"const": "allow", "title": "Allow"})
        );
        assert_eq!(
            choices[1],
            serde_json::json!({"const": "deny", "title": "Deny"})
        );
        assert_eq!(schema["properties"]["note"]["type"], "string");
    }

    #[test]
    fn only_offered_choices_count() {
        let q = question();
        let content = serde_json::json!({"decision": "deny", "note": " too risky "});
        assert_eq!(
            read_choice(&q, Some(&content)),
            Answer::Chose {
                choice: "deny".into(),
                note: Some("too risky".into())
            }
        );
        let content = serde_json::json!({"decision": "sudo"});
        assert!(matches!(
            read_choice(&q, Some(&content)),
            Answer::Unanswered(_)
        ));
        assert!(matches!(read_choice(&q, None), Answer::Unanswered(_)));
    }
}
