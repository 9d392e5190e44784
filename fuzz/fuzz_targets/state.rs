//! Saved kernel state. The first byte picks a plan and a mode: bytes after
//! the plan's state header (its magic, version and fingerprint, so the
//! fuzzer works on the body) decode to an error or to a state that encodes
//! to exactly those bytes and advances over a bar without panicking; or
//! (high bit set) the rest are bars, and the state they leave decodes back
//! to itself.
#![no_main]

use kiln::features::Bars;
use kiln::features::plan::Plan;
use libfuzzer_sys::fuzz_target;

/// Bytes of the header: magic (4), version (2), fingerprint (8).
const HEADER_BYTES: usize = 14;

fn plans() -> Vec<Plan> {
    [
        &["sma(3)"][..],
        &["macd(12,26,9)", "bbands(20,2)", "rsi(14)"],
        &kiln::features::STANDARD_SET,
    ]
    .iter()
    .map(|specs| Plan::parse(specs).expect("a plan"))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let plans = plans();
    let plan = &plans[usize::from(which & 0x7f) % plans.len()];
    let one = [100.0];
    let bar = Bars {
        open: &one,
        high: &one,
        low: &one,
        close: &one,
        volume: &one,
    };
    if which & 0x80 != 0 {
        let close: Vec<f64> = body
            .chunks_exact(8)
            .take(1024)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let mut state = plan.new_state();
        let mut frame = plan.new_frame();
        if plan
            .advance(&mut state, Bars::close_only(&close), &mut frame)
            .is_err()
        {
            return;
        }
        let bytes = plan.encode_state(&state);
        let back = plan.decode_state(&bytes).expect("an encoded state decodes");
        assert_eq!(plan.encode_state(&back), bytes, "re-encoded differently");
        return;
    }
    let mut bytes = plan.encode_state(&plan.new_state());
    bytes.truncate(HEADER_BYTES);
    bytes.extend_from_slice(body);
    let Ok(mut state) = plan.decode_state(&bytes) else {
        return;
    };
    assert_eq!(plan.encode_state(&state), bytes, "re-encoded differently");
    let mut frame = plan.new_frame();
    let _ = plan.advance(&mut state, bar, &mut frame);
});
