//! The manifests that ship with Weft, in `domain/connectors/`.

use std::sync::OnceLock;

use serde_json::Value;

use super::model::Manifest;
use super::validate::validate;

/// The manifests that ship with Weft, embedded at build time.
const BUILTIN_SOURCES: &[(&str, &str)] = &[
    ("slack", include_str!("../../connectors/slack.json")),
    ("github", include_str!("../../connectors/github.json")),
];

/// The built-in manifests, checked on first use: a broken one is a bug of this build.
pub fn builtins() -> &'static [Manifest] {
    static BUILTINS: OnceLock<Vec<Manifest>> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        BUILTIN_SOURCES
            .iter()
            .map(|(name, source)| {
                let value: Value = serde_json::from_str(source)
                    .unwrap_or_else(|e| panic!("built-in manifest {name} is not JSON: {e}"));
                validate(&value).unwrap_or_else(|e| panic!("built-in manifest {name}: {e}"))
            })
            .collect()
    })
}

/// The built-in manifest with this key.
pub fn builtin(key: &str) -> Option<&'static Manifest> {
    builtins().iter().find(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn builtins_load_and_are_found_by_key() {
        let builtins = builtins();
        assert!(!builtins.is_empty());
        for manifest in builtins {
            assert_eq!(builtin(&manifest.key), Some(manifest));
        }
        assert_eq!(builtin("nope"), None);
    }
}
