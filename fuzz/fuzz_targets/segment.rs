//! Value-log recovery from arbitrary segment bytes: the first byte gives a
//! count n (up to 7) of 28-byte index entries that follow, as the store's
//! index would name records; the rest is the segment file. Opening is an
//! error or a log that reads what it kept and takes a new record.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| kiln_fuzz::scratch("segment"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let index_bytes = (usize::from(n) % 8 * 28).min(rest.len());
    let (index, segment) = rest.split_at(index_bytes);
    kiln_store::fuzzing::segment(dir(), index, segment);
});
