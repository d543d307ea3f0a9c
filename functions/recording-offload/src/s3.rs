//! The S3 side of an offload: a streaming multipart upload that counts and
//! checksums the bytes as they pass, and the verification of the stored copy.
//!
//! The checksum is CRC64/NVME (base64 of the big-endian value, as S3 spells
//! it): S3 computes it natively as a *full-object* checksum of a multipart
//! upload (it composes from the parts, so AWS can report it without reading
//! the object again), the SDK's implementation is SIMD-fast, and a 64-bit CRC
//! catches every burst error up to 64 bits. It guards against accidental
//! corruption in transit or storage, which is the risk here; nobody hostile
//! sits between Twilio, this function and the bucket.

use std::collections::HashMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
    ServerSideEncryption,
};
use aws_smithy_checksums::ChecksumAlgorithm as Algo;
use aws_smithy_checksums::http::HttpChecksum;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream::FuturesUnordered};

use crate::config::{Encryption, OffloadConfig, Verification};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("S3 {op}: {message}")]
    S3 { op: &'static str, message: String },
    #[error("reading the media: {0}")]
    Source(String),
    #[error("the media ended after {got} of the {declared} bytes Twilio declared")]
    Truncated { got: u64, declared: u64 },
    #[error("the S3 copy does not match: {0}")]
    Mismatch(String),
}

fn s3_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    op: &'static str,
) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, R>) -> CopyError {
    move |e| CopyError::S3 {
        op,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// A running CRC64/NVME and byte count.
pub struct Digest {
    crc: Box<dyn HttpChecksum>,
    bytes: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Self {
            crc: Algo::Crc64Nvme.into_impl(),
            bytes: 0,
        }
    }
}

impl Digest {
    pub fn update(&mut self, chunk: &[u8]) {
        self.crc.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    pub fn finish(self) -> Streamed {
        Streamed {
            bytes: self.bytes,
            crc64nvme: base64::engine::general_purpose::STANDARD.encode(self.crc.finalize()),
        }
    }
}

/// What passed through: the byte count and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    pub bytes: u64,
    /// Base64, as in `x-amz-checksum-crc64nvme`.
    pub crc64nvme: String,
}

/// Hashes a byte stream without keeping it.
pub async fn digest_stream<E: std::fmt::Display>(
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
) -> Result<Streamed, String> {
    let mut d = Digest::default();
    while let Some(chunk) = body.next().await {
        d.update(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(d.finish())
}

/// The metadata stored with every recording object.
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    pub pairs: Vec<(&'static str, String)>,
}

/// Whether an object exists at `key` (and its size).
pub async fn head_size(s3: &Client, bucket: &str, key: &str) -> Result<Option<u64>, CopyError> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(
            out.content_length
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
        )),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(s3_err("HeadObject")(e)),
    }
}

/// Starts a multipart upload with the metadata and encryption; returns its id.
pub async fn create_upload(
    s3: &Client,
    config: &OffloadConfig,
    key: &str,
    content_type: &str,
    meta: &ObjectMeta,
) -> Result<String, CopyError> {
    let metadata: HashMap<String, String> = meta
        .pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let mut req = s3
        .create_multipart_upload()
        .bucket(&config.bucket)
        .key(key)
        .content_type(content_type)
        .set_metadata(Some(metadata));
    req = match &config.encryption {
        Encryption::Aes256 => req.server_side_encryption(ServerSideEncryption::Aes256),
        Encryption::Kms(arn) => req
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(arn),
    };
    if config.verification == Verification::S3Checksum {
        req = req
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject);
    }
    let out = req.send().await.map_err(s3_err("CreateMultipartUpload"))?;
    out.upload_id.ok_or_else(|| CopyError::S3 {
        op: "CreateMultipartUpload",
        message: "no upload id".into(),
    })
}

/// Aborts a multipart upload; one that is already gone counts as aborted.
pub async fn abort_upload(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), CopyError> {
    match s3
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                == Some("NoSuchUpload") =>
        {
            Ok(())
        }
        Err(e) => Err(s3_err("AbortMultipartUpload")(e)),
    }
}

fn crc_b64(data: &[u8]) -> String {
    let mut d = Digest::default();
    d.update(data);
    d.finish().crc64nvme
}

async fn upload_part(
    s3: Client,
    config: &OffloadConfig,
    key: &str,
    upload_id: &str,
    number: i32,
    data: Bytes,
) -> Result<CompletedPart, CopyError> {
    let mut req = s3
        .upload_part()
        .bucket(&config.bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number);
    let part_crc = (config.verification == Verification::S3Checksum).then(|| crc_b64(&data));
    if let Some(c) = &part_crc {
        req = req.checksum_crc64_nvme(c);
    }
    let out = req
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(s3_err("UploadPart"))?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag)
        .set_checksum_crc64_nvme(part_crc)
        .build())
}

/// Streams `body` into the multipart upload `upload_id` and completes it.
/// At most `parts_in_flight` parts are being sent while the next one fills,
/// so memory stays bounded by part size x (parts in flight + 1) whatever the
/// recording's length. The caller aborts the upload on error.
pub async fn upload_stream<E: std::fmt::Display>(
    s3: &Client,
    config: &OffloadConfig,
    key: &str,
    upload_id: &str,
    declared: Option<u64>,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
) -> Result<Streamed, CopyError> {
    let mut digest = Digest::default();
    let mut buf = BytesMut::with_capacity(config.part_size);
    let mut in_flight = FuturesUnordered::new();
    let mut done: Vec<CompletedPart> = Vec::new();
    let mut next_part = 1i32;
    let mut finished = false;
    while !finished {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| CopyError::Source(e.to_string()))?;
                digest.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            None => finished = true,
        }
        // Full parts go out as soon as they are full; the last (or only)
        // part may be smaller.
        while buf.len() >= config.part_size || (finished && (!buf.is_empty() || next_part == 1)) {
            let take = buf.len().min(config.part_size);
            let data = buf.split_to(take).freeze();
            if in_flight.len() >= config.parts_in_flight {
                if let Some(r) = in_flight.next().await {
                    done.push(r?);
                }
            }
            in_flight.push(upload_part(
                s3.clone(),
                config,
                key,
                upload_id,
                next_part,
                data,
            ));
            next_part += 1;
            if finished && buf.is_empty() {
                break;
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        done.push(r?);
    }
    let streamed = digest.finish();
    if let Some(declared) = declared {
        if streamed.bytes != declared {
            return Err(CopyError::Truncated {
                got: streamed.bytes,
                declared,
            });
        }
    }
    done.sort_by_key(|p| p.part_number);
    let mut req = s3
        .complete_multipart_upload()
        .bucket(&config.bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        );
    if config.verification == Verification::S3Checksum {
        req = req
            .checksum_crc64_nvme(&streamed.crc64nvme)
            .checksum_type(ChecksumType::FullObject);
    }
    req.send()
        .await
        .map_err(s3_err("CompleteMultipartUpload"))?;
    Ok(streamed)
}

/// What S3 says about a stored object, for [`compare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub bytes: u64,
    /// The full-object CRC64/NVME, when S3 reported one of that type.
    pub crc64nvme: Option<String>,
    pub checksum_type: Option<String>,
}

/// The copy is good only if S3's size and full-object checksum both equal
/// what streamed through. A composite (per-part) checksum is not a checksum
/// of the data and is refused.
pub fn compare(expected: &Streamed, reported: &Reported) -> Result<(), CopyError> {
    if reported.bytes != expected.bytes {
        return Err(CopyError::Mismatch(format!(
            "{} bytes stored, {} streamed",
            reported.bytes, expected.bytes
        )));
    }
    match (&reported.crc64nvme, reported.checksum_type.as_deref()) {
        (Some(c), Some("FULL_OBJECT") | None) if *c == expected.crc64nvme => Ok(()),
        (Some(c), Some("FULL_OBJECT") | None) => Err(CopyError::Mismatch(format!(
            "CRC64NVME {c} stored, {} streamed",
            expected.crc64nvme
        ))),
        (Some(_), Some(other)) => Err(CopyError::Mismatch(format!(
            "S3 reported a {other} checksum, not a full-object one"
        ))),
        (None, _) => Err(CopyError::Mismatch(
            "S3 reported no CRC64NVME checksum".into(),
        )),
    }
}

/// Checks the stored object against what streamed through, per the
/// configured [`Verification`].
pub async fn verify(
    s3: &Client,
    config: &OffloadConfig,
    key: &str,
    expected: &Streamed,
) -> Result<(), CopyError> {
    let reported = match config.verification {
        Verification::ReadBack => {
            let out = s3
                .get_object()
                .bucket(&config.bucket)
                .key(key)
                .send()
                .await
                .map_err(s3_err("GetObject"))?;
            let mut body = out.body;
            let mut d = Digest::default();
            while let Some(chunk) = body.try_next().await.map_err(|e| CopyError::S3 {
                op: "GetObject",
                message: e.to_string(),
            })? {
                d.update(&chunk);
            }
            let got = d.finish();
            Reported {
                bytes: got.bytes,
                crc64nvme: Some(got.crc64nvme),
                checksum_type: None,
            }
        }
        Verification::S3Checksum => {
            let out = s3
                .head_object()
                .bucket(&config.bucket)
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .map_err(s3_err("HeadObject"))?;
            Reported {
                bytes: out
                    .content_length
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                crc64nvme: out.checksum_crc64_nvme,
                checksum_type: out.checksum_type.map(|t| t.as_str().to_owned()),
            }
        }
    };
    compare(expected, &reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(data: &[u8]) -> Streamed {
        let mut d = Digest::default();
        d.update(data);
        d.finish()
    }

    #[test]
    fn crc64nvme_matches_the_reference_value() {
        // The CRC-64/NVME check value of "123456789" is 0xAE8B14860A799888.
        let s = streamed(b"123456789");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s.crc64nvme)
            .unwrap();
        assert_eq!(raw, 0xAE8B_1486_0A79_9888u64.to_be_bytes());
        assert_eq!(s.bytes, 9);
        // Chunking does not change it.
        let mut d = Digest::default();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finish(), s);
    }

    #[test]
    fn only_an_equal_size_and_full_object_checksum_verify() {
        let e = streamed(b"recording bytes");
        let ok = Reported {
            bytes: e.bytes,
            crc64nvme: Some(e.crc64nvme.clone()),
            checksum_type: Some("FULL_OBJECT".into()),
        };
        compare(&e, &ok).unwrap();
        let corrupted = streamed(b"recording bytez");
        for bad in [
            Reported {
                bytes: e.bytes - 1,
                ..ok.clone()
            },
            Reported {
                crc64nvme: Some(corrupted.crc64nvme.clone()),
                ..ok.clone()
            },
            Reported {
                checksum_type: Some("COMPOSITE".into()),
                ..ok.clone()
            },
            Reported {
                crc64nvme: None,
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(compare(&e, &bad), Err(CopyError::Mismatch(_))),
                "{bad:?}"
            );
        }
    }
}
