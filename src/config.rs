//! The configuration: [`Config`] in three parts (the store's, the engine's,
//! the HTTP service's), and its file, TOML with every key optional (absent
//! keys keep their defaults), unknown keys refused.
//!
//! Each key is declared once, as a [`Key`] (all of them: [`keys`]): its
//! name in the file, the help line `kiln config` prints, where it lives in
//! [`Config`], and what values it takes. The engine's and the service's
//! keys are declared with their fields by `section!` (type, default, help,
//! check in one line); the store's live in `kiln-store` and `kiln-core`,
//! which own their defaults and check them when a store opens. [`render`] prints the effective
//! configuration as a documented file that [`parse`] reads back.

use std::path::{Path, PathBuf};

use kiln_store::{Durability, StoreConfig};

/// Everything configurable.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The embedded store: the job model's bounds, sled and the value log.
    pub store: StoreConfig,
    /// The engine: claims, batches, guards.
    pub engine: EngineConfig,
    /// The HTTP service (`kiln serve`).
    pub serve: ServeConfig,
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The text is not TOML.
    #[error("{0}")]
    Syntax(String),
    /// A key kiln does not know.
    #[error("line {line}: unknown key {key:?}{hint}")]
    UnknownKey {
        /// The key.
        key: String,
        /// Its line.
        line: usize,
        /// What it may have meant.
        hint: String,
    },
    /// A value that is not what the key takes.
    #[error("line {line}: {key} = {value}: {reason}")]
    Value {
        /// The key.
        key: &'static str,
        /// Its line (0 when the value did not come from a file).
        line: usize,
        /// The value, as written.
        value: String,
        /// What the key takes.
        reason: String,
    },
    /// A value that breaks a bound between keys.
    #[error("{0}")]
    Bounds(String),
    /// In `path`.
    #[error("{path}: {error}")]
    In {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        error: Box<ConfigError>,
    },
}

/// One key of the file.
pub struct Key {
    /// Its name in the file.
    pub name: &'static str,
    /// What it means, with its unit (printed above it by `kiln config`).
    pub help: &'static str,
    /// Sets it in a configuration from a file's value.
    read: fn(&mut Config, &toml::Value) -> Result<(), String>,
    /// Its value in a configuration, as TOML (`None`: unset).
    write: fn(&Config) -> Option<String>,
    /// Whether its value in a configuration is allowed.
    check: fn(&Config) -> Result<(), String>,
}

/// A value a key can take: how it reads from TOML and prints back.
trait Setting: Sized {
    fn read(v: &toml::Value) -> Result<Self, String>;
    fn write(&self) -> Option<String>;
}

/// A value as the file wrote it (for error messages).
fn literal(v: &toml::Value) -> String {
    match v {
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::String(s) => format!("{s:?}"),
        other => format!("(a {})", other.type_str()),
    }
}

fn integer(v: &toml::Value) -> Result<i64, String> {
    v.as_integer()
        .ok_or_else(|| format!("want a whole number, not {}", v.type_str()))
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            fn read(v: &toml::Value) -> Result<Self, String> {
                let n = integer(v)?;
                <$t>::try_from(n).map_err(|_| format!("want 0 to {}", <$t>::MAX))
            }
            fn write(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
unsigned!(u32, u64, usize);

impl Setting for f64 {
    fn read(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Float(f) => Ok(*f),
            toml::Value::Integer(n) => Ok(*n as f64),
            other => Err(format!("want a number, not {}", other.type_str())),
        }
    }
    fn write(&self) -> Option<String> {
        Some(format!("{self:?}"))
    }
}

impl Setting for bool {
    fn read(v: &toml::Value) -> Result<Self, String> {
        v.as_bool()
            .ok_or_else(|| format!("want true or false, not {}", v.type_str()))
    }
    fn write(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Setting for Option<u64> {
    fn read(v: &toml::Value) -> Result<Self, String> {
        u64::read(v).map(Some)
    }
    fn write(&self) -> Option<String> {
        self.map(|n| n.to_string())
    }
}

impl Setting for Durability {
    fn read(v: &toml::Value) -> Result<Self, String> {
        let s = v
            .as_str()
            .ok_or_else(|| format!("want \"sync\" or \"relaxed\", not {}", v.type_str()))?;
        s.parse()
            .map_err(|_| "want \"sync\" or \"relaxed\"".to_owned())
    }
    fn write(&self) -> Option<String> {
        Some(format!("{:?}", self.as_str()))
    }
}

/// Any value of the type.
fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

/// At least 1.
fn positive<T: PartialEq + Default>(v: &T) -> Result<(), String> {
    if *v == T::default() {
        return Err("must be positive".into());
    }
    Ok(())
}

/// A finite number above 0.
fn finite_positive(v: &f64) -> Result<(), String> {
    if !(v.is_finite() && *v > 0.0) {
        return Err("must be a positive number".into());
    }
    Ok(())
}

/// Declares a part of [`Config`] owned here: each field with its type,
/// default, help line and check, once.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $part:ident {
            $( $field:ident : $ty:ty = $default:expr, $check:path, $help:literal; )*
        }
        $(extra { $( $(#[doc = $xdoc:literal])* $xfield:ident : $xty:ty = $xdefault:expr; )* })?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( #[doc = $help] pub $field: $ty, )*
            $($( $(#[doc = $xdoc])* pub $xfield: $xty, )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: $default, )*
                    $($( $xfield: $xdefault, )*)?
                }
            }
        }

        impl $name {
            /// The keys of this part.
            fn keys() -> Vec<Key> {
                vec![$(
                    Key {
                        name: stringify!($field),
                        help: $help,
                        read: |c, v| {
                            c.$part.$field = Setting::read(v)?;
                            Ok(())
                        },
                        write: |c| c.$part.$field.write(),
                        check: |c| $check(&c.$part.$field),
                    },
                )*]
            }

            /// Checks every key of this part; the error names the key.
            pub fn check(&self) -> Result<(), ConfigError> {
                let whole = Config {
                    $part: self.clone(),
                    ..Config::default()
                };
                for key in Self::keys() {
                    check_key(&key, &whole)?;
                }
                Ok(())
            }
        }
    };
}

section! {
    /// The engine's bounds and defaults.
    pub struct EngineConfig in engine {
        claim_jobs_max: usize = 256, positive, "jobs claimed and computed together";
        submit_job_symbols: usize = 1, positive,
            "symbols in one compute job that a submission makes (1 keeps repeated requests cheap to merge)";
        refresh_job_symbols: usize = 256, positive,
            "symbols in one refresh job that an ingest makes (a tick of many symbols is a few jobs)";
        live_states_max: usize = 10_000, any,
            "plan states kept in memory between refreshes (about 10 KB each for the standard set), so a tick continues from its last bar; 0 replays from the saved state every time";
        checkpoint_symbols: usize = 64, positive,
            "symbols computed between two checkpoints of a many-symbol job";
        claim_jobs_min: usize = 16, positive,
            "smallest adaptive claim (the claim size moves between this and claim_jobs_max)";
        inflight_batches_max: usize = 2, inflight,
            "most batches committing while the next one computes (adaptive, from 1; at most 64)";
        breaker_failures: u32 = 5, positive,
            "consecutive store write failures that open the circuit breaker";
        breaker_recovery_ms: u64 = 5_000, any,
            "how long an open breaker refuses before one trial call";
        submit_symbols_per_s: f64 = 50_000.0, finite_positive,
            "symbols per second one client may submit (token bucket)";
        submit_burst_symbols: f64 = 100_000.0, finite_positive,
            "symbols one client may submit at once (bucket size)";
        admit_depth_max: u64 = 500_000, any,
            "waiting jobs beyond which submissions are refused with a retry-after hint";
        background_idle: bool = true, any,
            "kiln serve: work the queue only on CPU time requests leave (Linux SCHED_IDLE; the store's writer threads stay at normal priority, since request threads wait on their locks)";
    }
}

/// 1 to 64.
fn inflight(v: &usize) -> Result<(), String> {
    if !(1..=64).contains(v) {
        return Err("must be 1 to 64".into());
    }
    Ok(())
}

section! {
    /// The HTTP service's bounds (`kiln serve`).
    pub struct ServeConfig in serve {
        batch_symbols_max: usize = 1000, positive,
            "kiln serve: most symbols in one POST /v1/compute/batch";
        body_bytes_max: usize = 1 << 20, positive,
            "kiln serve: largest request body (but POST /v1/bars), in bytes";
        bars_body_bytes_max: usize = 256 << 20, positive,
            "kiln serve: largest POST /v1/bars body, in bytes";
        bars_uploads_max: usize = 2, any,
            "kiln serve: most POST /v1/bars bodies read and ingested at once (0 turns uploads off)";
        bars_body_seconds_max: u64 = 120, positive,
            "kiln serve: most seconds a POST /v1/bars body may take to arrive";
        requests_per_s: f64 = 100_000.0, finite_positive,
            "kiln serve: requests per second one client address may make (token bucket)";
        requests_burst: f64 = 20_000.0, finite_positive,
            "kiln serve: requests one client address may make at once (bucket size)";
    }
    extra {
        /// When set, every route but `/health` needs `Authorization: Bearer
        /// <token>` (`kiln serve --token` or `KILN_TOKEN`, never the file).
        token: Option<String> = None;
        /// Host names the service answers to besides IP addresses and
        /// `localhost` (`kiln serve --host`); a request naming any other
        /// host is refused, so a web page cannot reach the service by
        /// rebinding its own name to this address.
        hosts: Vec<String> = Vec::new();
    }
}

/// Declares the keys of parts owned by other crates: name, place, help.
macro_rules! keys_of {
    ($( $name:ident : $($field:ident).+ , $help:literal; )*) => {
        vec![$(
            Key {
                name: stringify!($name),
                help: $help,
                read: |c, v| {
                    c.$($field).+ = Setting::read(v)?;
                    Ok(())
                },
                write: |c| c.$($field).+.write(),
                // Checked all together by `StoreConfig::check`, which owns
                // the bounds between them.
                check: |_| Ok(()),
            },
        )*]
    };
}

/// Every key, in the order `kiln config` prints them.
pub fn keys() -> Vec<Key> {
    let mut keys = keys_of! {
        durability: store.durability,
            "\"sync\": acknowledged = fsynced; \"relaxed\": applied, fsynced within tick_ms";
        attempts_max: store.queue.attempts_max, "attempts a job gets before it is dead (1 to 1000)";
        retry_base_ms: store.queue.retry.base_ms, "first retry delay (exponential, equal jitter)";
        retry_cap_ms: store.queue.retry.cap_ms, "longest retry delay";
        lease_ms: store.queue.lease_ms, "a claimed job returns to the queue if not finished by then";
        queue_depth_max: store.queue.queue_depth_max,
            "unfinished jobs allowed; submissions beyond are refused";
        payload_bytes_max: store.queue.payload_bytes_max, "largest job payload";
        job_symbols_max: store.queue.job_symbols_max, "most symbols on one job";
        batch_jobs_max: store.queue.batch_jobs_max, "most jobs in one enqueue, claim or complete call";
        series_bytes_max: store.queue.series_bytes_max, "largest stored series";
        complete_bytes_max: store.queue.complete_bytes_max, "most series bytes committed by one call";
        inline_series_bytes_max: store.inline_series_bytes_max,
            "series up to this size live inline in sled (at most 65536)";
        group_ops_max: store.group_ops_max, "most operations in one group commit";
        group_linger_us: store.group_linger_us, "how long a group waits for more callers";
        channel_ops_max: store.channel_ops_max, "operations queued to the writer before callers wait";
        history_max: store.queue.history_max, "finished jobs kept";
        events_max: store.queue.events_max, "events kept in the event log";
        retention_ms: store.queue.retention_ms, "finished jobs older than this are purged";
        segment_bytes_max: store.segment_bytes_max, "value-log segment size (at least 4096)";
        compact_live_fraction_min: store.compact_live_fraction_min,
            "segments with less live data are compacted (0 to 1)";
        cache_bytes_max: store.cache_bytes_max, "sled page cache";
        tick_ms: store.tick_ms, "housekeeping period (lease expiry, relaxed flushes)";
    };
    keys.extend(EngineConfig::keys());
    keys.extend(ServeConfig::keys());
    keys
}

/// Keys that were renamed, with their new names.
const RENAMED: [(&str, &str); 1] = [("job_symbols", "submit_job_symbols")];

fn check_key(key: &Key, c: &Config) -> Result<(), ConfigError> {
    (key.check)(c).map_err(|reason| ConfigError::Value {
        key: key.name,
        line: 0,
        value: (key.write)(c).unwrap_or_default(),
        reason,
    })
}

impl Config {
    /// Reads a configuration file over the defaults; errors name the file,
    /// the line and the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        parse(&text).map_err(|error| ConfigError::In {
            path: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// Checks every key and the bounds between them.
    pub fn check(&self) -> Result<(), ConfigError> {
        for key in keys() {
            check_key(&key, self)?;
        }
        self.store.check().map_err(|e| store_error(e, |_| None))?;
        let (engine, queue) = (&self.engine, &self.store.queue);
        if engine.claim_jobs_max > queue.batch_jobs_max {
            return Err(ConfigError::Bounds(format!(
                "claim_jobs_max = {} is above batch_jobs_max = {}",
                engine.claim_jobs_max, queue.batch_jobs_max
            )));
        }
        Ok(())
    }
}

/// Reads a configuration file's text over the defaults.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    type Spanned<T> = toml::Spanned<T>;
    let table: std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text)
            .map_err(|e| ConfigError::Syntax(e.to_string().trim().replace('\n', " ")))?;
    let line_of = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
    let keys = keys();
    let mut config = Config::default();
    for (name, value) in &table {
        let line = line_of(name.span().start);
        let Some(key) = keys.iter().find(|k| k.name == name.get_ref().as_str()) else {
            let hint = match RENAMED.iter().find(|(old, _)| old == name.get_ref()) {
                Some((_, new)) => format!(" (renamed {new})"),
                None => "; `kiln config` prints every key".into(),
            };
            return Err(ConfigError::UnknownKey {
                key: name.get_ref().clone(),
                line,
                hint,
            });
        };
        let invalid = |reason| ConfigError::Value {
            key: key.name,
            line,
            value: literal(value.get_ref()),
            reason,
        };
        (key.read)(&mut config, value.get_ref()).map_err(invalid)?;
        (key.check)(&config).map_err(invalid)?;
    }
    config.store.check().map_err(|e| {
        store_error(e, |key| {
            table
                .iter()
                .find(|(name, _)| name.get_ref() == key)
                .map(|(name, value)| (line_of(name.span().start), literal(value.get_ref())))
        })
    })?;
    config.check()?;
    Ok(config)
}

/// A store bound broken: the key's line and value where `locate` finds it
/// in the file.
fn store_error(
    e: kiln_store::StoreError,
    locate: impl Fn(&str) -> Option<(usize, String)>,
) -> ConfigError {
    match e {
        kiln_store::StoreError::Invalid { field, reason } => match locate(field) {
            Some((line, value)) => ConfigError::Value {
                key: field,
                line,
                value,
                reason,
            },
            None => ConfigError::Bounds(format!("{field}: {reason}")),
        },
        other => ConfigError::Bounds(other.to_string()),
    }
}

/// The configuration as a documented TOML file that [`parse`] reads back.
pub fn render(c: &Config) -> String {
    let mut out = String::from(
        "# kiln configuration (every key optional; absent keys keep these defaults)\n",
    );
    for key in keys() {
        out.push_str(&format!("\n# {}\n", key.help));
        match (key.write)(c) {
            Some(v) => out.push_str(&format!("{} = {v}\n", key.name)),
            None => out.push_str(&format!("# {} = (none)\n", key.name)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_defaults_parse_back_to_the_defaults() {
        let text = render(&Config::default());
        let back = parse(&text).expect("parse");
        assert_eq!(render(&back), text);
        assert_eq!(
            back.store.queue.attempts_max,
            StoreConfig::default().queue.attempts_max
        );
    }

    #[test]
    fn values_override_and_mistakes_are_named() {
        let c = parse("durability = \"relaxed\"\nlease_ms = 5\n").expect("parse");
        assert_eq!(c.store.durability, Durability::Relaxed);
        assert_eq!(c.store.queue.lease_ms, 5);
        let e = parse("lease_msec = 5\n")
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("lease_msec"), "{e}");
        let e = parse("lease_ms = \"soon\"\n")
            .expect_err("wrong type")
            .to_string();
        assert!(e.contains("lease_ms") || e.contains("line 1"), "{e}");
        let e = parse("durability = \"fast\"\n")
            .expect_err("bad value")
            .to_string();
        assert!(e.contains("fast"), "{e}");
    }

    #[test]
    fn errors_name_the_line_key_and_bound() {
        let e = parse("tick_ms = 5\n\nclaim_jobs_max = 0\n")
            .expect_err("zero")
            .to_string();
        assert_eq!(e, "line 3: claim_jobs_max = 0: must be positive");
        let e = parse("job_symbols = 4\n").expect_err("renamed").to_string();
        assert!(e.contains("renamed submit_job_symbols"), "{e}");
        let e = parse("requests_per_s = -1.0\n")
            .expect_err("negative")
            .to_string();
        assert!(
            e.contains("requests_per_s = -1.0: must be a positive number"),
            "{e}"
        );
        let e = parse("claim_jobs_max = 20\nbatch_jobs_max = 10\n")
            .expect_err("bound")
            .to_string();
        assert!(
            e.contains("claim_jobs_max = 20 is above batch_jobs_max = 10"),
            "{e}"
        );
        let e = parse("attempts_max = -3\n").expect_err("sign").to_string();
        assert!(e.contains("attempts_max = -3: want 0 to 4294967295"), "{e}");
        let e = parse("lease_ms = [1\n").expect_err("syntax").to_string();
        assert!(e.contains("line 1"), "{e}");
        // The store's bounds, named with their lines before a store opens.
        let e = parse("tick_ms = 5\nattempts_max = 0\n")
            .expect_err("store bound")
            .to_string();
        assert_eq!(e, "line 2: attempts_max = 0: must be 1 to 1000");
        let e = parse("segment_bytes_max = 100\n")
            .expect_err("store bound")
            .to_string();
        assert_eq!(e, "line 1: segment_bytes_max = 100: must be at least 4096");
        let e = parse("compact_live_fraction_min = 2.0\n")
            .expect_err("store bound")
            .to_string();
        assert!(e.contains("compact_live_fraction_min"), "{e}");
    }

    #[test]
    fn every_key_is_declared_once() {
        let names: Vec<&str> = keys().iter().map(|k| k.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for (old, new) in RENAMED {
            assert!(!names.contains(&old) && names.contains(&new));
        }
    }
}
