//! Fuzzes the workflow file parser and validator: any text must give a workflow or diagnostics, never a panic or a hang.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use corral_workflow::{source, validate::validate};
use corral_runtime::{Runtime, RuntimeConfig};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let config = RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        };
        Runtime::new(config).expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Components are looked up in a directory that does not exist: the
    // validator still checks every step, param and condition.
    let Ok(src) = source::parse(Path::new("/nonexistent/fuzz.yaml"), text) else {
        return;
    };
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("an executor");
    if let Err(diags) = executor.block_on(validate(&src, runtime())) {
        assert!(!diags.is_empty(), "a refusal names at least one problem");
    }
});
