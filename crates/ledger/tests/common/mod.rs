//! What the ledger's integration tests share: one fresh store of each kind per test.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use switchyard_ledger::store::{EmbeddedStore, MongoStore, Store};

/// A name no other test (or earlier run) uses: `prefix_<ulid>` in lower case.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

pub async fn embedded() -> EmbeddedStore {
    // In memory: nothing left behind; the file, WAL and a second reader are exercised by the
    // CLI's `jobs` test.
    let store = EmbeddedStore::in_memory().unwrap();
    store.init().await.unwrap();
    store
}

/// A MongoDB store on its own database of the local FerretDB.
pub async fn mongo() -> MongoStore {
    let uri = std::env::var("SWITCHYARD_MONGO_URI").unwrap_or_else(|_| {
        panic!(
            "SWITCHYARD_MONGO_URI is not set: run `deploy/local/up.sh && . deploy/local/env.sh` \
             (or scripts/test.sh)"
        )
    });
    let store = MongoStore::connect(&uri, &unique("ledger")).await.unwrap();
    store.init().await.unwrap();
    store
}
