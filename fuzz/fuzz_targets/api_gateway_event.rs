#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cxr_fuzz_targets::api_gateway_event(data));
