//! What the targets share: a scratch directory per process, and for the
//! ingest targets an input file ingested the way `kiln ingest` does it,
//! into a fresh scratch store, checked against what a reference reader
//! (plain code over the `csv` and `arrow` crates, in each target) makes of
//! the same bytes.
//!
//! The checks: an ingest that fails leaves the store without a bar; one
//! that succeeds stores, per symbol, exactly the reference's rows in time
//! order with repeats of a row once (and never a time twice with different
//! values). Where the reference cannot decode a row (a timestamp format or
//! a column type it does not know), only the first check applies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType};
use arrow_array::{Array, Float64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, TimeUnit};
use kiln::market::{IngestOptions, TsUnit, ingest_files, untrusted};
use kiln::store::{Bar, BarStore, BarsRead, Durability, Store, StoreConfig};

/// The canonical columns of an input file, as `kiln ingest` names them.
pub const COLUMNS: [&str; 8] = [
    "symbol", "ts", "open", "high", "low", "close", "volume", "vwap",
];

/// Each canonical column's index in `header` (names compared trimmed and
/// case-insensitively); `None` when a required column is missing or a
/// name repeats.
pub fn columns(header: &[String]) -> Option<[Option<usize>; 8]> {
    let mut found = [None; 8];
    for (i, name) in header.iter().enumerate() {
        if let Some(c) = COLUMNS
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name.trim()))
        {
            if found[c].is_some() {
                return None;
            }
            found[c] = Some(i);
        }
    }
    found[..7].iter().all(Option::is_some).then_some(found)
}

/// Epoch nanoseconds of a `YYYY-MM-DD` date (midnight UTC), counted day by
/// day from 1970; `None` for any other text.
pub fn date_ns(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = &text[r];
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = |y: i64, m: i64| match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&m) || d < 1 || d > month_days(y, m) {
        return None;
    }
    let mut days = 0i64;
    for year in y.min(1970)..y.max(1970) {
        let n = if leap(year) { 366 } else { 365 };
        days += if y >= 1970 { n } else { -n };
    }
    for month in 1..m {
        days += month_days(y, month);
    }
    days += d - 1;
    days.checked_mul(86_400_000_000_000)
}

/// A scratch directory of this process (on tmpfs when there is one).
pub fn scratch(target: &str) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("kiln-fuzz-{target}-{}", std::process::id()))
}

/// This process's scratch store: kept while ingests fail (a failed ingest
/// leaves it without a bar, which is checked), opened afresh after one
/// that succeeds.
static STORE: Mutex<Option<Store>> = Mutex::new(None);

/// libFuzzer's panic hook aborts the process; a panic that kiln turns into
/// an error (a third-party reader's, see `kiln::market::untrusted`) passes
/// it by, as it passes kiln's own hook.
fn pass_caught_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !untrusted::decoding() {
                hook(info);
            }
        }));
    });
}

/// Ingests `bytes` as a file named `input.<extension>` into a store without
/// bars, with integer timestamps declared nanoseconds, and checks the
/// outcome against `reference` (`None`: the reference could not read every
/// row), run here.
pub fn check_ingest(
    bytes: &[u8],
    extension: &str,
    reference: impl FnOnce() -> Option<Vec<(String, Bar)>>,
) {
    pass_caught_panics();
    let dir = scratch("ingest");
    let mut kept = STORE.lock().unwrap_or_else(|e| e.into_inner());
    let store = kept.get_or_insert_with(|| {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let config = StoreConfig {
            durability: Durability::Relaxed,
            cache_bytes_max: 16 << 20,
            ..StoreConfig::default()
        };
        Store::open(dir.join("store"), config).expect("open a scratch store")
    });
    let input = dir.join(format!("input.{extension}"));
    std::fs::write(&input, bytes).expect("write the input");
    let opts = IngestOptions {
        ts_unit: Some(TsUnit::Ns),
        ..IngestOptions::default()
    };
    let outcome = ingest_files(&*store, &[input], &opts, &mut |_| {});
    let stored = store.bar_symbols().expect("symbols");
    let Ok(summary) = outcome else {
        assert!(
            stored.is_empty(),
            "a failed ingest left bars of {} symbols",
            stored.len()
        );
        return;
    };
    // Read only now: the reference's readers allocate what a malformed
    // file declares (kiln checks first), and panic where kiln's do (kiln
    // catches that).
    if let Some(rows) = untrusted::decode(reference).ok().flatten() {
        assert_eq!(summary.rows as usize, rows.len(), "rows reported");
        let expected = expected(rows);
        let names: Vec<&str> = stored.iter().map(|(s, _)| s.as_str()).collect();
        let want: Vec<&str> = expected.keys().map(String::as_str).collect();
        assert_eq!(names, want, "symbols stored");
        for (symbol, _) in &stored {
            let bars = store.bars(symbol, ..).expect("read").expect("bars");
            let want = &expected[symbol.as_str()];
            assert_eq!(bars.ts().len(), want.len(), "bars of {symbol}");
            for (i, w) in want.iter().enumerate() {
                let got = bars.bar(i);
                assert!(
                    got.same_as(w),
                    "{symbol} bar {i}: stored {got:?}, the file says {w:?}"
                );
            }
        }
    }
    *kept = None;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The reference's rows per symbol in time order, a repeated row once.
/// An accepted ingest never holds one time twice with different values.
fn expected(rows: Vec<(String, Bar)>) -> BTreeMap<String, Vec<Bar>> {
    let mut by_symbol: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
    for (symbol, bar) in rows {
        by_symbol.entry(symbol).or_default().push(bar);
    }
    for bars in by_symbol.values_mut() {
        bars.sort_by_key(|b| b.ts);
        bars.dedup_by(|b, a| {
            if a.ts != b.ts {
                return false;
            }
            assert!(a.same_as(b), "accepted: {a:?} and {b:?} share a time");
            true
        });
    }
    by_symbol
}

/// The rows of Arrow record batches as the reference reads them: `symbol`
/// as UTF-8, `ts` as nanosecond timestamps or 64-bit integers (declared
/// nanoseconds), prices and volume as 64-bit floats (`vwap` may be absent
/// or null); `None` for any other type, a null elsewhere, or a batch that
/// fails to decode.
pub fn arrow_rows(
    batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
) -> Option<Vec<(String, Bar)>> {
    let mut rows = Vec::new();
    for batch in batches {
        let batch = batch.ok()?;
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let cols = columns(&names)?;
        let column = |c: usize| cols[c].map(|i| batch.column(i));
        let symbols = column(0)?.as_string_opt::<i32>()?;
        let ts = column(1)?;
        let ts: &[i64] = match ts.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                ts.as_primitive_opt::<TimestampNanosecondType>()?.values()
            }
            DataType::Int64 => ts.as_primitive_opt::<Int64Type>()?.values(),
            _ => return None,
        };
        let ts_nulls = column(1)?.null_count();
        let floats = |c: usize| -> Option<&Float64Array> { column(c)?.as_primitive_opt() };
        let [open, high, low, close, volume] = [2, 3, 4, 5, 6].map(floats);
        let (open, high, low, close, volume) = (open?, high?, low?, close?, volume?);
        let vwap = match column(7) {
            None => None,
            Some(_) => Some(floats(7)?),
        };
        if symbols.null_count() + ts_nulls > 0
            || [open, high, low, close, volume]
                .iter()
                .any(|a| a.null_count() > 0)
        {
            return None;
        }
        for (i, &ts) in ts.iter().enumerate().take(batch.num_rows()) {
            let bar = Bar {
                ts,
                open: open.value(i),
                high: high.value(i),
                low: low.value(i),
                close: close.value(i),
                volume: volume.value(i),
                vwap: vwap
                    .filter(|v| v.is_valid(i))
                    .map_or(f64::NAN, |v| v.value(i)),
            };
            rows.push((symbols.value(i).to_owned(), bar));
        }
    }
    Some(rows)
}
