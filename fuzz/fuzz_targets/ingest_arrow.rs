//! Arrow IPC input, the file format (bytes starting `ARROW1`, named
//! `.arrow`) or else the stream format (`.arrows`), ingested into a fresh
//! store; accepted bars equal what the `arrow-ipc` readers used directly
//! make of the bytes (see `kiln_fuzz`).
#![no_main]

use std::io::Cursor;

use arrow_ipc::reader::{FileReader, StreamReader};
use kiln_fuzz::{arrow_rows, check_ingest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"ARROW1") {
        check_ingest(data, "arrow", || {
            arrow_rows(FileReader::try_new(Cursor::new(data), None).ok()?)
        });
    } else {
        check_ingest(data, "arrows", || {
            arrow_rows(StreamReader::try_new(Cursor::new(data), None).ok()?)
        });
    }
});
