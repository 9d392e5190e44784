//! The store's records, as its index holds them: the first byte picks the
//! kind (`kiln_store::fuzzing::RECORD_KINDS`), the rest is the value. An
//! error, or a value that encodes back to the same bytes (the same value,
//! for rkyv archives).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, bytes)) = data.split_first() {
        kiln_store::fuzzing::record(kind, bytes);
    }
});
