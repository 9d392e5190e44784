//! Third-party decoders run on file bytes kiln did not write. arrow-ipc 60
//! and parquet 60 panic on some malformed files where they should return an
//! error (a record batch whose buffers lie beyond its message body; a
//! column chunk with a negative offset — both found by `fuzz/`'s ingest
//! targets). [`decode`] turns such a panic into an error with its message;
//! the reader that panicked is dropped with everything it held, so nothing
//! half-decoded outlives it.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside [`decode`]: a panic hook stays quiet then,
/// since the panic becomes an error.
pub fn decoding() -> bool {
    DECODING.with(Cell::get)
}

/// Runs `f`, a third-party decoder reading untrusted bytes; its panic comes
/// back as `Err` with the panic's message.
pub fn decode<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let outer = DECODING.with(|d| d.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    DECODING.with(|d| d.set(outer));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_the_flag_is_restored() {
        assert!(!decoding());
        let caught = decode(|| -> u8 {
            assert!(decoding());
            panic!("offset {} beyond the body", 9)
        });
        assert_eq!(caught, Err("offset 9 beyond the body".to_owned()));
        assert!(!decoding());
        assert_eq!(decode(|| 7), Ok(7));
    }
}
