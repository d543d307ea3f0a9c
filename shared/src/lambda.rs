//! One Lambda binary, several event sources.
//!
//! A function that serves HTTP routes and also consumes a queue or a schedule
//! (voice, recording-offload) receives raw JSON events of different shapes.
//! `lambda_http::run` only understands HTTP, so such a `main` runs
//! `lambda_runtime` with [`Event::classify`] and answers each kind in the
//! shape its source expects: an API Gateway v2 response, an SQS partial batch
//! response, or plain JSON.

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_http::{Body, Request, Response};
use serde_json::Value;

/// What invoked the function.
#[derive(Debug)]
pub enum Event {
    /// An API Gateway HTTP API (payload v2) request.
    Http(Box<Request>),
    /// A batch from an SQS event source mapping.
    Sqs(SqsEvent),
    /// An EventBridge scheduled event; the rule's ARN is in `resources`.
    Schedule { rule: Option<String> },
    /// Anything else: a direct invocation with an operator's payload.
    Payload(Value),
}

/// An event that looked like a known source but did not parse as one.
#[derive(Debug, thiserror::Error)]
#[error("malformed {source_kind} event: {error}")]
pub struct MalformedEvent {
    source_kind: &'static str,
    error: serde_json::Error,
}

impl Event {
    /// Tells the sources apart by the fields only they carry.
    pub fn classify(event: Value) -> Result<Self, MalformedEvent> {
        // Payload format 2.0 only: the template's HTTP API sends nothing else.
        let is_http = event
            .get("requestContext")
            .is_some_and(|c| c.get("http").is_some())
            && event.get("version").and_then(Value::as_str) == Some("2.0");
        if is_http {
            return lambda_http::request::from_str(&event.to_string())
                .map(|r| Self::Http(Box::new(r)))
                .map_err(|error| MalformedEvent {
                    source_kind: "API Gateway",
                    error,
                });
        }
        let is_sqs = event
            .get("Records")
            .and_then(Value::as_array)
            .is_some_and(|records| {
                !records.is_empty()
                    && records
                        .iter()
                        .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
            });
        if is_sqs {
            return serde_json::from_value(event)
                .map(Self::Sqs)
                .map_err(|error| MalformedEvent {
                    source_kind: "SQS",
                    error,
                });
        }
        let is_schedule = event.get("source").and_then(Value::as_str) == Some("aws.events")
            && event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
        if is_schedule {
            let rule = event
                .get("resources")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_str)
                .map(str::to_owned);
            return Ok(Self::Schedule { rule });
        }
        Ok(Self::Payload(event))
    }
}

/// The API Gateway v2 response for an HTTP event, as JSON.
pub fn http_response(response: Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    match body {
        Body::Empty => {}
        Body::Text(t) => out.body = Some(Body::Text(t)),
        Body::Binary(b) => {
            out.is_base64_encoded = true;
            out.body = Some(Body::Binary(b));
        }
        _ => {}
    }
    serde_json::to_value(out).unwrap_or(Value::Null)
}

/// The SQS partial batch response: the messages listed are redelivered, the
/// others are deleted from the queue.
pub fn sqs_batch_response(failed_message_ids: impl IntoIterator<Item = String>) -> Value {
    serde_json::to_value(sqs_batch(failed_message_ids)).unwrap_or(Value::Null)
}

/// [`sqs_batch_response`], typed.
pub fn sqs_batch(failed_message_ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed_message_ids
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn http_events_are_told_apart() {
        let ev = json!({
            "version": "2.0", "routeKey": "POST /twilio/voice/inbound",
            "rawPath": "/twilio/voice/inbound", "rawQueryString": "",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
            "requestContext": {"http": {"method": "POST", "path": "/twilio/voice/inbound",
                "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "x"},
                "accountId": "1", "apiId": "a", "domainName": "d", "domainPrefix": "d",
                "requestId": "r", "routeKey": "POST /twilio/voice/inbound", "stage": "$default",
                "time": "t", "timeEpoch": 0},
            "body": "A=1", "isBase64Encoded": false
        });
        match Event::classify(ev) {
            Ok(Event::Http(r)) => assert_eq!(r.uri().path(), "/twilio/voice/inbound"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sqs_schedule_and_payload_events_are_told_apart() {
        let sqs = json!({"Records": [{"messageId": "m1", "body": "{}", "eventSource": "aws:sqs"}]});
        assert!(matches!(Event::classify(sqs), Ok(Event::Sqs(e)) if e.records.len() == 1));
        let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event",
            "resources": ["arn:aws:events:us-east-1:1:rule/tick"], "detail": {}});
        assert!(matches!(Event::classify(schedule),
            Ok(Event::Schedule { rule: Some(r) }) if r.ends_with("rule/tick")));
        let payload = json!({"migrate": {"dryRun": true}});
        assert!(matches!(Event::classify(payload), Ok(Event::Payload(_))));
        // Near misses are payloads too, for the function to refuse.
        for other in [
            json!({}),
            json!({"Records": []}),
            json!({"Records": [{"eventSource": "aws:s3"}]}),
            json!({"Records": [{"eventSource": "aws:sqs"}, {"eventSource": "aws:s3"}]}),
            json!([1, 2]),
            json!({"version": "1.0", "requestContext": {"http": {}}}),
            json!({"source": "aws.events", "detail-type": "EC2 State Change"}),
        ] {
            assert!(
                matches!(Event::classify(other.clone()), Ok(Event::Payload(_))),
                "{other}"
            );
        }
    }

    #[test]
    fn responses_have_the_shapes_their_sources_expect() {
        let resp = Response::builder()
            .status(204)
            .body(Body::Empty)
            .expect("response");
        let v = http_response(resp);
        assert_eq!(v["statusCode"], 204);
        let v = sqs_batch_response(["m2".to_owned()]);
        assert_eq!(v, json!({"batchItemFailures": [{"itemIdentifier": "m2"}]}));
    }
}
