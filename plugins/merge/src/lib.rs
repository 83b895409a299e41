//! Agent: the reduce of a map-reduce; joins one text field of many results, dropping repeated sentences.

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Default)]
pub struct Merge;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Results to merge: objects (the `field` is read) or strings. Nulls,
    /// such as the outputs of skipped branches, are ignored.
    pub items: Vec<Value>,
    /// The field of each object item to read.
    #[serde(default = "default_field")]
    pub field: String,
}

fn default_field() -> String {
    "summary".into()
}

#[derive(Serialize, JsonSchema)]
pub struct Output {
    /// The merged text.
    pub text: String,
    /// Items that contributed.
    pub count: usize,
    /// Sentences dropped as repeats.
    pub duplicates: usize,
}

impl Agent for Merge {
    type Input = Input;
    type Output = Output;

    fn run(&self, _ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let mut seen = std::collections::HashSet::new();
        let (mut kept, mut count, mut duplicates) = (Vec::new(), 0, 0);
        for item in &input.items {
            let text = match item {
                Value::String(s) => s.as_str(),
                Value::Object(o) => match o.get(&input.field) {
                    Some(Value::String(s)) => s.as_str(),
                    _ => {
                        return Err(AgentError::permanent(format!(
                            "an item has no text field `{}`",
                            input.field
                        )));
                    }
                },
                Value::Null => continue,
                _ => return Err(AgentError::permanent("items must be objects or strings")),
            };
            count += 1;
            for s in textkit::sentences(text) {
                if seen.insert(s.to_lowercase()) {
                    kept.push(s);
                } else {
                    duplicates += 1;
                }
            }
        }
        if count == 0 {
            return Err(AgentError::degradable(
                "nothing to merge: every item was empty",
            ));
        }
        Ok(Output {
            text: kept.join(" "),
            count,
            duplicates,
        })
    }
}

corral_sdk::export_agent!(Merge);
