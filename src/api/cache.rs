//! Answers to feature reads, kept by request and the symbol's data version.
//! A series is a pure function of the bars and the spec, so an answer stays
//! right until the symbol's bars change, and the version check on every
//! read is what invalidates it. Bounded in bytes; when full it starts over.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use kiln_core::DataVersion;

/// One kept answer.
#[derive(Clone)]
pub(crate) struct Answer {
    pub version: DataVersion,
    pub body: Bytes,
    pub content_type: &'static str,
    /// Outputs it holds (each counts as a feature read).
    pub outputs: usize,
}

pub(crate) struct ReadCache {
    bytes_max: usize,
    inner: Mutex<(HashMap<String, Answer>, usize)>,
}

impl ReadCache {
    pub(crate) fn new(bytes_max: usize) -> Self {
        ReadCache {
            bytes_max,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The answer kept for `key`, if it was made from `version`.
    pub(crate) fn get(&self, key: &str, version: &DataVersion) -> Option<Answer> {
        let inner = self.inner.lock().ok()?;
        inner.0.get(key).filter(|a| a.version == *version).cloned()
    }

    pub(crate) fn put(&self, key: String, answer: Answer) {
        let size = key.len() + answer.body.len();
        if size > self.bytes_max / 16 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let (map, bytes) = &mut *inner;
        if *bytes + size > self.bytes_max {
            map.clear();
            *bytes = 0;
        }
        if let Some(old) = map.insert(key.clone(), answer) {
            *bytes -= key.len() + old.body.len();
        }
        *bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(hash: u64, body: &'static str) -> Answer {
        Answer {
            version: DataVersion {
                hash,
                ..DataVersion::default()
            },
            body: Bytes::from_static(body.as_bytes()),
            content_type: "application/json",
            outputs: 1,
        }
    }

    #[test]
    fn an_answer_serves_its_version_only_and_the_bound_holds() {
        let c = ReadCache::new(16 * 64);
        c.put("a".into(), answer(1, "one"));
        assert!(c.get("a", &answer(1, "").version).is_some());
        assert!(c.get("a", &answer(2, "").version).is_none(), "new bars");
        assert!(c.get("b", &answer(1, "").version).is_none());
        c.put("a".into(), answer(2, "two"));
        assert_eq!(
            &c.get("a", &answer(2, "").version).expect("kept").body[..],
            b"two"
        );
        for i in 0..100 {
            c.put(
                format!("k{i}"),
                answer(1, "0123456789012345678901234567890123456789"),
            );
        }
        let inner = c.inner.lock().expect("lock");
        assert!(
            inner.1 <= 16 * 64
                && inner.1
                    == inner
                        .0
                        .iter()
                        .map(|(k, a)| k.len() + a.body.len())
                        .sum::<usize>()
        );
    }
}
