//! `process-artifact` workflow step: after a direct upload's `complete`, reads the object from
//! S3 as a stream, parses and verifies it with constant memory, and stores the artifact. An
//! invalid or duplicate artifact is removed and its upload marked aborted (not retried); a
//! redelivered message for a finished upload does nothing.

use deployments::Artifact;
use mender_artifact::{ReadOptions, StreamParser};
use mender_aws::s3::ArtifactStorage;
use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use workflows::Job;

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
    if deployments
        .store
        .get_artifact(&tenant_id, &artifact_id)
        .await
        .map_err(deployments::Error::from)?
        .is_some()
    {
        return Ok(deployments
            .finish_direct_upload(&tenant_id, &artifact_id, "completed")
            .await?);
    }
    let key = ArtifactStorage::key(&tenant_id, &artifact_id);
    let mut object = services.artifacts.read(&key).await?;
    let mut parser = StreamParser::spawn(ReadOptions::full());
    let mut size = 0u64;
    while let Some(chunk) = object
        .try_next()
        .await
        .map_err(|e| mender_aws::s3::S3Error(e.to_string()))?
    {
        size += chunk.len() as u64;
        if parser.feed(chunk).await.is_err() {
            break;
        }
    }
    let refused = match parser.finish().await {
        Ok(info) => {
            let artifact = Artifact::from_parsed(artifact_id.clone(), String::new(), size, info);
            match deployments.add_artifact(&tenant_id, artifact).await {
                Ok(_) => None,
                Err(
                    e @ (deployments::Error::ArtifactExists(_) | deployments::Error::BadRequest(_)),
                ) => Some(e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => Some(format!("invalid artifact: {e}")),
    };
    match refused {
        None => {
            deployments
                .finish_direct_upload(&tenant_id, &artifact_id, "completed")
                .await?
        }
        Some(reason) => {
            tracing::warn!(artifact_id = %artifact_id, %reason, "direct upload refused");
            services.artifacts.delete(&key).await?;
            deployments
                .finish_direct_upload(&tenant_id, &artifact_id, "aborted")
                .await?;
        }
    }
    Ok(())
}
