//! The shape a workflow file must have before the YAML parsers see it: bounded nesting, one document, no anchors, aliases or tags, checked in one linear pass.
//!
//! The full YAML parsers (libyaml under serde_yaml_ng, yaml-rust2 under
//! marked-yaml) take time quadratic in the nesting depth, and an alias can
//! expand a small file into a huge value. This pass pulls yaml-rust2's
//! events one at a time and stops at the first one out of shape, so it
//! never looks deeper than the limit: its cost is linear in the file size.

use yaml_rust2::parser::{Event, Parser};

/// Why a file's shape is refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based line.
    pub line: usize,
    pub message: String,
}

/// Checks that `text` nests at most `max_depth` mappings and sequences
/// deep, holds one document, and uses no anchors, aliases or tags.
pub fn check(text: &str, max_depth: usize) -> Result<(), Refusal> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    let mut documents = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| Refusal {
            line: e.marker().line(),
            // yaml-rust2 stops at 255 open flow brackets, before any event
            // past the limit reaches this loop.
            message: if e.info() == "recursion limit exceeded" {
                too_deep(max_depth)
            } else {
                format!("not valid YAML: {}", e.info())
            },
        })?;
        let refuse = |message: String| {
            Err(Refusal {
                line: mark.line(),
                message,
            })
        };
        let (anchor, tagged) = match &event {
            Event::StreamEnd => return Ok(()),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return refuse(
                        "a second YAML document starts here; a workflow file holds exactly one"
                            .into(),
                    );
                }
                continue;
            }
            Event::Alias(_) => {
                return refuse(
                    "aliases (`*name`) are not supported in workflow files; write the value out"
                        .into(),
                );
            }
            Event::MappingStart(anchor, tag) | Event::SequenceStart(anchor, tag) => {
                depth += 1;
                if depth > max_depth {
                    return refuse(too_deep(max_depth));
                }
                (*anchor, tag.is_some())
            }
            Event::Scalar(_, _, anchor, tag) => (*anchor, tag.is_some()),
            Event::MappingEnd | Event::SequenceEnd => {
                depth = depth.saturating_sub(1);
                continue;
            }
            _ => continue,
        };
        if anchor != 0 {
            return refuse(
                "anchors (`&name`) are not supported in workflow files; write the value out".into(),
            );
        }
        if tagged {
            return refuse(
                "tags (`!name`) are not supported in workflow files; quote a string instead".into(),
            );
        }
    }
}

fn too_deep(max_depth: usize) -> String {
    format!("the file nests more than {max_depth} mappings and lists deep; flatten it")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Refusal {
        refused_at(text, 64)
    }

    fn refused_at(text: &str, max: usize) -> Refusal {
        check(text, max).expect_err(text)
    }

    #[test]
    fn ordinary_files_pass() {
        let text = "version: 1\nname: t\nsteps:\n  - id: a\n    input: { x: [1, {y: [2]}] }\n";
        // The root, `steps`, the step, `input`, `x`, `{y: ..}` and `[2]`.
        assert_eq!(check(text, 64), Ok(()));
        assert_eq!(check(text, 7), Ok(()));
        assert_eq!(refused_at(text, 6).line, 5);
        assert_eq!(check("{\"a\": [1, 2]}", 64), Ok(()));
        assert_eq!(check("", 64), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_at_the_level_that_breaks_the_limit() {
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            let text = format!(
                "version: 1\nx: {}1{}\n",
                open.repeat(100_000),
                close.repeat(100_000)
            );
            let r = refused(&text);
            assert_eq!(r.line, 2, "{r:?}");
            assert!(r.message.contains("more than 64"), "{r:?}");
        }
        // Block sequences nest two bytes a level; block mappings by indentation.
        let text = format!("x:\n{}1\n", "- ".repeat(100_000));
        assert!(refused(&text).message.contains("more than 64"));
        let text: String = (0..1_000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        assert_eq!(refused(&text).line, 65);
    }

    #[test]
    fn anchors_aliases_tags_and_documents_get_their_line() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n";
        let r = refused(bomb);
        assert_eq!(r.line, 1);
        assert!(r.message.contains("anchors"), "{r:?}");
        let r = refused("a: 1\nb: *a\n");
        assert_eq!(r.line, 2);
        let r = refused("a: 1\nb: !!str 5\n");
        assert_eq!((r.line, r.message.contains("tags")), (2, true), "{r:?}");
        let r = refused("version: 1\nname: a\n---\nversion: 1\n");
        assert_eq!(r.line, 3, "{r:?}");
        assert!(r.message.contains("second YAML document"));
        let r = refused("a: [1, 2\nb: 3\n");
        assert!(r.message.starts_with("not valid YAML"), "{r:?}");
    }
}
