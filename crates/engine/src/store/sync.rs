//! The explicit fdatasync that makes a sled flush durable.
//!
//! sled 0.34.7's `flush()` ends, on Linux, in `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)` on the data file (`pagecache/iobuf.rs`). That pushes dirty pages to the device but
//! neither flushes the drive's volatile write cache nor persists the file's size and other
//! metadata (sled issues #1452, #1351): after a power cut, "flushed" data can be gone. So after
//! every `flush()` the store calls [`Syncer::sync`], which `fdatasync`s what sled writes to:
//!
//! - `DIR/db`: the log and all inline values. `fsync` on any descriptor of a file flushes the
//!   inode, so our own read-only descriptor is enough.
//! - `DIR/blobs/<lsn>`: values sled moves out of the log (larger than a quarter of a 512 KiB
//!   segment). sled writes each with `create_new` + `write_all` and never syncs it. Blob files
//!   are write-once, so each new one is synced once, then the `blobs` directory (its entry).
//!   They are synced before the data file, so that no durable log record names a blob that is
//!   not.
//! - `DIR/conf` and the directories themselves are synced once at open: sled creates them then.
//!
//! Snapshots (`DIR/snap.*`) are synced by sled itself and are only a recovery shortcut: the log
//! is the truth.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Name of sled 0.34's data file inside its directory.
const DATA_FILE: &str = "db";
/// Name of sled 0.34's configuration file.
const CONF_FILE: &str = "conf";
/// Name of sled 0.34's off-log blob directory.
const BLOB_DIR: &str = "blobs";

/// fdatasyncs sled's files. Owned by the store's sync thread (see `writer.rs`).
#[derive(Debug)]
pub(crate) struct Syncer {
    /// A descriptor of `DIR/db`, kept open so each sync costs one syscall.
    data: File,
    /// `DIR/blobs`.
    blob_dir: PathBuf,
    /// Blob files already synced (and still present at the last look).
    synced_blobs: HashSet<OsString>,
    /// Blob files first synced by the last call, synced once more by the next.
    resync: Vec<OsString>,
}

impl Syncer {
    /// Opens sled's data file in `dir` and syncs what sled created at open.
    pub(crate) fn open(dir: &Path) -> io::Result<Syncer> {
        let data = File::open(dir.join(DATA_FILE))?;
        match File::open(dir.join(CONF_FILE)) {
            Ok(conf) => conf.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let blob_dir = dir.join(BLOB_DIR);
        sync_dir(dir)?;
        let mut syncer = Syncer {
            data,
            blob_dir,
            synced_blobs: HashSet::new(),
            resync: Vec::new(),
        };
        syncer.sync()?;
        Ok(syncer)
    }

    /// Makes everything sled has written so far durable. Call after `flush()`.
    ///
    /// The blob files go first, then the data file: a log record naming a blob must not be
    /// durable before the blob is (sled's recovery skips a record whose blob is missing or
    /// damaged, which would break a batch apart). The blob files are listed after the flush, when
    /// every blob of the batches it covered is complete (sled writes a blob whole before the log
    /// record that names it). A blob another sled thread was still writing when listed (a page
    /// rewritten by its background flusher or a split elsewhere) is synced once more by the next
    /// call, so a new file is never synced only half-written.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced_blobs.len());
        let mut new = Vec::new();
        for entry in entries.into_iter().flatten() {
            let name = entry?.file_name();
            if !self.synced_blobs.contains(&name) {
                new.push(name.clone());
            }
            present.insert(name);
        }
        let mut synced_any = false;
        for name in new.iter().chain(&self.resync) {
            match File::open(self.blob_dir.join(name)) {
                Ok(f) => f.sync_data()?,
                // sled garbage-collected it meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            synced_any = true;
        }
        if synced_any {
            sync_dir(&self.blob_dir)?;
        }
        self.data.sync_data()?;
        self.synced_blobs = present;
        self.resync = new;
        Ok(())
    }
}

/// fsyncs a directory, making the entries created in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
