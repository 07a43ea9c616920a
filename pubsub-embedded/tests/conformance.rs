//! The conformance suite on the embedded backend, in both modes.

use std::sync::Arc;

use pubsub_core::{Error, PubSubBackend};
use pubsub_embedded::{EmbeddedBackend, EmbeddedConfig};

mod memory {
    use super::*;

    pubsub_core::conformance_tests!(
        in_process || async { Ok::<_, Error>(Arc::new(EmbeddedBackend::memory()) as Arc<dyn PubSubBackend>) }
    );
}

mod data_dir {
    use super::*;

    /// A fresh data directory per case, under cargo's per-target temp dir.
    async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("embedded-conformance");
        std::fs::create_dir_all(&root).expect("temp root");
        let dir = tempfile::tempdir_in(root).expect("temp dir").keep();
        Ok(Arc::new(EmbeddedBackend::open(EmbeddedConfig::data_dir(dir))?))
    }

    pubsub_core::conformance_tests!(in_process backend);
}
