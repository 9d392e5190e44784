//! A filesystem for power-loss tests: in memory, mounted through FUSE, and
//! keeping across a simulated power cut only what was made durable.
//!
//! Each inode has a current and a durable version: of its bytes for a
//! file, of its entries for a directory. `fsync`/`fdatasync` of a file
//! makes its bytes durable; `fsync` of a directory makes its entries
//! durable. [`PowerFs::power_cut`] then turns every inode back into its
//! durable version, walking from the root (which always exists) through
//! durable entries only:
//!
//! - a file never fsynced is empty; one fsynced has the bytes (and length)
//!   of its last fsync;
//! - a created file, a new directory, a rename or an unlink is durable only
//!   once its parent directory was fsynced after it (an fsynced file whose
//!   entry is not durable is gone; an unlink not made durable is undone);
//! - inodes no durable entry reaches are gone.
//!
//! This is stricter than most real filesystems (ext4 and XFS often persist
//! a new name with its file's fsync): what POSIX promises, nothing more.
//! Not modelled: an unsynced write that partly survives (torn pages, some
//! writes kept and not others), attributes (mode, times) going back, a
//! full disk, I/O errors.
//!
//! The kernel caches nothing: every open has `FOPEN_DIRECT_IO` and every
//! entry and attribute a zero TTL, so after a power cut a new process sees
//! the durable state. Locks (`flock`, `fcntl`) are left to the kernel.
//!
//! Mounting needs `/dev/fuse` and either root (a direct `mount(2)`) or the
//! setuid `fusermount3` (Debian's `fuse3` package).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let dir = std::env::temp_dir().join("powerfs-example");
//! std::fs::create_dir_all(&dir)?;
//! let fs = kiln_powerfs::PowerFs::mount(&dir)?;
//! std::fs::write(dir.join("a"), b"lost")?; // never fsynced
//! fs.power_cut();
//! assert!(!dir.join("a").exists());
//! # Ok(())
//! # }
//! ```

mod fs;
mod model;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

pub use model::Usage;

/// A mounted power-loss filesystem. Dropping it unmounts it.
pub struct PowerFs {
    state: Arc<Mutex<model::State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl fmt::Debug for PowerFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerFs")
            .field("mountpoint", &self.mountpoint)
            .field("usage", &self.usage())
            .finish()
    }
}

impl PowerFs {
    /// Mounts an empty filesystem on `mountpoint` (an existing directory),
    /// served by a background thread of this process.
    ///
    /// Fails if FUSE is unavailable: no `/dev/fuse`, or neither root nor
    /// `fusermount3` to mount with.
    pub fn mount(mountpoint: &Path) -> io::Result<PowerFs> {
        let mountpoint = mountpoint.canonicalize()?;
        let fuse = Path::new("/dev/fuse");
        if !fuse.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "/dev/fuse is missing: this kernel or container has no FUSE",
            ));
        }
        let uid = mountpoint_owner(&mountpoint)?;
        let state = Arc::new(Mutex::new(model::State::new(uid.0, uid.1)));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powerfs".into()),
            MountOption::Subtype("powerfs".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoAtime,
        ];
        let fs = fs::PowerFsImpl {
            state: Arc::clone(&state),
        };
        let session = fuser::spawn_mount(fs, &mountpoint, &config).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "mount a FUSE filesystem on {}: {e} (root mounts with mount(2) and needs \
                     only /dev/fuse; another user needs /dev/fuse open to it and \
                     fusermount3, from Debian's fuse3 package)",
                    mountpoint.display()
                ),
            )
        })?;
        let fs = PowerFs {
            state,
            session: Some(session),
            mountpoint,
        };
        // The root must now be ours: inode 1 of a filesystem named powerfs.
        let root = std::fs::metadata(&fs.mountpoint)?;
        if std::os::unix::fs::MetadataExt::ino(&root) != 1 {
            return Err(io::Error::other(format!(
                "{} does not show the mounted filesystem",
                fs.mountpoint.display()
            )));
        }
        Ok(fs)
    }

    /// The directory it is mounted on (canonical).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every file's bytes go back to its last fsync (empty
    /// if never), every directory's entries to its last fsync, and inodes no
    /// durable entry reaches disappear. Open handles are forgotten, so call
    /// it only while no process has a file open here (kill them and wait
    /// for them first).
    pub fn power_cut(&self) {
        fs::lock(&self.state).power_cut();
    }

    /// What the filesystem holds now.
    pub fn usage(&self) -> Usage {
        fs::lock(&self.state).usage()
    }

    /// Unmounts now, reporting a failure (dropping unmounts too, quietly).
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                // Busy (a process still in it): detach it lazily, so the
                // mountpoint is freed once the last user goes.
                let lazy = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                match lazy {
                    Ok(status) if status.success() => Ok(()),
                    _ => Err(io::Error::new(
                        e.kind(),
                        format!("unmount {}: {e}", self.mountpoint.display()),
                    )),
                }
            }
        }
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}

/// The owner of the mountpoint, who owns the root of the new filesystem.
fn mountpoint_owner(path: &Path) -> io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", path.display()),
        ));
    }
    Ok((meta.uid(), meta.gid()))
}
