//! The durability model on a real mount: what survives `power_cut` is
//! exactly what was fsynced, file bytes and directory entries alike.
//! These tests need FUSE (root, or `fusermount3`): without it they fail,
//! naming why.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kiln_powerfs::PowerFs;

struct Mounted {
    fs: PowerFs,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Mounted {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = PowerFs::mount(dir.path())
            .unwrap_or_else(|e| panic!("cannot mount the power-loss filesystem: {e}"));
        Mounted { fs, _dir: dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.fs.mountpoint().join(name)
    }
}

fn fsync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("fsync");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn unsynced_write_is_gone() {
    let m = Mounted::new();
    let a = m.path("a");
    write_synced(&a, b"one");
    fsync_dir(m.fs.mountpoint());
    let mut f = OpenOptions::new().append(true).open(&a).expect("open");
    f.write_all(b" two").expect("append");
    drop(f);
    assert_eq!(fs::read(&a).expect("read"), b"one two");
    m.fs.power_cut();
    assert_eq!(fs::read(&a).expect("read"), b"one");
}

#[test]
fn never_synced_file_with_durable_entry_is_empty() {
    let m = Mounted::new();
    let a = m.path("a");
    fs::write(&a, b"data").expect("write");
    fsync_dir(m.fs.mountpoint());
    m.fs.power_cut();
    assert_eq!(fs::read(&a).expect("read"), b"");
}

#[test]
fn synced_file_in_unsynced_directory_is_gone() {
    let m = Mounted::new();
    write_synced(&m.path("a"), b"data");
    m.fs.power_cut();
    assert_eq!(
        fs::metadata(m.path("a")).map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    assert!(names(m.fs.mountpoint()).is_empty());
    assert_eq!(m.fs.usage().inodes, 1, "only the root is left");
}

#[test]
fn new_directory_needs_its_parent_synced() {
    let m = Mounted::new();
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    write_synced(&d.join("f"), b"x");
    fsync_dir(&d);
    m.fs.power_cut();
    assert!(!d.exists(), "d was never made durable in the root");

    fs::create_dir(&d).expect("mkdir");
    write_synced(&d.join("f"), b"x");
    fsync_dir(&d);
    fsync_dir(m.fs.mountpoint());
    m.fs.power_cut();
    assert_eq!(fs::read(d.join("f")).expect("read"), b"x");
}

#[test]
fn rename_is_durable_after_fsyncdir() {
    let m = Mounted::new();
    let root = m.fs.mountpoint().to_path_buf();
    write_synced(&m.path("old"), b"old");
    fsync_dir(&root);
    // The classic replace: write a temp file, fsync, rename over.
    write_synced(&m.path("tmp"), b"new");
    fs::rename(m.path("tmp"), m.path("old")).expect("rename");
    assert_eq!(fs::read(m.path("old")).expect("read"), b"new");
    m.fs.power_cut();
    assert_eq!(names(&root), ["old"], "the rename was not durable");
    assert_eq!(fs::read(m.path("old")).expect("read"), b"old");

    write_synced(&m.path("tmp"), b"new");
    fs::rename(m.path("tmp"), m.path("old")).expect("rename");
    fsync_dir(&root);
    m.fs.power_cut();
    assert_eq!(names(&root), ["old"]);
    assert_eq!(fs::read(m.path("old")).expect("read"), b"new");
}

#[test]
fn unlink_is_undone_without_fsyncdir() {
    let m = Mounted::new();
    let root = m.fs.mountpoint().to_path_buf();
    write_synced(&m.path("a"), b"a");
    write_synced(&m.path("b"), b"b");
    fsync_dir(&root);
    fs::remove_file(m.path("a")).expect("unlink a");
    fs::remove_file(m.path("b")).expect("unlink b");
    assert!(names(&root).is_empty());
    m.fs.power_cut();
    assert_eq!(names(&root), ["a", "b"]);
    assert_eq!(fs::read(m.path("b")).expect("read"), b"b");

    fs::remove_file(m.path("a")).expect("unlink a");
    fsync_dir(&root);
    m.fs.power_cut();
    assert_eq!(names(&root), ["b"]);
}

#[test]
fn directory_removal_is_durable_after_fsyncdir() {
    let m = Mounted::new();
    let root = m.fs.mountpoint().to_path_buf();
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    write_synced(&d.join("f"), b"f");
    fsync_dir(&d);
    fsync_dir(&root);
    fs::remove_dir_all(&d).expect("rm -r");
    m.fs.power_cut();
    assert_eq!(fs::read(d.join("f")).expect("read"), b"f", "rm -r undone");
    fs::remove_dir_all(&d).expect("rm -r");
    fsync_dir(&root);
    m.fs.power_cut();
    assert!(names(&root).is_empty());
    assert_eq!(m.fs.usage().inodes, 1);
}

#[test]
fn writes_at_offsets_truncate_and_fdatasync() {
    let m = Mounted::new();
    let a = m.path("a");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&a)
        .expect("create");
    f.write_all_at(b"hello", 100_000).expect("pwrite");
    f.write_all_at(b"HE", 100_000).expect("pwrite");
    assert_eq!(f.metadata().expect("stat").len(), 100_005);
    let mut buf = [9u8; 4];
    f.read_exact_at(&mut buf, 99_998).expect("pread");
    assert_eq!(&buf, b"\0\0HE");
    f.sync_data().expect("fdatasync");
    f.set_len(100_001).expect("ftruncate");
    assert_eq!(fs::read(&a).expect("read").len(), 100_001);
    fsync_dir(m.fs.mountpoint());
    drop(f);
    m.fs.power_cut();
    let back = fs::read(&a).expect("read");
    assert_eq!(back.len(), 100_005, "the truncate was not fsynced");
    assert_eq!(&back[100_000..], b"HEllo");
    assert!(back[..100_000].iter().all(|&b| b == 0));
}

#[test]
fn open_flags_create_excl_trunc_append() {
    let m = Mounted::new();
    let a = m.path("a");
    fs::write(&a, b"12345").expect("write");
    let excl = OpenOptions::new().write(true).create_new(true).open(&a);
    assert_eq!(
        excl.map_err(|e| e.kind()).err(),
        Some(ErrorKind::AlreadyExists)
    );
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&a)
        .expect("open O_TRUNC");
    f.write_all(b"ab").expect("write");
    drop(f);
    let mut f = OpenOptions::new().append(true).open(&a).expect("append");
    f.write_all(b"cd").expect("append");
    f.write_all(b"ef").expect("append");
    drop(f);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a)
        .expect("open");
    f.seek(SeekFrom::Start(1)).expect("seek");
    f.write_all(b"X").expect("write");
    f.seek(SeekFrom::Start(0)).expect("seek");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    assert_eq!(s, "aXcdef");
}

#[test]
fn copy_flock_socket_and_readdir() {
    let m = Mounted::new();
    let root = m.fs.mountpoint().to_path_buf();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(m.path("src"), &big).expect("write");
    fs::copy(m.path("src"), m.path("dst")).expect("copy");
    assert_eq!(fs::read(m.path("dst")).expect("read"), big);

    // flock is the kernel's: exclusive between two open files.
    let one = File::create(m.path("LOCK")).expect("create");
    let two = File::open(m.path("LOCK")).expect("open");
    one.try_lock().expect("lock");
    assert!(two.try_lock().is_err(), "the lock is exclusive");
    drop(one);
    two.try_lock().expect("lock after the holder closed");

    // A Unix socket binds and connects (the kernel's, named here).
    let sock = m.path("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let _client = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    drop(listener);
    fs::remove_file(&sock).expect("unlink socket");

    for i in 0..300 {
        fs::write(m.path(&format!("many-{i:03}")), b"").expect("create");
    }
    let listed = names(&root);
    assert_eq!(listed.len(), 303);
    assert_eq!(listed[0], "LOCK");
    assert_eq!(listed[302], "src");

    let stat = fs::metadata(&root).expect("stat");
    assert!(stat.is_dir());
    m.fs.power_cut();
    assert!(names(&root).is_empty());
}

#[test]
fn unlinked_open_file_stays_readable() {
    let m = Mounted::new();
    let a = m.path("a");
    fs::write(&a, b"still here").expect("write");
    let mut f = File::open(&a).expect("open");
    fs::remove_file(&a).expect("unlink");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    assert_eq!(s, "still here");
    drop(f);
    // The kernel sends the release after close returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while m.fs.usage().inodes != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "never freed once closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
