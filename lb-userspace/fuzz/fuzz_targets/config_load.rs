//! Any text as configuration files (`herald validate`/`simulate -f`) and as a MetalLB ConfigMap
//! (`herald convert-configmap`): never panics; whatever loads also builds or yields errors.
#![no_main]

use herald::config::{self, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (loaded, _errors) = config::load::parse_all(text, "fuzz.yaml");
    let _ = config::build(&Snapshot::from_objects(loaded.objects));
    let _ = config::convert::convert_configmap_text(text, false);
    let _ = config::convert::convert_configmap_text(text, true);
});
