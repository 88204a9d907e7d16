//! JSONPath selection over a response, bounded in how much one mapping may select.

use std::fmt;

use serde_json::Value;
use serde_json_path::JsonPath;

use crate::limits::{MAX_SELECTED_BYTES, MAX_SELECTED_NODES};

/// The value of a JSONPath in `response`: a singular path (`$.body.ts`) gives one value
/// or null, any other (`$.body.items[*].id`) the list of what it selects. Bounded like
/// one path of a mapping (see [`Selection`]).
pub fn select(path: &str, response: &Value) -> Result<Value, String> {
    Selection::default().select(path, response)
}

/// What the JSONPaths of one mapping may still select. A path like `$..*` selects every
/// node of a response, each with all that is under it: copying them would take the
/// response's size times its depth. So what a mapping's paths select is counted before
/// any of it is copied, and stops as soon as it passes [`MAX_SELECTED_NODES`] nodes or
/// [`MAX_SELECTED_BYTES`] bytes of JSON text in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    nodes_left: usize,
    bytes_left: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            nodes_left: MAX_SELECTED_NODES,
            bytes_left: MAX_SELECTED_BYTES,
        }
    }
}

impl Selection {
    /// [`select`], counted with what the mapping's other paths selected.
    pub fn select(&mut self, path: &str, response: &Value) -> Result<Value, String> {
        let parsed =
            JsonPath::parse(path).map_err(|e| format!("`{path}` is not a JSONPath: {e}"))?;
        let nodes = parsed.query(response);
        if is_singular(path) {
            let first = nodes.first();
            self.take(&path, first.as_slice())?;
            Ok(first.map_or(Value::Null, Value::clone))
        } else {
            let all = nodes.all();
            self.take(&path, &all)?;
            Ok(Value::Array(all.into_iter().cloned().collect()))
        }
    }

    /// The nodes `path` selects in `value`, once counted, none of them copied yet: for a
    /// mapping that copies them its own way (a node's `outputs`).
    pub fn nodes<'v>(
        &mut self,
        path: &JsonPath,
        value: &'v Value,
    ) -> Result<Vec<&'v Value>, String> {
        let all = path.query(value).all();
        self.take(path, &all)?;
        Ok(all)
    }

    /// Counts `nodes`, what `path` selected, against what is left.
    fn take(&mut self, path: &dyn fmt::Display, nodes: &[&Value]) -> Result<(), String> {
        let Some(nodes_left) = self.nodes_left.checked_sub(nodes.len()) else {
            let before = MAX_SELECTED_NODES - self.nodes_left;
            let others = match before {
                0 => String::new(),
                _ => format!(", {} with the mapping's other paths", before + nodes.len()),
            };
            return Err(format!(
                "`{path}` selects {} nodes{others}, over the limit of {MAX_SELECTED_NODES} for one mapping; select fewer (a `..` or `*` over a large response selects all of it)",
                nodes.len()
            ));
        };
        let before = MAX_SELECTED_BYTES - self.bytes_left;
        for node in nodes {
            let mut measure = JsonSize {
                bytes: 0,
                cap: self.bytes_left,
            };
            if serde_json::to_writer(&mut measure, node).is_err() {
                let others = match before {
                    0 => String::new(),
                    _ => format!(" with the {before} bytes of the mapping's other paths"),
                };
                return Err(format!(
                    "what `{path}` selects passes the limit of {MAX_SELECTED_BYTES} bytes of JSON for one mapping{others}; select less"
                ));
            }
            self.bytes_left -= measure.bytes;
        }
        self.nodes_left = nodes_left;
        Ok(())
    }
}

/// Counts the bytes of JSON text written to it, failing once they pass `cap`, so that a
/// node too large is not serialized to its end.
struct JsonSize {
    bytes: usize,
    cap: usize,
}

impl std::io::Write for JsonSize {
    fn write(&mut self, text: &[u8]) -> std::io::Result<usize> {
        self.bytes = self.bytes.saturating_add(text.len());
        if self.bytes > self.cap {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(text.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a JSONPath selects at most one node (RFC 9535 §2.3.5.1's singular query):
/// only names and indexes, no wildcard, slice, union, filter or descendant segment.
fn is_singular(path: &str) -> bool {
    let mut chars = path.chars().peekable();
    let mut previous = '\0';
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // Skip a quoted name, escapes included.
                while let Some(inner) = chars.next() {
                    if inner == '\\' {
                        chars.next();
                    } else if inner == c {
                        break;
                    }
                }
            }
            '*' | '?' | ':' | ',' => return false,
            '.' if previous == '.' => return false,
            _ => {}
        }
        previous = c;
    }
    true
}
