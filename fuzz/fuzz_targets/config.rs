//! Configuration TOML: any text is an error or a configuration, and an
//! accepted one renders to TOML that parses to a configuration rendering
//! the same way.
#![no_main]

use kiln::config::{parse, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse(text) else {
        return;
    };
    let rendered = render(&config);
    let again = parse(&rendered).expect("a rendered configuration parses");
    assert_eq!(render(&again), rendered, "{text:?}");
});
