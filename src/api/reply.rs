//! What handlers share: JSON answers, checked path parameters, running a
//! blocking engine call off tokio's worker threads, and the wait before a
//! read for what is committed to be durable.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_core::{Backend, Symbol};

use super::ApiError;

/// A handler's answer.
pub(crate) type Reply = Result<Response, ApiError>;

/// A JSON answer.
pub(crate) fn json(status: StatusCode, v: &impl serde::Serialize) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::internal(format!("rendering the answer: {e}")).into_response(),
    }
}

/// A symbol from a path or body, or 400 naming what is wrong with it.
pub(crate) fn symbol(s: &str) -> Result<Symbol, ApiError> {
    Symbol::new(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A priority (`high`, `normal`, `low`), or 400.
pub(crate) fn priority(s: &str) -> Result<kiln_core::Priority, ApiError> {
    s.parse()
        .map_err(|e: kiln_core::StoreError| ApiError::bad_request(e.to_string()))
}

/// A job id from the path, or 400.
pub(crate) fn job_id(path: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let Path(id) = path.map_err(ApiError::rejection)?;
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("job id {id:?} is not a number")))
}

/// Runs a blocking engine call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))?
}

/// How long a read waits for the commits before it to become durable.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Before a read: waits (off the worker threads, and only when something
/// committed is not durable yet) until everything committed is durable, so
/// the reader sees nothing a crash could take back; 503 when the store
/// failed meanwhile.
pub(crate) async fn durable<B: Backend>(store: &B) -> Result<(), ApiError> {
    if store.wait_durable(std::time::Duration::ZERO)? {
        return Ok(());
    }
    let store = store.clone();
    blocking(move || {
        if store.wait_durable(DURABLE_WAIT)? {
            return Ok(());
        }
        let cause = store.poisoned().unwrap_or_else(|| "still flushing".into());
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store",
            format!("the commits before this read are not durable: {cause}"),
        ))
    })
    .await
}

/// A whole number in a JSON body, also when written with a zero fraction
/// (`5.0`), as JSON Schema's `integer` allows; refused when out of `T`'s
/// range.
pub(crate) fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let n = serde_json::Number::deserialize(d)?;
    let v = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        // A float holds every whole number up to 2^53 exactly; past that
        // (and past u64, which serde_json reads as a float) it is refused.
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0)
                .map(|f| f as i128)
        });
    v.and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number in range")))
}

/// [`whole`], for a field that may be absent or null.
pub(crate) fn whole_or_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    #[derive(serde::Deserialize)]
    struct Whole<T: TryFrom<i128>>(#[serde(deserialize_with = "whole")] T);
    use serde::Deserialize as _;
    Ok(Option::<Whole<T>>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[serde(default, deserialize_with = "super::whole_or_none")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "super::whole_or_none")]
        t: Option<i64>,
    }

    fn read(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_read_as_json_schema_counts_them() {
        let b = read(r#"{"n": 5, "t": -7}"#).expect("plain");
        assert_eq!((b.n, b.t), (Some(5), Some(-7)));
        let b = read(r#"{"n": 5.0, "t": -7.0}"#).expect("a zero fraction");
        assert_eq!((b.n, b.t), (Some(5), Some(-7)));
        let b = read(r#"{"n": 18446744073709551615, "t": null}"#).expect("u64::MAX");
        assert_eq!((b.n, b.t), (Some(u64::MAX), None));
        assert_eq!(read("{}").expect("absent").n, None);
        for bad in [
            r#"{"n": 5.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 18446744073709551616}"#,
            r#"{"t": -9223372036854775809}"#,
            r#"{"t": 1e300}"#,
            r#"{"n": "5"}"#,
        ] {
            assert!(read(bad).is_err(), "{bad} was read");
        }
    }
}
