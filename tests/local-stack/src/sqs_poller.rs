//! The SQS event source mapping, locally: receive a batch, invoke the function
//! with an SQS event, delete what succeeded (honouring `batchItemFailures`),
//! leave the rest to the queue's visibility timeout and redrive policy.

use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use axum::body::Bytes;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::runtime::{InvokeError, RuntimeApi};
use crate::template::SqsEventSpec;

/// Builds the Lambda SQS event for a batch of messages.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message], queue_arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut attrs = Map::new();
            if let Some(a) = &m.attributes {
                for (k, v) in a {
                    attrs.insert(k.as_str().to_string(), json!(v));
                }
            }
            let mut mattrs = Map::new();
            if let Some(a) = &m.message_attributes {
                for (k, v) in a {
                    let mut o = Map::new();
                    o.insert("dataType".into(), json!(v.data_type));
                    if let Some(s) = &v.string_value {
                        o.insert("stringValue".into(), json!(s));
                    }
                    if let Some(b) = &v.binary_value {
                        o.insert(
                            "binaryValue".into(),
                            json!(base64::engine::general_purpose::STANDARD.encode(b.as_ref())),
                        );
                    }
                    o.insert("stringListValues".into(), json!([]));
                    o.insert("binaryListValues".into(), json!([]));
                    mattrs.insert(k.clone(), Value::Object(o));
                }
            }
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body.clone().unwrap_or_default(),
                "attributes": attrs,
                "messageAttributes": mattrs,
                "md5OfBody": m.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Message ids reported failed in an `SQSBatchResponse`; `None` if the
/// response is not one (then the whole batch succeeded).
pub fn batch_item_failures(resp: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(resp).ok()?;
    let items = v.get("batchItemFailures")?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|i| i.get("itemIdentifier")?.as_str().map(str::to_string))
            .collect(),
    )
}

/// Polls forever (until the task is aborted).
pub async fn poll(
    client: aws_sdk_sqs::Client,
    api: RuntimeApi,
    queue_url: String,
    queue_arn: String,
    spec: SqsEventSpec,
    region: String,
) {
    let batch = spec.batch_size.clamp(1, 10) as i32;
    loop {
        let received = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(batch)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("sqs poller {}: receive: {e:?}", spec.event);
                // Back off while the queue is unreachable (not a readiness wait).
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let ev = sqs_event(&messages, &queue_arn, &region);
        let failed: Vec<String> = match api.invoke(Bytes::from(ev.to_string()), None).await {
            Ok(resp) if spec.report_batch_item_failures => {
                batch_item_failures(&resp).unwrap_or_default()
            }
            Ok(_) => Vec::new(),
            Err(InvokeError::Function(_) | InvokeError::Timeout | InvokeError::Unavailable) => {
                // Whole batch failed: leave every message for redelivery.
                continue;
            }
        };
        for m in &messages {
            let id = m.message_id.clone().unwrap_or_default();
            if failed.contains(&id) {
                continue;
            }
            if let Some(h) = &m.receipt_handle {
                if let Err(e) = client
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(h)
                    .send()
                    .await
                {
                    tracing::warn!("sqs poller {}: delete {id}: {e:?}", spec.event);
                }
            }
        }
    }
}

/// Reads a queue's attribute (tests and diagnostics).
pub async fn queue_attribute(
    client: &aws_sdk_sqs::Client,
    url: &str,
    name: QueueAttributeName,
) -> Option<String> {
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .ok()?
        .attributes?
        .get(&name)
        .cloned()
}
