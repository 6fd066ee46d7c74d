//! `POST /artifacts/generate` (upstream `GenerateImage`): a multipart form with `name`,
//! `description`, `device_types_compatible` (comma-separated; repeated parts add to the list),
//! `type`, `args` (a JSON string passed on unparsed), `size`, then `file` (the raw payload,
//! at most 256 MiB, last: parts after it are ignored). The form is validated before any byte
//! of the file is read; the file is then streamed to S3 under a staging key (`<id>.tmp`) and
//! the `generate-artifact` workflow builds the artifact from it (functions/generate-artifact).
//! The answer (201, `Location: <request path>/<id>`) comes before the artifact exists.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use mender_aws::s3::ArtifactStorage;
use mender_http::error::StatusCode;
use mender_http::{ApiError, ApiResult};
use services::Services;

/// Upstream's `DefaultMaxGenerateDataSize`.
pub const MAX_GENERATE_DATA_SIZE: u64 = 256 * 1024 * 1024;
/// Upstream's `MaxFormParamSize`: each text part.
const MAX_FORM_PARAM_SIZE: usize = 1024 * 1024;
/// The whole request (the file plus the text parts).
pub const MAX_REQUEST_SIZE: usize = MAX_GENERATE_DATA_SIZE as usize + 8 * MAX_FORM_PARAM_SIZE;

/// The staging object of a generate request (upstream `<id>.tmp`, under the tenant).
pub fn staging_key(tenant: &str, id: &str) -> String {
    ArtifactStorage::key(tenant, &format!("{id}.tmp"))
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Artifact file too large")
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    ApiError::bad_request(e.body_text())
}

/// The form's text parts (upstream `MultipartGenerateImageMsg`).
#[derive(Debug, Default)]
struct Form {
    name: String,
    description: String,
    device_types: Option<Vec<String>>,
    update_type: String,
    args: String,
    size: Option<u64>,
}

/// Upstream's `Validate` (ozzo-validation: `Required`, `Length(1, 256)` in runes, which skips
/// empty values, `Each`; errors sorted by field, `; `-separated, ending with `.`).
fn validate(form: &Form) -> Result<(), String> {
    let length = |s: &str| {
        let n = s.chars().count();
        (n > 256).then(|| "the length must be between 1 and 256".to_owned())
    };
    let mut errors: Vec<String> = Vec::new();
    match form.device_types.as_deref() {
        None | Some([]) => errors.push("device_types_compatible: cannot be blank".into()),
        Some(list) => {
            let each: Vec<String> = list
                .iter()
                .enumerate()
                .filter_map(|(i, t)| length(t).map(|m| format!("{i}: {m}")))
                .collect();
            if !each.is_empty() {
                errors.push(format!("device_types_compatible: ({}.)", each.join("; ")));
            } else if list.len() > 256 {
                errors.push("device_types_compatible: the length must be between 1 and 256".into());
            }
        }
    }
    for (field, value) in [("name", &form.name), ("type", &form.update_type)] {
        if value.is_empty() {
            errors.push(format!("{field}: cannot be blank"));
        } else if let Some(m) = length(value) {
            errors.push(format!("{field}: {m}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{}.", errors.join("; ")))
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::bad_request(format!("api: invalid form parameters: {message}"))
}

/// A text part, at most [`MAX_FORM_PARAM_SIZE`] bytes.
async fn text(mut field: Field<'_>, name: &str) -> ApiResult<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_FORM_PARAM_SIZE {
            return Err(ApiError::bad_request(format!(
                "failed to read form value '{name}': read too many bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request(format!("failed to read form value '{name}'")))
}

/// Reads and validates the form, stores the file, starts the workflow; returns the new id.
pub async fn generate(s: &Services, tenant: &str, mut form: Multipart) -> ApiResult<String> {
    let mut parsed = Form::default();
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let part = field.name().unwrap_or_default().to_ascii_lowercase();
        match part.as_str() {
            "args" => parsed.args = text(field, "args").await?,
            "description" => parsed.description = text(field, "description").await?,
            "device_types_compatible" => {
                let value = text(field, "device_types_compatible").await?;
                parsed
                    .device_types
                    .get_or_insert_with(Vec::new)
                    .extend(value.split(',').map(str::to_owned));
            }
            "name" => parsed.name = text(field, "name").await?,
            "type" => parsed.update_type = text(field, "type").await?,
            "size" => {
                let value = text(field, "size").await?;
                let size: i64 = value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "strconv.ParseInt: parsing {value:?}: invalid syntax"
                    ))
                })?;
                if size > MAX_GENERATE_DATA_SIZE as i64 {
                    return Err(too_large());
                }
                parsed.size = (size > 0).then_some(size as u64);
            }
            "file" => {
                validate(&parsed).map_err(|m| invalid(&m))?;
                return store(s, tenant, parsed, field).await;
            }
            _ => {}
        }
    }
    validate(&parsed).map_err(|m| invalid(&m))?;
    Err(invalid("missing 'file' section"))
}

async fn store(s: &Services, tenant: &str, form: Form, mut field: Field<'_>) -> ApiResult<String> {
    let device_types = form.device_types.unwrap_or_default();
    if !s
        .deployments
        .is_artifact_unique(tenant, &form.name, &device_types)
        .await?
    {
        return Err(ApiError::unprocessable("Artifact not unique"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let key = staging_key(tenant, &id);
    let limit = form.size.unwrap_or(MAX_GENERATE_DATA_SIZE);
    let mut upload = s
        .artifacts
        .start_upload(&key)
        .await
        .map_err(ApiError::internal)?;
    let streamed: ApiResult<()> = async {
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if upload.size + chunk.len() as u64 > limit {
                return Err(if form.size.is_some() {
                    ApiError::bad_request("file size does not match the size part")
                } else {
                    too_large()
                });
            }
            upload.push(&chunk).await.map_err(ApiError::internal)?;
        }
        if form.size.is_some_and(|n| n != upload.size) {
            return Err(ApiError::bad_request("unexpected EOF"));
        }
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        upload.abort().await;
        return Err(e);
    }
    upload.finish().await.map_err(ApiError::internal)?;
    let job = workflows::Job::GenerateArtifact {
        request_id: mender_http::request_id::current().unwrap_or_default(),
        tenant_id: tenant.to_owned(),
        artifact_id: id.clone(),
        name: form.name,
        description: form.description,
        device_types_compatible: device_types,
        update_type: form.update_type,
        args: form.args,
    };
    if let Err(e) = s.workflows.publish(job).await {
        if let Err(delete) = s.artifacts.delete(&key).await {
            tracing::warn!(error = %delete, "could not remove a generate request's raw file");
        }
        return Err(ApiError::internal(e));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(name: &str, types: Option<&[&str]>, kind: &str) -> Form {
        Form {
            name: name.into(),
            device_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            update_type: kind.into(),
            ..Form::default()
        }
    }

    #[test]
    fn validation_messages_are_upstreams() {
        assert_eq!(
            validate(&form("", None, "")),
            Err("device_types_compatible: cannot be blank; name: cannot be blank; type: cannot be blank.".into())
        );
        let long = "x".repeat(257);
        assert_eq!(
            validate(&form("a", Some(&["ok", &long]), "single_file")),
            Err("device_types_compatible: (1: the length must be between 1 and 256.).".into())
        );
        assert_eq!(validate(&form("a", Some(&["b"]), "single_file")), Ok(()));
    }
}
