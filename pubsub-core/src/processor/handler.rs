//! What a service author writes: a handler.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;

use crate::error::Error;
use crate::message::Message;

/// Why a handler failed, and so what happens to the message.
#[derive(Debug)]
pub enum HandlerError {
    /// Try again later (nack with backoff); dead-lettered after `max_attempts`.
    Retry(String),
    /// Never retry (a poison message): straight to the dead-letter topic.
    Fatal(String),
}

impl HandlerError {
    /// A retriable failure.
    pub fn retry(why: impl fmt::Display) -> Self {
        HandlerError::Retry(why.to_string())
    }

    /// A failure no retry can fix.
    pub fn fatal(why: impl fmt::Display) -> Self {
        HandlerError::Fatal(why.to_string())
    }

    /// The reason, for the dead letter.
    pub fn reason(&self) -> &str {
        match self {
            HandlerError::Retry(r) | HandlerError::Fatal(r) => r,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Retry(r) => write!(f, "retriable: {r}"),
            HandlerError::Fatal(r) => write!(f, "fatal: {r}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// SDK errors map by kind: a payload that does not decode is poison
/// (fatal); everything else is worth a retry.
impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        match e {
            Error::Codec { .. } | Error::InvalidProperty { .. } | Error::PayloadTooLarge { .. } => {
                HandlerError::Fatal(e.to_string())
            }
            other => HandlerError::Retry(other.to_string()),
        }
    }
}

/// Handles one message. Implemented for every
/// `Fn(Message) -> impl Future<Output = Result<(), HandlerError>>`.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Processes the message; `Ok` acks it.
    async fn handle(&self, message: Message) -> Result<(), HandlerError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, message: Message) -> Result<(), HandlerError> {
        (self)(message).await
    }
}
