//! Calls into the operating system that Rust's standard library does not
//! offer: the one place outside `kiln-store` with `unsafe` code.

/// Puts the calling thread under Linux's `SCHED_IDLE` policy: it then gets
/// only the CPU time no other thread wants (see
/// [`EngineConfig::background_idle`](crate::config::EngineConfig::background_idle));
/// threads it starts inherit it. Warns and carries on when refused.
pub fn run_in_background() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` only during the call; pid 0
    // is the calling thread on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not move a background thread to SCHED_IDLE; it runs at normal priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: sched_getscheduler only reads its argument; 0 is the
        // calling thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::sched_getscheduler(0)
        }
    }

    #[test]
    fn a_background_thread_and_the_threads_it_starts_run_idle() {
        let here = policy();
        let (inside, child) = std::thread::spawn(|| {
            run_in_background();
            let child = std::thread::spawn(policy).join().expect("child thread");
            (policy(), child)
        })
        .join()
        .expect("background thread");
        assert_eq!((inside, child), (libc::SCHED_IDLE, libc::SCHED_IDLE));
        assert_eq!(policy(), here, "the starting thread keeps its policy");
    }
}
