//! Entry points for `fuzz/` (feature `fuzzing`; never part of a release
//! build's API): every record kiln-store decodes from its index, and the
//! value log's recovery, on arbitrary bytes. Each panics only where the
//! store has a bug: a decoder that panics, or that accepts bytes it would
//! not write.

use std::path::Path;

use kiln_core::{BarColumns, DataVersion};
use rkyv::util::AlignedVec;

use crate::bars::{self, Chunk, VersionRecord, encode_chunk, extend_from};
use crate::frame::{ChunkValue, EMPTY_TAIL, FrameHead, LabelRef, decode_tail, encode_tail};
use crate::record::{
    Counters, IndexEntry, Meta, ResultValue, decode_event, decode_job, decode_job_input,
    decode_job_with_input, decode_series, decode_symbol_stats, encode_event, encode_input,
    encode_job, encode_job_input, encode_series, encode_symbol_stats,
};
use crate::view::ViewBytes;
use crate::vlog::{Vlog, VlogPosition};

/// The records [`record`] decodes, by kind.
pub const RECORD_KINDS: [&str; 17] = [
    "index entry",
    "result value",
    "queue counters",
    "queue meta",
    "symbol stats",
    "data version",
    "frame head",
    "tail slot",
    "frame chunk",
    "label",
    "synced position",
    "job",
    "event",
    "legacy series",
    "bar chunk",
    "job input",
    "bar tail slot",
];

fn location() -> String {
    "fuzz input".to_owned()
}

/// What decodes must encode back to exactly the bytes it came from.
fn exact(bytes: &[u8], encoded: kiln_core::Result<Vec<u8>>) {
    if let Ok(encoded) = encoded {
        assert_eq!(encoded, bytes, "decoded, then encoded to other bytes");
    }
}

/// Decodes `bytes` as record kind `kind` (an index into [`RECORD_KINDS`],
/// taken modulo its length). What decodes must encode back to the same
/// bytes; for the rkyv archives (job, event, legacy series, bar chunk),
/// whose padding a validating reader does not pin down, to bytes that
/// decode to the same value.
pub fn record(kind: u8, bytes: &[u8]) {
    let loc: &dyn Fn() -> String = &location;
    match usize::from(kind) % RECORD_KINDS.len() {
        0 => exact(
            bytes,
            IndexEntry::decode(bytes).map(|v| v.encode().to_vec()),
        ),
        1 => exact(bytes, ResultValue::decode(bytes).map(|v| v.encode())),
        2 => exact(bytes, Counters::decode(bytes).map(|v| v.encode().to_vec())),
        // Format 5's shorter meta encodes as this format's: the same bytes,
        // then the sequence number its aggregates cover.
        3 => exact(
            bytes,
            Meta::decode(bytes).map(|v| {
                let mut b = v.encode();
                b.truncate(bytes.len());
                b
            }),
        ),
        4 => exact(
            bytes,
            decode_symbol_stats(bytes).map(|v| encode_symbol_stats(&v).to_vec()),
        ),
        5 => exact(
            bytes,
            VersionRecord::decode(bytes, "fuzz input").map(|v| {
                // A 40-byte record (no tails) is the 56-byte one's prefix.
                let mut b = v.encode().to_vec();
                b.truncate(bytes.len());
                b
            }),
        ),
        6 => exact(bytes, FrameHead::decode(bytes, loc).map(|v| v.encode())),
        7 => exact(
            bytes,
            decode_tail(bytes, loc).map(|v| match v {
                None => EMPTY_TAIL.to_vec(),
                Some((row, chunk)) => encode_tail(row, &chunk),
            }),
        ),
        8 => exact(bytes, ChunkValue::decode(bytes, loc).map(|v| v.encode())),
        9 => exact(bytes, LabelRef::decode(bytes, loc).map(|v| v.encode())),
        10 => exact(
            bytes,
            VlogPosition::decode(bytes).map(|v| v.encode().to_vec()),
        ),
        // A record of format 5 or older holds its input: encoded, it goes
        // to a record and an input of its own.
        11 => {
            if let Ok(job) = decode_job(7, bytes) {
                let again = encode_job(&job.0, job.1).expect("a decoded job encodes");
                let input = encode_job_input(&job.0).expect("a decoded job's input encodes");
                let back = decode_job_with_input(7, &again, input.as_deref())
                    .expect("an encoded job decodes");
                assert_eq!(back, job, "a job changed through encode and decode");
            }
        }
        15 => {
            if let Ok((payload, symbols)) = decode_job_input(7, bytes) {
                let again = encode_input(7, &payload, &symbols).expect("a decoded input encodes");
                let back = decode_job_input(7, &again).expect("an encoded input decodes");
                assert_eq!(back, (payload, symbols), "an input changed");
            }
        }
        12 => {
            if let Ok(event) = decode_event(7, bytes) {
                let again = encode_event(&event).expect("a decoded event encodes");
                let back = decode_event(7, &again).expect("an encoded event decodes");
                assert_eq!(back, event, "an event changed through encode and decode");
            }
        }
        13 => {
            if let Ok(series) = decode_series(bytes, loc) {
                let again = encode_series(&series).expect("a decoded series encodes");
                let back = decode_series(&again, loc).expect("an encoded series decodes");
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    (back.bar_count, back.last_ts, back.data_hash, &back.state),
                    (
                        series.bar_count,
                        series.last_ts,
                        series.data_hash,
                        &series.state
                    )
                );
                assert_eq!(bits(&back.values), bits(&series.values));
            }
        }
        16 => {
            if let Ok(header) = bars::decode_tail(bytes, "fuzz input") {
                let (seq, first_ts, value) = (header.seq, header.first_ts, &bytes[header.len()..]);
                let again = match header.version {
                    // A tail of format 7 carries no version; this format
                    // writes every tail with one.
                    None => [&seq.to_be_bytes()[..], &first_ts.to_be_bytes(), value].concat(),
                    Some(v) => {
                        let version = DataVersion {
                            bars: v.bars,
                            first_ts: 0,
                            last_ts: v.last_ts,
                            hash: v.hash,
                        };
                        bars::encode_tail(seq, first_ts, &version, value)
                    }
                };
                assert_eq!(again, bytes, "decoded, then encoded to other bytes");
            }
        }
        _ => {
            let mut aligned = AlignedVec::<16>::new();
            aligned.extend_from_slice(bytes);
            if let Ok(chunk) = Chunk::new(ViewBytes::Copied(aligned), loc) {
                let mut cols = BarColumns::default();
                extend_from(&mut cols, &chunk);
                let again = encode_chunk(&cols).expect("decoded bars encode");
                let mut copy = AlignedVec::<16>::new();
                copy.extend_from_slice(&again);
                let back = Chunk::new(ViewBytes::Copied(copy), loc).expect("encoded bars decode");
                let mut back_cols = BarColumns::default();
                extend_from(&mut back_cols, &back);
                assert_eq!(back_cols.ts, cols.ts);
                let bits = |c: &BarColumns| {
                    [&c.open, &c.high, &c.low, &c.close, &c.volume, &c.vwap]
                        .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                };
                assert_eq!(bits(&back_cols), bits(&cols), "bars changed");
            }
        }
    }
}

/// Opens a value log in `dir` (emptied first) whose only segment holds
/// `segment` and whose index names the entries `index` holds (28 bytes
/// each, as the store keeps them): an error, or a log that reads every
/// indexed record it kept as a value, as missing, or as an error, and
/// takes a new record.
pub fn segment(dir: &Path, index: &[u8], segment: &[u8]) {
    let indexed: Vec<IndexEntry> = index
        .chunks_exact(IndexEntry::BYTES)
        .filter_map(|b| IndexEntry::decode(b).ok())
        .collect();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch directory");
    std::fs::write(dir.join("0000000001.seg"), segment).expect("write the segment");
    let Ok((mut vlog, _, lost)) = Vlog::open(dir, 1 << 20, &indexed, None) else {
        return;
    };
    let reader = vlog.reader();
    for (i, entry) in indexed.iter().enumerate() {
        if !lost.contains(&i) {
            let _ = reader.read(entry);
        }
    }
    if let Ok(entry) = vlog.append(b"a record after recovery", 1) {
        vlog.flush().expect("flush after an append");
        let read = reader.read(&entry).expect("read what was appended");
        assert_eq!(
            read.as_ref().map(|l| l.bytes()),
            Some(&b"a record after recovery"[..])
        );
    }
}
