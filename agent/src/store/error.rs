//! What can go wrong in the store, each with its cause kept as the error's source.

/// A store failure. The redb variants keep redb's error as their source (and say
/// "store: ..." as the single `Db` variant did); which step failed is in the log line
/// of whoever reports it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening store {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("store: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("store: {0}")]
    Table(#[from] redb::TableError),
    #[error("store: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("store: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("store: encoding a record: {0}")]
    Encode(#[from] postcard::Error),
    #[error("store: starting the {thread} writer: {source}")]
    Spawn {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("store: the store has no current generation")]
    NoGeneration,
    #[error("store: record of {id} vanished during a scan")]
    Vanished { id: String },
    #[error("store record for {id} is corrupt: {message}")]
    Corrupt { id: String, message: String },
    #[error("the store writer has stopped")]
    Stopped,
    #[error("the store is being reopened after failed writes")]
    Unavailable,
}
