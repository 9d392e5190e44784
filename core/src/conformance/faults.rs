//! I/O failures for the model test's byte sequences, through the fault
//! shim `tests/faults/io_fault.c` when the process runs with it preloaded
//! (`LD_PRELOAD`): a harness arms it to fail the n-th next call of one kind
//! on its backend's files. The calls it fails are those a process survives:
//! writes with ENOSPC, reads with EIO, opens, renames, truncations and
//! unlinks. A failed fsync, or EIO on a write (sled reports a failed flush
//! that way), is fatal for the process by design (kiln's store then leaks
//! sled's handle and must not be reopened in it): `tests/io_faults.rs`
//! injects those, one process per fault.

use std::ffi::{CStr, CString, c_char, c_int, c_long};
use std::fmt::Display;
use std::path::Path;
use std::sync::OnceLock;

/// What a fault byte (modulo the length) fails, and with which errno.
const FAULTS: [(&CStr, c_int); 7] = [
    (c"write,pwrite", libc::ENOSPC),
    (c"read,pread", libc::EIO),
    (c"open", libc::EIO),
    (c"open", libc::ENOSPC),
    (c"rename", libc::EIO),
    (c"ftruncate", libc::ENOSPC),
    (c"unlink", libc::EIO),
];

type Arm = extern "C" fn(*const c_char, *const c_char, c_int, c_long);
type Disarm = extern "C" fn();
type Failed = extern "C" fn() -> c_long;

/// The preloaded shim's controls.
pub struct FaultShim {
    arm: Arm,
    disarm: Disarm,
    failed: Failed,
}

impl FaultShim {
    /// The shim, when this process runs with it preloaded.
    pub fn find() -> Option<&'static FaultShim> {
        static SHIM: OnceLock<Option<FaultShim>> = OnceLock::new();
        SHIM.get_or_init(|| {
            let find = |name: &CStr| {
                // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches every
                // object loaded.
                #[allow(unsafe_code)]
                let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!f.is_null()).then_some(f)
            };
            let (arm, disarm, failed) = (
                find(c"kiln_fault_arm")?,
                find(c"kiln_fault_disarm")?,
                find(c"kiln_fault_failed")?,
            );
            // SAFETY: the shim defines these with exactly these C signatures.
            #[allow(unsafe_code)]
            unsafe {
                Some(FaultShim {
                    arm: std::mem::transmute::<*mut libc::c_void, Arm>(arm),
                    disarm: std::mem::transmute::<*mut libc::c_void, Disarm>(disarm),
                    failed: std::mem::transmute::<*mut libc::c_void, Failed>(failed),
                })
            }
        })
        .as_ref()
    }

    /// Makes the `nth` (from 0) next call of kind `fault` (see `FAULTS`) on
    /// the files under `dir` fail, once; `false` for a path the shim cannot
    /// take.
    pub fn fail(&self, dir: &Path, fault: u8, nth: u8) -> bool {
        let (calls, errno) = FAULTS[usize::from(fault) % FAULTS.len()];
        let Ok(path) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        (self.arm)(
            path.as_ptr(),
            calls.as_ptr(),
            errno,
            1 + c_long::from(nth % 16),
        );
        true
    }

    /// How many calls it has failed in this process.
    pub fn failed(&self) -> u64 {
        u64::try_from((self.failed)()).unwrap_or(0)
    }

    /// Fails nothing more.
    pub fn disarm(&self) {
        (self.disarm)();
    }

    /// Opens with `open` while a failure may still be armed (it may strike
    /// the open), then disarms: an open a failure made fail is tried again,
    /// and must then succeed.
    pub fn reopen<T, E: Display>(&self, open: impl Fn() -> Result<T, E>) -> T {
        let failed = self.failed();
        let opened = open();
        self.disarm();
        match opened {
            Ok(backend) => backend,
            Err(e) => {
                assert!(
                    self.failed() > failed,
                    "reopening failed with no failure injected: {e}"
                );
                open().unwrap_or_else(|e2| panic!("reopening after a failure ({e}) failed: {e2}"))
            }
        }
    }
}
