//! `process-artifact` workflow step: after a direct upload's `complete`, reads the uploaded
//! object (`uploads/<key>`, where the presigned PUT wrote it) as a stream, parses and verifies
//! it with constant memory while writing the same bytes to the artifact's own key, and stores
//! the artifact. The artifact object is therefore exactly what was verified, whatever is PUT
//! to the link later. An invalid, oversized or duplicate artifact is removed and its upload
//! marked aborted (not retried); a redelivered message for a finished upload does nothing.
//!
//! Invalid is permanent: a malformed artifact, a decompression bomb (refused by the reader's
//! limits on decompressed size and compression ratio within seconds, see
//! [`mender_artifact::ReadOptions`]) or a parser failure ends the step successfully (the
//! message is deleted, the upload is `aborted` and the reason logged), so SQS does not
//! redeliver it. Only failures of S3 or DynamoDB themselves are returned as errors (retried,
//! then dead-lettered after the queue's `maxReceiveCount`). Reading stops at the artifact's
//! end-of-archive marker: bytes stored after it are not downloaded (the artifact's size is
//! then the object's size, from S3).

use deployments::store::ArtifactStore;
use deployments::Artifact;
use mender_artifact::{ArtifactInfo, ReadOptions, StreamParser};
use mender_aws::aws_sdk_s3::primitives::ByteStream;
use mender_aws::s3::{ArtifactStorage, S3Error, Upload};
use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use workflows::Job;

/// What reading the stored object gave.
#[derive(Debug)]
pub enum Parsed {
    /// A valid artifact. `read` bytes were downloaded; `complete` is false when reading
    /// stopped after the end-of-archive marker, before the end of the object (at most one
    /// chunk after the marker is downloaded).
    Valid {
        info: Box<ArtifactInfo>,
        read: u64,
        complete: bool,
    },
    /// Not a valid artifact (permanent: never retried); the reason for the log.
    Invalid(String),
}

/// Streams `object` through the artifact parser with `options`. Errors are S3 read errors
/// only (transient); anything wrong with the artifact is [`Parsed::Invalid`], as soon as
/// the parser finds it (the rest of the object is not downloaded).
/// With `copy`, every byte fed to the parser is also written to that upload.
pub async fn parse_object(
    object: &mut ByteStream,
    options: ReadOptions,
    mut copy: Option<&mut Upload>,
) -> Result<Parsed, S3Error> {
    let mut parser = StreamParser::spawn(options);
    let mut read = 0u64;
    let mut complete = true;
    while let Some(chunk) = object
        .try_next()
        .await
        .map_err(|e| S3Error(e.to_string()))?
    {
        read += chunk.len() as u64;
        if parser.is_done() {
            // The parser has reached the end-of-archive marker (or failed): this chunk is
            // after it, and so is the rest of the object, which is not downloaded.
            complete = false;
            break;
        }
        if let Some(copy) = copy.as_deref_mut() {
            if copy.size + chunk.len() as u64 > deployments::MAX_ARTIFACT_SIZE {
                return Ok(Parsed::Invalid("artifact file too large".into()));
            }
            copy.push(&chunk).await?;
        }
        if let Err(e) = parser.feed(chunk).await {
            return Ok(Parsed::Invalid(format!("invalid artifact: {e}")));
        }
    }
    Ok(match parser.finish().await {
        Ok(info) => Parsed::Valid {
            info: Box::new(info),
            read,
            complete,
        },
        Err(e) => Parsed::Invalid(format!("invalid artifact: {e}")),
    })
}

pub async fn process(services: &Services, body: &str) -> Result<(), StepError> {
    let job = parse_job(body)?;
    let Job::ProcessArtifact {
        tenant_id,
        artifact_id,
        ..
    } = job
    else {
        return Err(wrong_workflow(&job));
    };
    let deployments = &services.deployments;
    if deployments
        .direct_upload_status(&tenant_id, &artifact_id)
        .await?
        .as_deref()
        != Some("processing")
    {
        return Ok(());
    }
    let staged = ArtifactStorage::upload_key(&tenant_id, &artifact_id);
    if deployments
        .store
        .get_artifact(&tenant_id, &artifact_id)
        .await
        .map_err(deployments::Error::from)?
        .is_some()
    {
        // Stored by an earlier delivery that stopped before the end.
        services.artifacts.delete(&staged).await?;
        return Ok(deployments
            .finish_direct_upload(&tenant_id, &artifact_id, "completed")
            .await?);
    }
    let key = ArtifactStorage::key(&tenant_id, &artifact_id);
    let refused = match services.artifacts.size(&staged).await? {
        None => Some("the uploaded object is gone".to_string()),
        Some(size) if size > deployments::MAX_ARTIFACT_SIZE => Some(format!(
            "artifact file too large: {size} bytes (max {})",
            deployments::MAX_ARTIFACT_SIZE
        )),
        Some(_) => {
            let mut object = services.artifacts.read(&staged).await?;
            let mut copy = services.artifacts.start_upload(&key).await?;
            let parsed = parse_object(&mut object, ReadOptions::full(), Some(&mut copy)).await;
            drop(object);
            match parsed {
                Err(e) => {
                    copy.abort().await;
                    return Err(e.into());
                }
                Ok(Parsed::Invalid(reason)) => {
                    copy.abort().await;
                    Some(reason)
                }
                Ok(Parsed::Valid { info, .. }) => {
                    // The artifact object holds exactly the verified bytes (up to the
                    // end-of-archive marker and the chunk after it).
                    let size = copy.finish().await?;
                    let artifact =
                        Artifact::from_parsed(artifact_id.clone(), String::new(), size, *info);
                    match deployments.add_artifact(&tenant_id, artifact).await {
                        Ok(_) => None,
                        Err(
                            e @ (deployments::Error::ArtifactExists(_)
                            | deployments::Error::BadRequest(_)),
                        ) => {
                            services.artifacts.delete(&key).await?;
                            Some(e.to_string())
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    };
    services.artifacts.delete(&staged).await?;
    let status = match refused {
        None => "completed",
        Some(reason) => {
            tracing::warn!(artifact_id = %artifact_id, %reason, "direct upload refused");
            "aborted"
        }
    };
    Ok(deployments
        .finish_direct_upload(&tenant_id, &artifact_id, status)
        .await?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, Instant};

    use mender_artifact::{write_artifact, ArtifactSpec, Compression, PayloadFile};

    use super::*;

    fn ustar(name: &str, size: u64) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..108].copy_from_slice(b"0000644\0");
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        b[156] = b'0';
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }

    /// An artifact with one payload file `f`, with `data` as its payload member `name`.
    fn artifact_with_data(name: &str, data: &[u8]) -> Vec<u8> {
        let mut spec = ArtifactSpec::module_image("bomb-1", vec!["t1".into()], "single-file");
        spec.files.push(PayloadFile::from_bytes("f", b"x".to_vec()));
        spec.compression = Compression::None;
        let mut plain = Vec::new();
        write_artifact(spec, &mut plain).unwrap();
        // Outer members up to the data member (the writer's ustar layout), then ours.
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let h = &plain[pos..pos + 512];
            let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
            let member = std::str::from_utf8(&h[..end]).unwrap().to_string();
            let size_text = std::str::from_utf8(&h[124..135]).unwrap();
            let size = usize::from_str_radix(size_text.trim_matches(['\0', ' ']), 8).unwrap();
            if member.starts_with("data/") {
                break;
            }
            let next = pos + 512 + size.div_ceil(512) * 512;
            out.extend_from_slice(&plain[pos..next]);
            pos = next;
        }
        out.extend_from_slice(&ustar(name, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        out
    }

    /// A zstd frame with the tar header of a 4 GiB file `f` and 4 GiB of zeros in RLE blocks
    /// (128 KiB of output per 4 bytes), padded with an 8 MiB skippable frame.
    fn zstd_bomb() -> Vec<u8> {
        let block = |last: bool, kind: u32, size: u32| {
            (u32::from(last) | (kind << 1) | (size << 3)).to_le_bytes()[..3].to_vec()
        };
        let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
        out.extend(block(false, 0, 512));
        out.extend_from_slice(&ustar("f", 4 << 30));
        let blocks = (4u64 << 30) / (128 * 1024);
        for i in 0..blocks {
            out.extend(block(i + 1 == blocks, 1, 128 * 1024));
            out.push(0);
        }
        out.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18]);
        out.extend_from_slice(&(8u32 << 20).to_le_bytes());
        out.resize(out.len() + (8 << 20), 0);
        out
    }

    /// A decompression bomb is a permanent refusal (the step succeeds: no SQS retry), found
    /// within seconds, with the reader's reason.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decompression_bomb_is_refused_quickly_and_permanently() {
        let bytes = artifact_with_data("data/0000.tar.zst", &zstd_bomb());
        let mut object = ByteStream::from(bytes);
        let start = Instant::now();
        let parsed = tokio::time::timeout(
            Duration::from_secs(60),
            parse_object(&mut object, ReadOptions::full(), None),
        )
        .await
        .expect("refused within 60 s")
        .expect("not an S3 error");
        eprintln!("bomb refused in {:?}: {parsed:?}", start.elapsed());
        match parsed {
            Parsed::Invalid(reason) => {
                assert!(reason.starts_with("invalid artifact: "), "{reason}");
                assert!(reason.contains("compression ratio"), "{reason}");
                assert!(reason.contains("data/0000.tar.zst"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The stored object goes on after the artifact: reading stops after the marker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn download_stops_after_the_end_of_the_artifact() {
        let mut spec = ArtifactSpec::module_image("trail-1", vec!["t1".into()], "single-file");
        spec.files
            .push(PayloadFile::from_bytes("f", vec![5u8; 10_000]));
        let mut bytes = Vec::new();
        write_artifact(spec, &mut bytes).unwrap();
        let len = bytes.len() as u64;

        let parsed = parse_object(
            &mut ByteStream::from(bytes.clone()),
            ReadOptions::full(),
            None,
        )
        .await
        .unwrap();
        match parsed {
            Parsed::Valid {
                info,
                read,
                complete,
            } => {
                assert!(complete);
                assert_eq!(read, len);
                assert_eq!(info.name, "trail-1");
            }
            other => panic!("{other:?}"),
        }

        bytes.extend(vec![0x33u8; 32 << 20]);
        let path = std::env::temp_dir().join(format!(
            "process-artifact-trailing-{}.mender",
            std::process::id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let mut object = ByteStream::from_path(&path).await.unwrap();
        let parsed = parse_object(&mut object, ReadOptions::full(), None).await;
        let _ = std::fs::remove_file(&path);
        match parsed.unwrap() {
            Parsed::Valid {
                info,
                read,
                complete,
            } => {
                assert!(!complete);
                assert!(
                    read < bytes.len() as u64 / 2,
                    "read {read} of {}",
                    bytes.len()
                );
                assert!(info.verified);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Garbage is refused as soon as the parser sees it, with the parser's own error (it
    /// used to be lost: "parser already failed"), and the rest is not downloaded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_artifact_reason_is_the_parser_error() {
        let path = std::env::temp_dir().join(format!(
            "process-artifact-garbage-{}.mender",
            std::process::id()
        ));
        std::fs::write(&path, vec![0x55u8; 16 << 20]).unwrap();
        let mut object = ByteStream::from_path(&path).await.unwrap();
        let parsed = parse_object(&mut object, ReadOptions::full(), None).await;
        let _ = std::fs::remove_file(&path);
        match parsed.unwrap() {
            Parsed::Invalid(reason) => {
                assert!(
                    reason.starts_with("invalid artifact: invalid tar archive in artifact"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
