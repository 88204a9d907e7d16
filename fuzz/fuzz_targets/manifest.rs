//! Any bytes, read as a connector manifest: `manifest::validate` answers with a manifest
//! or its problems, and never panics, aborts or hangs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_domain::manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = manifest::validate(&source);
    }
});
