//! Timestamps: ISO-8601 dates and datetimes, and integer epochs in a declared
//! or detected unit, all to Unix epoch nanoseconds (UTC); and back to ISO-8601
//! for export.

/// The unit of integer timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsUnit {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TsUnit {
    /// Every unit.
    pub const ALL: [TsUnit; 4] = [TsUnit::S, TsUnit::Ms, TsUnit::Us, TsUnit::Ns];

    fn nanos(self) -> i64 {
        match self {
            TsUnit::S => 1_000_000_000,
            TsUnit::Ms => 1_000_000,
            TsUnit::Us => 1_000,
            TsUnit::Ns => 1,
        }
    }

    /// The unit an epoch of this magnitude is taken to be in: below 10^11
    /// seconds (until the year 5138), then milliseconds, microseconds and
    /// nanoseconds by powers of 1000. Milliseconds before March 1973 would be
    /// read as seconds, so such data needs an explicit unit.
    pub fn detect(value: i64) -> TsUnit {
        match value.unsigned_abs() {
            0..100_000_000_000 => TsUnit::S,
            100_000_000_000..100_000_000_000_000 => TsUnit::Ms,
            100_000_000_000_000..100_000_000_000_000_000 => TsUnit::Us,
            _ => TsUnit::Ns,
        }
    }

    /// Its name as the `--ts-unit` option spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TsUnit::S => "s",
            TsUnit::Ms => "ms",
            TsUnit::Us => "us",
            TsUnit::Ns => "ns",
        }
    }
}

/// How integer timestamps of one file are read: declared, or fixed by the
/// first value and then required of every other.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpochReader {
    declared: Option<TsUnit>,
    detected: Option<TsUnit>,
}

impl EpochReader {
    pub(crate) fn new(declared: Option<TsUnit>) -> Self {
        EpochReader {
            declared,
            detected: None,
        }
    }

    /// `value` in `unit_nanos`-long units to epoch nanoseconds.
    pub(crate) fn scaled(value: i64, unit_nanos: i64) -> Result<i64, String> {
        value
            .checked_mul(unit_nanos)
            .ok_or_else(|| format!("{value} is out of range (years 1677 to 2262)"))
    }

    /// An integer epoch to nanoseconds.
    pub(crate) fn read(&mut self, value: i64) -> Result<i64, String> {
        let unit = match self.declared {
            Some(u) => u,
            None => {
                if looks_like_compact_date(value) {
                    return Err(format!(
                        "{value} looks like a YYYYMMDD date, not an epoch; write dates as \
                         YYYY-MM-DD, or declare the epoch unit with --ts-unit"
                    ));
                }
                let here = TsUnit::detect(value);
                let unit = *self.detected.get_or_insert(here);
                if here != unit {
                    return Err(format!(
                        "{value} looks like epoch {} but earlier rows were epoch {}; \
                         declare the unit with --ts-unit",
                        here.as_str(),
                        unit.as_str()
                    ));
                }
                unit
            }
        };
        Self::scaled(value, unit.nanos())
    }
}

/// Whether an integer reads as a calendar date YYYYMMDD of 1900–2100.
fn looks_like_compact_date(v: i64) -> bool {
    let (y, m, d) = (v / 10_000, v / 100 % 100, v % 100);
    (1900..=2100).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads `n` ASCII digits at `*i`.
fn digits(b: &[u8], i: &mut usize, n: usize) -> Option<i64> {
    let s = b.get(*i..*i + n)?;
    let mut v = 0i64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    *i += n;
    Some(v)
}

/// Parses `YYYY-MM-DD`, or `YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]]` with an
/// optional `Z` or `±HH:MM` / `±HHMM` offset (none means UTC), to epoch ns.
pub fn parse_iso(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{s:?} is not a timestamp (want YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS[.f][Z|±HH:MM], or an integer epoch)"
        )
    };
    let b = s.trim().as_bytes();
    let mut i = 0;
    let y = digits(b, &mut i, 4).ok_or_else(bad)?;
    let sep =
        |b: &[u8], i: &mut usize, c: u8| -> Option<()> { (b.get(*i) == Some(&c)).then(|| *i += 1) };
    sep(b, &mut i, b'-').ok_or_else(bad)?;
    let m = digits(b, &mut i, 2).ok_or_else(bad)?;
    sep(b, &mut i, b'-').ok_or_else(bad)?;
    let d = digits(b, &mut i, 2).ok_or_else(bad)?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(format!("{s:?} is not a calendar date"));
    }
    let (mut secs, mut nanos) = (0i64, 0i64);
    if i < b.len() {
        if !matches!(b[i], b'T' | b't' | b' ') {
            return Err(bad());
        }
        i += 1;
        let hh = digits(b, &mut i, 2).ok_or_else(bad)?;
        sep(b, &mut i, b':').ok_or_else(bad)?;
        let mm = digits(b, &mut i, 2).ok_or_else(bad)?;
        let mut ss = 0;
        if sep(b, &mut i, b':').is_some() {
            ss = digits(b, &mut i, 2).ok_or_else(bad)?;
            if sep(b, &mut i, b'.').is_some() {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    if i - start < 9 {
                        nanos = nanos * 10 + i64::from(b[i] - b'0');
                    }
                    i += 1;
                }
                let n = i - start;
                if n == 0 {
                    return Err(bad());
                }
                for _ in n..9 {
                    nanos *= 10;
                }
            }
        }
        if hh > 23 || mm > 59 || ss > 59 {
            return Err(format!(
                "{s:?} has no such time of day (leap seconds are not supported)"
            ));
        }
        secs = hh * 3600 + mm * 60 + ss;
        match b.get(i) {
            None => {}
            Some(b'Z' | b'z') if i + 1 == b.len() => i += 1,
            Some(&c @ (b'+' | b'-')) => {
                i += 1;
                let oh = digits(b, &mut i, 2).ok_or_else(bad)?;
                let _ = sep(b, &mut i, b':');
                let om = digits(b, &mut i, 2).ok_or_else(bad)?;
                if oh > 23 || om > 59 {
                    return Err(format!("{s:?} has no such UTC offset"));
                }
                let offset = oh * 3600 + om * 60;
                secs -= if c == b'+' { offset } else { -offset };
            }
            Some(_) => return Err(bad()),
        }
        if i != b.len() {
            return Err(bad());
        }
    }
    let total = (days_from_civil(y, m, d) * 86_400 + secs)
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos));
    total.ok_or_else(|| format!("{s:?} is out of range (years 1677 to 2262)"))
}

/// Epoch ns as ISO-8601 UTC: `2015-01-02T00:00:00Z`, with the fraction of a
/// second only when there is one.
pub fn format_iso(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        let f = format!("{frac:09}");
        format!(
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{}Z",
            f.trim_end_matches('0')
        )
    }
}

/// Days since the epoch of an ISO date, for the synthetic calendar.
pub(crate) fn date_ns(y: i64, m: i64, d: i64) -> i64 {
    days_from_civil(y, m, d) * 86_400 * 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_datetimes_match_hand_computed_epochs() {
        // 2015-01-02 is 16437 days after 1970-01-01 (16437 * 86400 = 1420156800).
        assert_eq!(parse_iso("2015-01-02"), Ok(1_420_156_800 * 1_000_000_000));
        assert_eq!(parse_iso("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_iso("1969-12-31T23:59:59Z"), Ok(-1_000_000_000));
        assert_eq!(
            parse_iso("2000-02-29 12:30"),
            Ok((951_782_400 + 45_000) * 1_000_000_000)
        );
        assert_eq!(parse_iso("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_iso("1970-01-01T00:00:00.5Z"), Ok(500_000_000));
        assert_eq!(parse_iso("1970-01-01T00:00:00.000000001"), Ok(1));
    }

    #[test]
    fn bad_text_is_an_error_with_the_value() {
        for s in [
            "2015-13-01",
            "2015-02-30",
            "2015/01/02",
            "20150102",
            "2015-01-02T25:00",
            "2015-01-02T23:59:60Z",
            "2015-01-02T10:00+24:00",
            "2015-01-02T10:00+01:60",
            "x",
            "2015-01-02Tx",
            "2015-01-02T10:00Zjunk",
        ] {
            let e = parse_iso(s).expect_err(s);
            assert!(e.contains(s), "{e}");
        }
        assert!(parse_iso("2300-01-01").is_err(), "past the ns range");
    }

    #[test]
    fn format_round_trips() {
        for ns in [0, 1, -1, 1_420_156_800_000_000_000, 951_827_400_123_000_000] {
            assert_eq!(parse_iso(&format_iso(ns)), Ok(ns), "{}", format_iso(ns));
        }
        assert_eq!(
            format_iso(1_420_156_800_000_000_000),
            "2015-01-02T00:00:00Z"
        );
    }

    #[test]
    fn epoch_units_are_detected_and_then_held() {
        let mut r = EpochReader::new(None);
        assert_eq!(r.read(1_420_156_800), Ok(1_420_156_800_000_000_000));
        assert!(r.read(1_420_156_800_000).is_err(), "ms after s");
        let mut r = EpochReader::new(None);
        assert_eq!(r.read(1_420_156_800_000), Ok(1_420_156_800_000_000_000));
        let mut r = EpochReader::new(Some(TsUnit::Ns));
        assert_eq!(r.read(5), Ok(5));
        assert!(
            EpochReader::new(Some(TsUnit::S))
                .read(i64::MAX / 10)
                .is_err()
        );
        let e = EpochReader::new(None)
            .read(20_150_102)
            .expect_err("a compact date");
        assert!(e.contains("YYYYMMDD"), "{e}");
        assert_eq!(
            EpochReader::new(Some(TsUnit::S)).read(20_150_102),
            Ok(20_150_102_000_000_000)
        );
    }
}
