//! `Consumer::ack_all` on the embedded backend: a message of another
//! consumer is refused with `Error::ForeignMessage` and nothing of the call
//! is acked.

use std::time::Duration;

use pubsub_core::{ConsumerOptions, Error, InitialPosition, OutgoingMessage, PubSubBackend};
use pubsub_embedded::EmbeddedBackend;

#[tokio::test]
async fn a_foreign_message_fails_the_call_and_nothing_is_acked() {
    let backend = EmbeddedBackend::memory();
    let topic = "q1/test/ackall/foreign".parse().unwrap();
    let opts = || ConsumerOptions::default().with_initial_position(InitialPosition::Earliest);
    let mine = backend.create_consumer(&topic, "mine", opts()).await.unwrap();
    let theirs = backend.create_consumer(&topic, "theirs", opts()).await.unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(OutgoingMessage::new("one")).await.unwrap();
    let a = mine.receive_timeout(Duration::from_secs(5)).await.unwrap();
    let b = theirs.receive_timeout(Duration::from_secs(5)).await.unwrap();

    match mine.ack_all(&[a.clone(), b.clone()]).await {
        Err(Error::ForeignMessage { id }) => assert_eq!(&id, b.id()),
        other => panic!("expected ForeignMessage, got {other:?}"),
    }
    // Neither was acked: both come back to new consumers of their subscriptions.
    mine.close().await.unwrap();
    theirs.close().await.unwrap();
    for sub in ["mine", "theirs"] {
        let c = backend.create_consumer(&topic, sub, opts()).await.unwrap();
        let again = c.receive_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(again.payload().as_ref(), b"one", "{sub}");
        c.ack_all(std::slice::from_ref(&again)).await.unwrap();
        c.close().await.unwrap();
    }
    backend.close().await.unwrap();
}
