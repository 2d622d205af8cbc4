#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cxr_fuzz_targets::s3_event(data));
