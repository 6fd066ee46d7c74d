//! The multipart artifact upload: parts `size`, `description`, `artifact_id`, then `artifact`
//! (last). The artifact is streamed to S3 and, at the same time, parsed and checksummed by
//! `mender_artifact::StreamParser`, so memory stays flat whatever the size. The artifact id
//! (client-chosen or new) is reserved first, so no upload writes another one's object.

use axum::extract::multipart::Field;
use axum::extract::Multipart;
use deployments::model::Artifact;
use mender_artifact::{ReadOptions, StreamParser};
use mender_aws::s3::ArtifactStorage;
use mender_http::{ApiError, ApiResult};
use services::Services;

pub use deployments::MAX_ARTIFACT_SIZE;

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Reads the form up to the artifact part, streams and parses the artifact, stores it.
pub async fn upload(s: &Services, tenant: &str, mut form: Multipart) -> ApiResult<Artifact> {
    let mut description = String::new();
    let mut declared_size: Option<u64> = None;
    let mut id = uuid::Uuid::new_v4().to_string();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        match name.as_str() {
            "description" => description = field.text().await.map_err(bad)?,
            "size" => {
                let text = field.text().await.map_err(bad)?;
                let size: u64 = text
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::bad_request("size: must be a number"))?;
                if size > MAX_ARTIFACT_SIZE {
                    return Err(ApiError::new(
                        mender_http::error::StatusCode::PAYLOAD_TOO_LARGE,
                        "Artifact file too large",
                    ));
                }
                declared_size = Some(size);
            }
            "artifact_id" => {
                let text = field.text().await.map_err(bad)?;
                id = uuid::Uuid::parse_str(text.trim())
                    .map_err(|_| ApiError::bad_request("artifact_id: must be a valid UUID"))?
                    .to_string();
            }
            "artifact" => {
                // The id is reserved before a byte reaches S3, so a client-chosen id can never
                // overwrite (and, on the duplicate error, delete) a live artifact's object.
                s.deployments.reserve_artifact_id(tenant, &id).await?;
                let stored = store(s, tenant, id.clone(), description, declared_size, field).await;
                s.deployments
                    .release_artifact_id(tenant, &id, stored.is_ok())
                    .await?;
                return stored;
            }
            _ => {}
        }
    }
    Err(ApiError::bad_request(
        "request does not contain the artifact file",
    ))
}

async fn store(
    s: &Services,
    tenant: &str,
    id: String,
    description: String,
    declared: Option<u64>,
    mut field: Field<'_>,
) -> ApiResult<Artifact> {
    let key = ArtifactStorage::key(tenant, &id);
    let mut parser = StreamParser::spawn(ReadOptions::full());
    let mut upload = s
        .artifacts
        .start_upload(&key)
        .await
        .map_err(ApiError::internal)?;
    let streamed: ApiResult<()> = async {
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if upload.size + chunk.len() as u64 > declared.unwrap_or(MAX_ARTIFACT_SIZE) {
                return Err(ApiError::new(
                    mender_http::error::StatusCode::PAYLOAD_TOO_LARGE,
                    "Artifact file too large",
                ));
            }
            upload.push(&chunk).await.map_err(ApiError::internal)?;
            if parser.feed(chunk).await.is_err() {
                // The artifact is invalid: `finish` reports why.
                break;
            }
        }
        Ok(())
    }
    .await;
    let parsed = parser.finish().await;
    let size = upload.size;
    let info = match (streamed, parsed) {
        (Err(e), _) => {
            upload.abort().await;
            return Err(e);
        }
        (Ok(()), Err(e)) => {
            upload.abort().await;
            return Err(ApiError::bad_request(format!("invalid artifact: {e}")));
        }
        (Ok(()), Ok(info)) => info,
    };
    if declared.is_some_and(|d| d != size) {
        upload.abort().await;
        return Err(ApiError::bad_request(
            "artifact size does not match the size part",
        ));
    }
    upload.finish().await.map_err(ApiError::internal)?;
    let artifact = Artifact::from_parsed(id, description, size, info);
    match s.deployments.add_artifact(tenant, artifact).await {
        Ok(artifact) => Ok(artifact),
        Err(e) => {
            if let Err(delete) = s.artifacts.delete(&key).await {
                tracing::warn!(error = %delete, "could not remove a refused artifact's object");
            }
            Err(e.into())
        }
    }
}
