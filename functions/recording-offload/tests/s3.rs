//! The streaming multipart upload and its verification against the S3
//! emulator (s3s-fs): chunks that straddle part boundaries in every way
//! still give an object equal to the input, with the running CRC64/NVME
//! equal to the object's; a short body is refused; a changed object fails
//! the read-back. (s3s-fs has no GetObjectAttributes, so the part sizes
//! themselves are not observable here; `s3::tests` covers the buffers.)

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use recording_offload::OffloadConfig;
use recording_offload::config::{Encryption, Verification};
use recording_offload::s3::{self, CopyError, Digest, ObjectMeta};
use shared::twilio::rest::MediaFormat;

const MIB: usize = 1024 * 1024;

async fn setup(verification: Verification) -> (aws_sdk_s3::Client, OffloadConfig) {
    let endpoints = local_stack::testing::endpoints().await;
    let client = endpoints.s3_client();
    let bucket = format!("s3t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let config = OffloadConfig {
        bucket,
        prefix: "recordings/".into(),
        format: MediaFormat::Wav,
        queue_url: String::new(),
        encryption: Encryption::Aes256,
        verification,
        part_size: 5 * MIB,
        parts_in_flight: 2,
        concurrency: 1,
        lease: Duration::from_secs(60),
        retry_delay: Duration::from_secs(1),
        playback_ttl: Duration::from_secs(60),
    };
    (client, config)
}

/// Deterministic bytes that differ from part to part.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// `data` as a stream of chunks of uneven sizes.
fn chunked(data: &[u8], sizes: &[usize]) -> Vec<Result<Bytes, std::io::Error>> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - pos);
        out.push(Ok(Bytes::copy_from_slice(&data[pos..pos + n])));
        pos += n;
        i += 1;
    }
    out
}

async fn stored(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get object")
        .body
        .collect()
        .await
        .expect("body")
        .to_vec()
}

async fn copy(
    client: &aws_sdk_s3::Client,
    config: &OffloadConfig,
    key: &str,
    input: &[u8],
    sizes: &[usize],
    declared: Option<u64>,
) -> Result<s3::Streamed, CopyError> {
    let upload = s3::create_upload(client, config, key, "audio/x-wav", &ObjectMeta::default())
        .await
        .expect("create upload");
    let result = s3::upload_stream(
        client,
        config,
        key,
        &upload,
        declared,
        futures::stream::iter(chunked(input, sizes)),
    )
    .await;
    if result.is_err() {
        s3::abort_upload(client, &config.bucket, key, &upload)
            .await
            .expect("abort");
    }
    result
}

#[tokio::test]
async fn chunks_straddling_parts_give_the_same_object() {
    let (client, config) = setup(Verification::ReadBack).await;
    // Chunk sizes that straddle part boundaries in every way; lengths: one
    // byte, exactly one part, exactly two parts, two parts and a bit.
    for (len, sizes) in [
        (1, &[64 * 1024][..]),
        (5 * MIB, &[1 << 20, 3, 65_537][..]),
        (10 * MIB, &[5 * MIB + 1][..]),
        (10 * MIB + 3, &[16_384, 100_003, 7][..]),
        (11 * MIB + 17, &[12 * MIB][..]),
    ] {
        let key = format!("recordings/t/{len}.wav");
        let input = data(len);
        let streamed = copy(&client, &config, &key, &input, sizes, Some(len as u64))
            .await
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        let mut d = Digest::default();
        d.update(&input);
        assert_eq!(streamed, d.finish(), "{len} bytes");
        assert!(
            stored(&client, &config.bucket, &key).await == input,
            "{len} bytes: the object differs from the input"
        );
        s3::verify(&client, &config, &key, &streamed)
            .await
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
    }
}

#[tokio::test]
async fn a_body_shorter_than_declared_is_refused_and_nothing_is_stored() {
    let (client, config) = setup(Verification::ReadBack).await;
    let input = data(6 * MIB);
    let err = copy(
        &client,
        &config,
        "recordings/t/short.wav",
        &input,
        &[65_536],
        Some(7 * MIB as u64),
    )
    .await
    .expect_err("a short body must fail");
    assert!(matches!(err, CopyError::Truncated { .. }), "{err}");
    assert!(
        s3::head_size(&client, &config.bucket, "recordings/t/short.wav")
            .await
            .expect("head")
            .is_none()
    );
}

#[tokio::test]
async fn a_changed_object_fails_the_read_back() {
    let (client, config) = setup(Verification::ReadBack).await;
    let key = "recordings/t/changed.wav";
    let input = data(5 * MIB + 5);
    let streamed = copy(&client, &config, key, &input, &[65_536], None)
        .await
        .expect("copy");
    let mut corrupted = input.clone();
    corrupted[5 * MIB + 1] ^= 1;
    client
        .put_object()
        .bucket(&config.bucket)
        .key(key)
        .body(ByteStream::from(corrupted))
        .send()
        .await
        .expect("overwrite");
    assert!(matches!(
        s3::verify(&client, &config, key, &streamed).await,
        Err(CopyError::Mismatch(_))
    ));
}
