#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| layers_gateway::fuzzing::if_none_match(data));
