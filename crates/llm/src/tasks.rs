//! Jobs into chat requests (the templates for summarize and classify), and replies into
//! outputs (a classification is checked against the labels it was asked to choose from).
//! Pure: no I/O.

use switchyard_core::contracts::{
    ChatMessage, ChatRole, Classification, GenerationParams, Output, ResponseFormat, Task,
    TextOutput,
};

use crate::provider::{ChatRequest, ChatResponse};

/// What the reply must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Text,
    Labels { labels: Vec<String>, multi: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub request: ChatRequest,
    pub expect: Expect,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The job cannot become a request (wrong task kind, no messages, no labels).
    #[error("{0}")]
    Invalid(String),
    /// The model's reply is not what was asked for (not JSON, a label not offered).
    #[error("the model's answer is unusable: {0}")]
    BadAnswer(String),
}

/// The request for `task`, whose text input (summarize, classify) is `input`.
pub fn prepare(task: &Task, input: Option<&str>, model: &str) -> Result<Prepared, TaskError> {
    let text = || input.ok_or_else(|| TaskError::Invalid("the task has no text input".to_owned()));
    match task {
        Task::Chat(chat) => {
            if !chat.messages.iter().any(|m| m.role == ChatRole::User) {
                return Err(TaskError::Invalid(
                    "a chat needs at least one user message".to_owned(),
                ));
            }
            Ok(Prepared {
                request: request(model, None, chat.messages.clone(), &chat.params),
                expect: Expect::Text,
            })
        }
        Task::Summarize(summarize) => {
            let mut system = "You summarize text faithfully and concisely. Reply with the summary only, without a preamble.".to_owned();
            let mut params = summarize.params.clone();
            if let Some(words) = summarize.max_words {
                system.push_str(&format!(" Use at most {words} words."));
                // A word is a token or two; leave room so the cut comes from the model.
                params
                    .max_tokens
                    .get_or_insert(words.saturating_mul(2) + 16);
            }
            Ok(Prepared {
                request: request(model, Some(system), vec![user(text()?)], &params),
                expect: Expect::Text,
            })
        }
        Task::Classify(classify) => {
            let labels: Vec<String> = classify
                .labels
                .iter()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            if labels.is_empty() {
                return Err(TaskError::Invalid("classify needs labels".to_owned()));
            }
            let choose = if classify.multi_label {
                "every label that applies (at least one)"
            } else {
                "exactly one label"
            };
            let system = format!(
                "You are a text classifier. Choose {choose} from the list. Reply with JSON only, in the form {{\"labels\": [\"<label>\"]}}, using the labels exactly as written."
            );
            let mut prompt = String::from("Labels:\n");
            for label in &labels {
                prompt.push_str("- ");
                prompt.push_str(label);
                prompt.push('\n');
            }
            prompt.push_str("\nText:\n");
            prompt.push_str(text()?);
            let mut params = classify.params.clone();
            params.temperature.get_or_insert(0.0);
            params
                .max_tokens
                .get_or_insert(64 + 16 * labels.len() as u32);
            // The labels' own schema, whatever the job asked: the answer is checked against
            // the labels, so a looser schema would only invite answers that fail the check.
            params.response_format = Some(labels_schema(&labels, classify.multi_label));
            Ok(Prepared {
                request: request(model, Some(system), vec![user(&prompt)], &params),
                expect: Expect::Labels {
                    labels,
                    multi: classify.multi_label,
                },
            })
        }
        Task::Detect(_) | Task::Multi(_) => Err(TaskError::Invalid(format!(
            "the LLM worker does not serve `{}` tasks",
            task.kind().as_str()
        ))),
    }
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: ChatRole::User,
        content: text.to_owned(),
    }
}

fn request(
    model: &str,
    system: Option<String>,
    messages: Vec<ChatMessage>,
    params: &GenerationParams,
) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        system,
        messages,
        max_tokens: params.max_tokens,
        temperature: params.temperature,
        top_p: params.top_p,
        stop: params.stop.clone(),
        response_format: params.response_format.clone(),
    }
}

/// Structured outputs: a JSON Schema whose enum is the labels.
fn labels_schema(labels: &[String], multi: bool) -> ResponseFormat {
    let mut array = serde_json::json!({
        "type": "array",
        "items": { "type": "string", "enum": labels },
        "minItems": 1,
    });
    if !multi {
        array["maxItems"] = serde_json::json!(1);
    }
    ResponseFormat::JsonSchema {
        name: "classification".to_owned(),
        schema: serde_json::json!({
            "type": "object",
            "properties": { "labels": array },
            "required": ["labels"],
            "additionalProperties": false,
        }),
    }
}

/// The job's output from the provider's reply.
pub fn output(expect: &Expect, response: &ChatResponse) -> Result<Output, TaskError> {
    match expect {
        Expect::Text => Ok(Output::Text(TextOutput {
            text: response.text.clone(),
            finish_reason: response.finish_reason.clone(),
        })),
        Expect::Labels { labels, multi } => {
            let chosen = parse_labels(&response.text, labels)?;
            if !multi && chosen.len() != 1 {
                return Err(TaskError::BadAnswer(format!(
                    "expected exactly one label, got {}",
                    chosen.len()
                )));
            }
            Ok(Output::Classification(Classification { labels: chosen }))
        }
    }
}

/// `{"labels": [...]}`, possibly fenced in Markdown; each label matched to the offered one
/// (ignoring case and surrounding space) and returned in its offered spelling, once.
fn parse_labels(text: &str, offered: &[String]) -> Result<Vec<String>, TaskError> {
    let trimmed = text.trim();
    let json = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed)
        .trim();
    let value: serde_json::Value = serde_json::from_str(json).map_err(|error| {
        TaskError::BadAnswer(format!(
            "not JSON ({error}): {}",
            crate::snippet(text.as_bytes())
        ))
    })?;
    let Some(list) = value.get("labels").and_then(|l| l.as_array()) else {
        return Err(TaskError::BadAnswer(
            "no `labels` list in the answer".to_owned(),
        ));
    };
    let mut chosen: Vec<String> = Vec::new();
    for item in list {
        let Some(label) = item.as_str() else {
            return Err(TaskError::BadAnswer(format!(
                "label {item} is not a string"
            )));
        };
        let Some(offered) = offered
            .iter()
            .find(|o| o.trim().eq_ignore_ascii_case(label.trim()))
        else {
            return Err(TaskError::BadAnswer(format!(
                "`{label}` is not one of the labels offered"
            )));
        };
        if !chosen.contains(offered) {
            chosen.push(offered.clone());
        }
    }
    if chosen.is_empty() {
        return Err(TaskError::BadAnswer("no label chosen".to_owned()));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::contracts::{ClassifyTask, Input, SummarizeTask};
    use switchyard_core::rates::Usage;

    fn classify(labels: &[&str], multi: bool) -> Task {
        Task::Classify(ClassifyTask {
            input: Input::Text {
                text: "my card was charged twice".into(),
            },
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            multi_label: multi,
            params: GenerationParams::default(),
        })
    }

    fn reply(text: &str) -> ChatResponse {
        ChatResponse {
            text: text.to_owned(),
            finish_reason: "stop".into(),
            usage: Usage::default(),
            model: "m".into(),
            request_id: None,
        }
    }

    #[test]
    fn classify_lists_the_labels_and_asks_for_their_schema() {
        let prepared = prepare(
            &classify(&["billing", " tech "], false),
            Some("my card"),
            "m",
        )
        .unwrap();
        let prompt = &prepared.request.messages[0].content;
        assert!(
            prompt.starts_with("Labels:\n- billing\n- tech\n\nText:\nmy card"),
            "{prompt}"
        );
        assert_eq!(prepared.request.temperature, Some(0.0));
        let Some(ResponseFormat::JsonSchema { schema, .. }) = &prepared.request.response_format
        else {
            panic!("no schema");
        };
        assert_eq!(schema["properties"]["labels"]["items"]["enum"][1], "tech");
        assert_eq!(schema["properties"]["labels"]["maxItems"], 1);
    }

    #[test]
    fn answers_are_held_to_the_offered_labels() {
        let expect = Expect::Labels {
            labels: vec!["Billing".into(), "Tech".into()],
            multi: false,
        };
        assert_eq!(
            output(
                &expect,
                &reply("```json\n{\"labels\": [\" billing\"]}\n```")
            )
            .unwrap(),
            Output::Classification(Classification {
                labels: vec!["Billing".into()]
            })
        );
        for bad in [
            "{\"labels\": [\"sales\"]}",
            "billing",
            "{\"labels\": []}",
            "{\"labels\": [\"Billing\", \"Tech\"]}",
        ] {
            assert!(
                matches!(output(&expect, &reply(bad)), Err(TaskError::BadAnswer(_))),
                "{bad}"
            );
        }
        let multi = Expect::Labels {
            labels: vec!["a".into(), "b".into()],
            multi: true,
        };
        assert_eq!(
            output(&multi, &reply("{\"labels\": [\"a\", \"b\", \"a\"]}")).unwrap(),
            Output::Classification(Classification {
                labels: vec!["a".into(), "b".into()]
            })
        );
    }

    #[test]
    fn summarize_bounds_the_length() {
        let task = Task::Summarize(SummarizeTask {
            input: Input::Text {
                text: "long".into(),
            },
            max_words: Some(50),
            params: GenerationParams::default(),
        });
        let prepared = prepare(&task, Some("long"), "m").unwrap();
        assert_eq!(prepared.request.max_tokens, Some(116));
        assert!(
            prepared
                .request
                .system
                .unwrap()
                .contains("at most 50 words")
        );
        assert!(matches!(
            prepare(&task, None, "m"),
            Err(TaskError::Invalid(_))
        ));
    }
}
