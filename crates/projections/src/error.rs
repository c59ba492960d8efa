//! The projections' one error type.
//!
//! A projection is a cache of the feed: every fault here is recoverable by `rebuild`, except the
//! store's own faults, which are passed through unchanged so that the operator sees the store's
//! advice (run `lienthong verify`, restore a backup ...).

/// Why a projection call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event store failed (I/O, corruption, closed): see its message.
    #[error(transparent)]
    Store(#[from] lienthong_engine::store::Error),
    /// The projections' own sled database failed.
    #[error(
        "projections database error: {0}; if it persists, delete the projections directory and run `lienthong projections rebuild`"
    )]
    Db(String),
    /// A projection record cannot be read back. Projections are rebuildable: run `rebuild`.
    #[error("projection record `{key}` is damaged ({reason}); run `lienthong projections rebuild`")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The feed broke an invariant the fold relies on (positions increase, streams hold every
    /// event the feed names).
    #[error("feed inconsistency at position {position}: {reason}; run `lienthong verify`")]
    Feed {
        /// The feed position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint is past the store's head: the store was replaced or restored from an older
    /// backup.
    #[error(
        "projection checkpoint {checkpoint} is ahead of the store's head {head}: the store was replaced; run `lienthong projections rebuild`"
    )]
    AheadOfStore {
        /// The projection's checkpoint.
        checkpoint: u64,
        /// The store's last position.
        head: u64,
    },
    /// A query needs a calendar the loaded workflows do not have.
    #[error(
        "calendar `{0}` is not loaded: pass the workflows directory that defines it (--workflows)"
    )]
    UnknownCalendar(String),
    /// A working-time computation failed (typically a date beyond the calendar's coverage).
    #[error("working time for dossier {dossier}: {source}")]
    Calendar {
        /// The dossier code.
        dossier: String,
        /// The calendar's error (boxed: it is large, and rare).
        source: Box<lienthong_calendar::Error>,
    },
    /// A query argument is not valid.
    #[error("invalid query: {0}")]
    Query(String),
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Db(e.to_string())
    }
}
