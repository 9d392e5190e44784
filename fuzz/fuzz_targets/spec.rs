//! Feature specs and lists: the text before the first newline is parsed
//! as a list; an accepted list prints to text that parses back to the same
//! specs, and computes without panicking over bars made of the rest of the
//! input (any f64 bit patterns, NaN and infinities included).
#![no_main]

use kiln::features::Bars;
use kiln::features::plan::Plan;
use kiln::features::spec::parse_list;
use libfuzzer_sys::fuzz_target;

/// Most bars computed per input (the kernels are linear in them).
const BARS_MAX: usize = 512;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let Ok(specs) = parse_list(text) else {
        return;
    };
    let printed = specs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let again = parse_list(&printed).expect("a printed list parses");
    assert_eq!(again, specs, "{text:?} printed as {printed:?}");

    let rest = data.get(split + 1..).unwrap_or(&[]);
    let values: Vec<f64> = rest
        .chunks_exact(8)
        .take(BARS_MAX * 5)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let n = values.len() / 5;
    let col = |i: usize| &values[i * n..(i + 1) * n];
    let bars = Bars {
        open: col(0),
        high: col(1),
        low: col(2),
        close: col(3),
        volume: col(4),
    };
    let plan = Plan::new(&specs);
    let mut frame = plan.new_frame();
    // An error is an answer; only a panic is a finding.
    let _ = plan.compute(bars, &mut frame);
});
