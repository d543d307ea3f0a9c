//! A minimal Lambda for the local stack's own tests: speaks the Runtime API
//! directly (blocking HTTP over std's TcpStream, no dependencies) and answers
//! every event with an API Gateway v2 response echoing the event and selected
//! environment variables.
//!
//! Special paths: `/echo/error` reports an invocation error, `/echo/sleep`
//! never answers (timeout), `/echo/exit` exits (crash).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

fn request(api: &str, method: &str, path: &str, body: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(api).expect("connect runtime api");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut headers = Vec::new();
    let mut len = None;
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            if k == "content-length" {
                len = v.parse().ok();
            }
            if k == "transfer-encoding" && v.contains("chunked") {
                chunked = true;
            }
            headers.push((k, v));
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body).unwrap();
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (headers, body)
}

fn main() {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API");
    loop {
        let (headers, event) = request(&api, "GET", "/2018-06-01/runtime/invocation/next", b"");
        let get = |k: &str| {
            headers
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let id = get("lambda-runtime-aws-request-id");
        let event: serde_json::Value = serde_json::from_slice(&event).unwrap_or_default();
        let path = event["rawPath"].as_str().unwrap_or_default().to_string();
        match path.as_str() {
            "/echo/exit" => std::process::exit(3),
            "/echo/sleep" => continue, // never answers this request
            "/echo/error" => {
                let err = serde_json::json!({"errorType": "Echo", "errorMessage": "asked to fail"});
                request(
                    &api,
                    "POST",
                    &format!("/2018-06-01/runtime/invocation/{id}/error"),
                    err.to_string().as_bytes(),
                );
                continue;
            }
            _ => {}
        }
        let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
            .filter(|(k, _)| !matches!(k.as_str(), "PATH" | "HOME" | "TMPDIR" | "LANG"))
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let body = serde_json::json!({
            "event": event,
            "env": env,
            "deadlineMs": get("lambda-runtime-deadline-ms"),
            "functionArn": get("lambda-runtime-invoked-function-arn"),
            "traceId": get("lambda-runtime-trace-id"),
        });
        let resp = if event.get("Records").is_some() {
            // SQS: fail the messages whose body is "fail".
            let failures: Vec<serde_json::Value> = event["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["body"] == "fail")
                .map(|r| serde_json::json!({"itemIdentifier": r["messageId"]}))
                .collect();
            serde_json::json!({"batchItemFailures": failures})
        } else if event.get("rawPath").is_some() {
            serde_json::json!({
                "statusCode": 200,
                "headers": {"content-type": "application/json", "x-echo": "1"},
                "cookies": ["echo=1; Path=/"],
                "body": body.to_string(),
                "isBase64Encoded": false,
            })
        } else {
            body
        };
        request(
            &api,
            "POST",
            &format!("/2018-06-01/runtime/invocation/{id}/response"),
            resp.to_string().as_bytes(),
        );
    }
}
