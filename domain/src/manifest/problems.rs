//! Problems in a manifest, each at a JSON path like `actions[2].request.method`, and the
//! problems a JSON Schema's errors stand for, at the same kind of path.

use std::fmt;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{PatternOptions, ValidationError, ValidationOptions};
use serde::Serialize;
use serde_json::Value;

/// One problem in a manifest, at a JSON path like `actions[2].request.method`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestProblem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid connector manifest: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidManifest(pub Vec<ManifestProblem>);

/// Longest message of one schema problem: a type error quotes the offending value, which
/// may be a whole document.
const MAX_MESSAGE_CHARS: usize = 300;

/// How every schema in a manifest is compiled: never fetching a remote reference (a
/// registered manifest must not make the gateway or scheduler call out), and with the
/// linear-time regex engine, because the schemas are written by users.
pub(super) fn schema_options() -> ValidationOptions<'static> {
    jsonschema::options()
        .offline()
        .with_pattern_options(PatternOptions::regex())
}

/// The problems one schema error stands for, at paths under `prefix`, which names `root`.
/// A missing or unknown property is reported at the property's own path.
pub(super) fn schema_problems(
    prefix: &str,
    root: &Value,
    error: &ValidationError<'_>,
) -> Vec<ManifestProblem> {
    let path = json_path(prefix, root, error.instance_path().as_str());
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let mut path = path;
            match property.as_str() {
                Some(name) => push_key(&mut path, name),
                None => push_key(&mut path, &property.to_string()),
            }
            vec![ManifestProblem {
                path,
                message: format!("{property} is a required property"),
            }]
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                let mut path = path.clone();
                push_key(&mut path, name);
                ManifestProblem {
                    path,
                    message: "unknown field (check its spelling or remove it)".to_owned(),
                }
            })
            .collect(),
        // The library shortens long lists of options; a manifest author needs them all.
        ValidationErrorKind::Enum { options } => vec![ManifestProblem {
            path,
            message: truncate(format!(
                "{} is not one of {}",
                error.instance(),
                one_of(options.as_array().map_or(&[][..], Vec::as_slice))
            )),
        }],
        _ => vec![ManifestProblem {
            path,
            message: truncate(error.to_string()),
        }],
    }
}

/// Turns a JSON pointer into `root` into a path like `actions[2].request.method`: indexes
/// of arrays in brackets, object keys after dots (quoted in brackets when they are not
/// plain names). `root` tells an array index from an object key that looks like a number.
pub(super) fn json_path(prefix: &str, root: &Value, pointer: &str) -> String {
    let mut path = prefix.to_owned();
    let mut node = Some(root);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match (node, segment.parse::<usize>()) {
            (Some(Value::Array(items)), Ok(index)) => {
                path.push_str(&format!("[{index}]"));
                node = items.get(index);
            }
            _ => {
                push_key(&mut path, &segment);
                node = node.and_then(|n| n.get(segment.as_str()));
            }
        }
    }
    path
}

fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&quoted(key));
        path.push(']');
    }
}

/// `"a", "b" or "c"`.
fn one_of(options: &[Value]) -> String {
    let mut text = String::new();
    for (index, option) in options.iter().enumerate() {
        if index > 0 {
            text.push_str(if index + 1 == options.len() {
                " or "
            } else {
                ", "
            });
        }
        text.push_str(&option.to_string());
    }
    text
}

pub(super) fn join(path: &str, key: &str) -> String {
    let mut path = path.to_owned();
    push_key(&mut path, key);
    path
}

/// A string as JSON writes it, so messages show exactly what the manifest holds.
pub(super) fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

pub(super) fn truncate(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    message
}
