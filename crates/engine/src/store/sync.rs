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
//!   Which files are new is read by the writer thread after each apply ([`Blobs`]), not by the
//!   thread that syncs, which runs while the next group is applied.
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
}

impl Syncer {
    /// Opens sled's data file in `dir` and syncs what sled created at open, including every
    /// blob file already there. Answers the blob files it found, for [`Blobs::new`].
    pub(crate) fn open(dir: &Path) -> io::Result<(Syncer, HashSet<OsString>)> {
        let data = File::open(dir.join(DATA_FILE))?;
        match File::open(dir.join(CONF_FILE)) {
            Ok(conf) => conf.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let blob_dir = dir.join(BLOB_DIR);
        sync_dir(dir)?;
        let syncer = Syncer { data, blob_dir };
        let mut blobs = Blobs {
            blob_dir: syncer.blob_dir.clone(),
            seen: HashSet::new(),
        };
        let present = blobs.created()?;
        syncer.sync(&present)?;
        Ok((syncer, present.into_iter().collect()))
    }

    /// Makes durable everything sled has written so far, given the blob files created since
    /// the last call ([`Blobs::created`]). Call after `flush()`.
    pub(crate) fn sync(&self, new_blobs: &[OsString]) -> io::Result<()> {
        self.data.sync_data()?;
        let mut synced_new = false;
        for name in new_blobs {
            match File::open(self.blob_dir.join(name)) {
                Ok(f) => f.sync_data()?,
                // sled garbage-collected it meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            synced_new = true;
        }
        if synced_new {
            sync_dir(&self.blob_dir)?;
        }
        Ok(())
    }
}

/// The blob files sled has created, as the writer thread sees them after each apply.
///
/// sled writes a blob file whole, during the apply that creates it (`create_new` + `write_all`
/// on the applying thread), so a file listed after an apply returned is complete. The listing
/// is taken on the writer thread, between its applies, and handed to the sync thread with the
/// group: a listing taken on the sync thread could catch the next group's blob half-written,
/// sync it early and never again.
#[derive(Debug)]
pub(crate) struct Blobs {
    /// `DIR/blobs`.
    blob_dir: PathBuf,
    /// Blob files already handed out (and still present at the last look).
    seen: HashSet<OsString>,
}

impl Blobs {
    /// Starts from the blob files [`Syncer::open`] found (and synced).
    pub(crate) fn new(dir: &Path, seen: HashSet<OsString>) -> Blobs {
        Blobs {
            blob_dir: dir.join(BLOB_DIR),
            seen,
        }
    }

    /// The blob files created since the last call.
    pub(crate) fn created(&mut self) -> io::Result<Vec<OsString>> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.seen.len());
        let mut created = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if !self.seen.contains(&name) {
                created.push(name.clone());
            }
            present.insert(name);
        }
        self.seen = present;
        Ok(created)
    }
}

/// fsyncs a directory, making the entries created in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
