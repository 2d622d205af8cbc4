#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cxr_fuzz_targets::backup_manifest(data));
