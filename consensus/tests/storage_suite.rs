//! openraft's own storage test suite against the file store: every check
//! openraft makes of a `RaftLogStorage` and `RaftStateMachine`, each on a
//! fresh store in its own temporary directory.

use openraft::testing::{StoreBuilder, Suite};
use steep_repl_consensus::types::StorageError;
use steep_repl_consensus::{LogStore, StateMachineStore, TypeConfig};
use tempfile::TempDir;

/// Opens a fresh store per test; the `TempDir` is the guard openraft keeps
/// alive while the test runs and drops afterwards.
struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FreshStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory for the store");
        let (_identity, log, sm) =
            steep_repl_consensus::open(dir.path()).expect("a fresh store opens");
        Ok((dir, log, sm))
    }
}

// A plain #[test]: the suite runs each case on its own tokio runtime.
#[test]
fn the_file_store_passes_openrafts_storage_suite() {
    Suite::test_all(FreshStore).expect("every case of the suite passes");
}
