//! SQS events in, partial batch failures out.
//!
//! Lambda deletes every message of a batch except those named in
//! `batchItemFailures`, which come back after their visibility timeout.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_aws::coordinator_batch::QueueMessage;

/// The messages of an SQS event. A record without a body keeps an empty one,
/// so it is treated (and dead-lettered) as malformed rather than lost.
pub fn messages(event: SqsEvent) -> Vec<QueueMessage> {
    event
        .records
        .into_iter()
        .map(|record| {
            if record.message_id.is_none() {
                tracing::warn!("SQS record without a message id");
            }
            QueueMessage {
                // An empty identifier in the response makes Lambda retry the
                // whole batch, the safe outcome if such a record fails.
                id: record.message_id.unwrap_or_default(),
                body: record.body.unwrap_or_default(),
            }
        })
        .collect()
}

/// The response naming the messages to deliver again.
pub fn batch_response(failed: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.set_failures(failed);
    response
}
