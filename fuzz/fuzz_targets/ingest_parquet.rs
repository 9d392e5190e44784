//! Parquet input, ingested into a fresh store; accepted bars equal what the
//! `parquet` crate's Arrow reader used directly makes of the bytes (see
//! `kiln_fuzz`).
#![no_main]

use kiln_fuzz::{arrow_rows, check_ingest};
use libfuzzer_sys::fuzz_target;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fuzz_target!(|data: &[u8]| {
    check_ingest(data, "parquet", || {
        let bytes = bytes::Bytes::copy_from_slice(data);
        arrow_rows(
            ParquetRecordBatchReaderBuilder::try_new(bytes)
                .ok()?
                .build()
                .ok()?,
        )
    });
});
