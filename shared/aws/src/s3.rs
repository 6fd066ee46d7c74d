//! Artifact objects in S3: presigned GET (devices 24 h, users 15 min) and PUT (direct upload)
//! links, streaming multipart uploads (the management upload parses while it uploads), reads
//! and deletes; small whole-object writes and prefix listings (deviceconnect's session
//! recordings live in the same bucket under `deviceconnect/recordings/`). Path-style addressing
//! when an endpoint override is set (emulators).

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};

/// S3 multipart parts must be at least 5 MiB (except the last).
const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("s3: {0}")]
pub struct S3Error(pub String);

fn err(e: impl std::fmt::Display) -> S3Error {
    S3Error(e.to_string())
}

/// A presigned link and its expiry (RFC 3339).
#[derive(Debug, Clone)]
pub struct Link {
    pub uri: String,
    pub expire: String,
}

#[derive(Clone, Debug)]
pub struct ArtifactStorage {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl ArtifactStorage {
    pub fn new(sdk: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let emulated = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(emulated)
            .build();
        ArtifactStorage {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: bucket.into(),
        }
    }

    /// The object key of an artifact (upstream: `<tenant>/<id>`, just `<id>` without tenant).
    pub fn key(tenant: &str, id: &str) -> String {
        if tenant.is_empty() {
            id.to_owned()
        } else {
            format!("{tenant}/{id}")
        }
    }

    /// Where a direct upload's presigned PUT writes (`uploads/<artifact key>`): never the
    /// artifact's own key, so the link, valid for its whole lifetime, cannot replace bytes
    /// that `process-artifact` verified. The bucket expires this prefix.
    pub fn upload_key(tenant: &str, id: &str) -> String {
        format!("uploads/{}", Self::key(tenant, id))
    }

    fn expiry(lifetime: Duration) -> String {
        let at = chrono::Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default();
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    pub async fn presign_get(
        &self,
        key: &str,
        lifetime: Duration,
        filename: &str,
    ) -> Result<Link, S3Error> {
        let config = PresigningConfig::expires_in(lifetime).map_err(err)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{filename}\""))
            .response_content_type("application/vnd.mender-artifact")
            .presigned(config)
            .await
            .map_err(err)?;
        Ok(Link {
            uri: request.uri().to_owned(),
            expire: Self::expiry(lifetime),
        })
    }

    pub async fn presign_put(&self, key: &str, lifetime: Duration) -> Result<Link, S3Error> {
        let config = PresigningConfig::expires_in(lifetime).map_err(err)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(err)?;
        Ok(Link {
            uri: request.uri().to_owned(),
            expire: Self::expiry(lifetime),
        })
    }

    /// Deletes `key`; a key that is already gone is success (as S3 answers; s3s-fs says
    /// `NoSuchKey`), so a redelivered step's delete is idempotent.
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(()),
            Err(e) => Err(err(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    /// Size of the object, `None` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, S3Error> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(err(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    /// The object's bytes as a stream.
    pub async fn read(&self, key: &str) -> Result<ByteStream, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(out.body)
    }

    /// Writes a small object in one request.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Keys under `prefix`, in key order (every page).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            token = out.next_continuation_token;
            if token.is_none() {
                keys.sort();
                return Ok(keys);
            }
        }
    }

    /// Starts a streaming upload of `key`.
    pub async fn start_upload(&self, key: &str) -> Result<Upload, S3Error> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/vnd.mender-artifact")
            .send()
            .await
            .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(Upload {
            storage: self.clone(),
            key: key.to_owned(),
            upload_id: out.upload_id.unwrap_or_default(),
            buffer: BytesMut::new(),
            parts: Vec::new(),
            size: 0,
        })
    }
}

/// A multipart upload in progress: feed it chunks, then `finish` or `abort`.
pub struct Upload {
    storage: ArtifactStorage,
    key: String,
    upload_id: String,
    buffer: BytesMut,
    parts: Vec<CompletedPart>,
    pub size: u64,
}

impl Upload {
    pub async fn push(&mut self, chunk: &Bytes) -> Result<(), S3Error> {
        self.size += chunk.len() as u64;
        self.buffer.extend_from_slice(chunk);
        if self.buffer.len() >= PART_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), S3Error> {
        let body = self.buffer.split().freeze();
        let number = self.parts.len() as i32 + 1;
        let out = self
            .storage
            .client
            .upload_part()
            .bucket(&self.storage.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build(),
        );
        Ok(())
    }

    pub async fn finish(mut self) -> Result<u64, S3Error> {
        if !self.buffer.is_empty() || self.parts.is_empty() {
            self.flush().await?;
        }
        self.storage
            .client
            .complete_multipart_upload()
            .bucket(&self.storage.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(self.size)
    }

    pub async fn abort(self) {
        let result = self
            .storage
            .client
            .abort_multipart_upload()
            .bucket(&self.storage.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(e), "abort multipart upload failed");
        }
    }
}
