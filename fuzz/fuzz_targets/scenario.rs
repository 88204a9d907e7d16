//! Any bytes, read as a scenario definition: `Scenario::parse` answers with a scenario or
//! its problems, and never panics, aborts or hangs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_domain::scenario::{BuiltinCatalog, Scenario};

fuzz_target!(|data: &[u8]| {
    if let Ok(definition) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = Scenario::parse(&definition, &BuiltinCatalog);
    }
});
