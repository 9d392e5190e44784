//! Calls into the operating system the load generator needs and Rust's
//! standard library does not offer: waiting on many sockets with a
//! nanosecond timeout, and the thread's timer slack.

use std::time::Duration;

/// Waits up to `timeout` for any of `fds` to be readable (`ppoll`);
/// an interrupted wait is not an error.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `fds` is a valid slice of pollfd for its length, `ts` lives
    // across the call, and a null signal mask leaves the mask unchanged.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Lets this thread's timed waits end within `ns` of their time (Linux
/// rounds them up by 50 µs by default).
pub(crate) fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK reads only its integer argument.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong);
    }
}
