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

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::SqsMessage;

    use super::*;

    #[test]
    fn records_keep_their_ids_and_a_missing_body_becomes_empty() {
        let mut with_body = SqsMessage::default();
        with_body.message_id = Some("m-1".into());
        with_body.body = Some("{}".into());
        let mut without_body = SqsMessage::default();
        without_body.message_id = Some("m-2".into());
        let mut event = SqsEvent::default();
        event.records = vec![with_body, without_body];

        let messages = messages(event);

        let pairs: Vec<_> = messages
            .iter()
            .map(|m| (m.id.as_str(), m.body.as_str()))
            .collect();
        assert_eq!(pairs, [("m-1", "{}"), ("m-2", "")]);
    }

    #[test]
    fn failures_are_named_by_message_id_in_lambdas_format() {
        let response = batch_response(vec!["m-2".into()]);
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]})
        );
    }
}
