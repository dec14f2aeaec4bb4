//! cargo-fuzz target for the config loader: `cargo +nightly fuzz run config_loader` (from
//! fuzz/). Any bytes, read as `provision validate` reads a config file (UTF-8, then parsed,
//! validated and planned), must give a config or a ConfigError: never a panic, a stack
//! overflow or unbounded memory (run with `-rss_limit_mb=512`). Seed it with
//! `fixtures/adversarial/`, `fixtures/configs/` and `fixtures/invalid/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provision_plan::{Document, PlanOptions, Roots};

fuzz_target!(|data: &[u8]| {
    if data.len() > provision_plan::document::MAX_CONFIG_BYTES {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = Document::parse("fuzz.yaml", text.to_owned()) else {
        return;
    };
    let Ok(valid) = provision_plan::validate(&doc) else {
        return;
    };
    let opts = PlanOptions {
        roots: Roots {
            cache: "/c".into(),
            runtime: "/r".into(),
            config_dir: "/e".into(),
        },
        pool: None,
    };
    if let Ok(plan) = provision_plan::plan(&valid, &opts) {
        let _ = provision_plan::render_text(&plan);
    }
});
