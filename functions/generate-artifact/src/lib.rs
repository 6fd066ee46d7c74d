//! `generate-artifact` workflow step (upstream's create-artifact-worker, `single-file`): after
//! `POST /artifacts/generate` stored the raw file under its staging key, builds a single-file
//! update-module artifact from it with the project's writer (what upstream's
//! `single-file-artifact-gen` makes with `mender-artifact write module-image -T single-file`),
//! uploads it as the artifact object, stores the artifact under the id the request answered
//! with, and deletes the staging object.
//!
//! Streaming: the raw file is read from S3 as it is consumed by the writer (on a blocking
//! thread), and the artifact bytes the writer produces go to a multipart upload and, at the
//! same time, to the streaming parser (which gives the metadata to store and verifies the
//! result). Memory stays bounded; the writer spools the compressed payload to a temporary
//! file (about the size of the file).
//!
//! Failures: arguments upstream's worker refuses (`args` without an absolute `dest_dir` or
//! a `filename`, unsafe strings, ...) and an artifact that cannot be stored (same name and
//! device type as another) are logged and end the job without an artifact, and the staging
//! object is removed (upstream: the job fails, no artifact appears). Anything else (S3,
//! DynamoDB) fails the message: SQS redelivers it, then the dead-letter queue keeps it.
//! Idempotent on the artifact id: a redelivered message for a stored artifact only removes
//! the staging object.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use deployments::store::ArtifactStore;
use deployments::Artifact;
use mender_artifact::{ArtifactSpec, PayloadFile, ReadOptions, StreamParser};
use mender_aws::s3::ArtifactStorage;
use serde::Deserialize;
use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use tokio::sync::mpsc;
use workflows::Job;

/// Upstream's `maxInputLength` / `maxArtifactNameLength` (create-artifact-worker).
const MAX_INPUT_LENGTH: usize = 256;
const MAX_ARTIFACT_NAME_LENGTH: usize = 4096;
/// Chunks handed from the writer to the uploader.
const CHUNK: usize = 1024 * 1024;

/// The staging object of a generate request (`<id>.tmp` under the tenant; the same as
/// `deployments_management::generate::staging_key`).
pub fn staging_key(tenant: &str, id: &str) -> String {
    ArtifactStorage::key(tenant, &format!("{id}.tmp"))
}

/// `args` as upstream's worker reads it.
#[derive(Debug, Default, Deserialize)]
struct Args {
    #[serde(default)]
    filename: String,
    #[serde(default)]
    dest_dir: String,
    #[serde(default)]
    software_filesystem: String,
    #[serde(default)]
    software_name: String,
    #[serde(default)]
    software_version: String,
}

/// What the worker checked and will build.
#[derive(Debug, PartialEq)]
pub struct Checked {
    pub filename: String,
    pub dest_dir: String,
    pub software_filesystem: Option<String>,
    pub software_name: Option<String>,
    pub software_version: Option<String>,
}

fn safe(name: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{name} exceeds maximum length of {max}"));
    }
    if value.starts_with('-') {
        return Err(format!("{name} must not start with '-'"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!("{name} must not contain control characters"));
    }
    Ok(())
}

/// Go's `filepath.Base`.
fn base(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Upstream's `config.ValidAbsPath`.
fn valid_abs_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("need an absolute path".into());
    }
    if path.split('/').any(|p| p == "..") {
        return Err("path must not contain '..' components".into());
    }
    Ok(())
}

/// Upstream's `SingleFileCmd.Validate`, with its messages.
pub fn validate(
    name: &str,
    description: &str,
    device_types: &[String],
    args: &str,
) -> Result<Checked, String> {
    let args: Args = serde_json::from_str(args).map_err(|e| format!("can't parse 'args': {e}"))?;
    let filename = base(&args.filename).to_owned();
    if filename == "." || filename == ".." {
        return Err("invalid filename".into());
    }
    for (field, value, max) in [
        ("filename", filename.as_str(), MAX_INPUT_LENGTH),
        ("artifact-name", name, MAX_ARTIFACT_NAME_LENGTH),
    ] {
        if value.is_empty() {
            return Err(format!("{field} can't be empty"));
        }
        safe(field, value, max)?;
    }
    if device_types.is_empty() || device_types.iter().any(String::is_empty) {
        return Err("device type can't be empty".into());
    }
    for t in device_types {
        safe("device-type", t, MAX_INPUT_LENGTH)?;
    }
    for (field, value, max) in [
        (
            "software_filesystem",
            args.software_filesystem.as_str(),
            MAX_INPUT_LENGTH,
        ),
        (
            "software_name",
            args.software_name.as_str(),
            MAX_INPUT_LENGTH,
        ),
        (
            "software_version",
            args.software_version.as_str(),
            MAX_INPUT_LENGTH,
        ),
        ("description", description, 4096),
    ] {
        if !value.is_empty() {
            safe(field, value, max)?;
        }
    }
    valid_abs_path(&args.dest_dir).map_err(|e| format!("invalid artifact destination dir: {e}"))?;
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(Checked {
        filename,
        dest_dir: args.dest_dir,
        software_filesystem: some(args.software_filesystem),
        software_name: some(args.software_name),
        software_version: some(args.software_version),
    })
}

/// The spec `single-file-artifact-gen -n <name> -d <dest_dir> -t <type>... [--software-*]`
/// gives `mender-artifact write module-image`.
pub fn spec(
    name: &str,
    device_types: Vec<String>,
    checked: &Checked,
    file: PayloadFile,
) -> mender_artifact::Result<ArtifactSpec> {
    let mut spec = ArtifactSpec::single_file(name, device_types, &checked.dest_dir, file)?;
    spec.software_filesystem = checked.software_filesystem.clone();
    spec.software_name = checked.software_name.clone();
    spec.software_version = checked.software_version.clone();
    Ok(spec)
}

/// Blocking reader over chunks sent from async code.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Blocking writer handing chunks of [`CHUNK`] bytes to async code.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buffer: BytesMut,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "artifact upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn failed(e: impl std::fmt::Display) -> StepError {
    StepError::Failed(e.to_string())
}

/// Why a job ends without an artifact (not retried).
enum Outcome {
    Stored,
    Refused(String),
}

pub async fn process(services: &Services, body: &str) -> Result<(), StepError> {
    let job = parse_job(body)?;
    let Job::GenerateArtifact {
        tenant_id,
        artifact_id,
        name,
        description,
        device_types_compatible,
        args,
        ..
    } = job
    else {
        return Err(wrong_workflow(&job));
    };
    let staging = staging_key(&tenant_id, &artifact_id);
    let stored = services
        .deployments
        .store
        .get_artifact(&tenant_id, &artifact_id)
        .await
        .map_err(deployments::Error::from)?;
    if stored.is_some() {
        // Delivered again after the artifact was stored: only the clean-up may be missing.
        return Ok(services.artifacts.delete(&staging).await?);
    }
    let outcome = match validate(&name, &description, &device_types_compatible, &args) {
        Err(reason) => Outcome::Refused(reason),
        Ok(checked) => match services.artifacts.size(&staging).await? {
            None => Outcome::Refused("the raw file is gone".into()),
            Some(size) => {
                generate(
                    services,
                    &tenant_id,
                    &artifact_id,
                    &name,
                    description,
                    device_types_compatible,
                    &checked,
                    size,
                )
                .await?
            }
        },
    };
    if let Outcome::Refused(reason) = outcome {
        tracing::error!(artifact_id = %artifact_id, artifact_name = %name, %reason, "generate_artifact failed: no artifact was created");
    }
    services.artifacts.delete(&staging).await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn generate(
    services: &Services,
    tenant: &str,
    id: &str,
    name: &str,
    description: String,
    device_types: Vec<String>,
    checked: &Checked,
    raw_size: u64,
) -> Result<Outcome, StepError> {
    let staging = staging_key(tenant, id);
    let key = ArtifactStorage::key(tenant, id);
    let mut object = services.artifacts.read(&staging).await?;

    // S3 -> the writer's payload file.
    let (raw_tx, raw_rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let download = tokio::spawn(async move {
        loop {
            let next = object.try_next().await;
            let item = match next {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            let stop = item.is_err();
            if raw_tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let file = PayloadFile::from_reader(
        checked.filename.clone(),
        raw_size,
        ChannelReader {
            rx: raw_rx,
            current: Bytes::new(),
        },
    );
    let spec = match spec(name, device_types, checked, file) {
        Ok(spec) => spec,
        Err(e) => {
            download.abort();
            return Ok(Outcome::Refused(e.to_string()));
        }
    };

    // The writer -> the upload and the parser.
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: out_tx,
            buffer: BytesMut::with_capacity(CHUNK),
        };
        let written = mender_artifact::write_artifact(spec, &mut out)?;
        out.flush()
            .map_err(|source| mender_artifact::Error::Write {
                context: "artifact".into(),
                source,
            })?;
        Ok::<u64, mender_artifact::Error>(written)
    });
    let mut upload = services.artifacts.start_upload(&key).await?;
    let mut parser = StreamParser::spawn(ReadOptions::full());
    let mut parse_failed = false;
    let mut pushed: Result<(), StepError> = Ok(());
    while let Some(chunk) = out_rx.recv().await {
        if let Err(e) = upload.push(&chunk).await {
            pushed = Err(e.into());
            break;
        }
        if !parse_failed && parser.feed(chunk).await.is_err() {
            parse_failed = true;
        }
    }
    drop(out_rx);
    let written = writer.await.map_err(failed)?;
    download.abort();
    if let Err(e) = pushed {
        upload.abort().await;
        return Err(e);
    }
    let written = match written {
        Ok(n) => n,
        Err(e @ mender_artifact::Error::InvalidSpec(_)) => {
            upload.abort().await;
            return Ok(Outcome::Refused(e.to_string()));
        }
        Err(e) => {
            upload.abort().await;
            return Err(failed(format!("writing the artifact: {e}")));
        }
    };
    let info = match parser.finish().await {
        Ok(info) => info,
        Err(e) => {
            upload.abort().await;
            return Err(failed(format!(
                "the generated artifact does not parse: {e}"
            )));
        }
    };
    let size = upload.finish().await?;
    debug_assert_eq!(size, written);
    let artifact = Artifact::from_parsed(id.to_owned(), description, size, info);
    match services.deployments.add_artifact(tenant, artifact).await {
        Ok(_) => Ok(Outcome::Stored),
        Err(e @ (deployments::Error::ArtifactExists(_) | deployments::Error::BadRequest(_))) => {
            services.artifacts.delete(&key).await?;
            Ok(Outcome::Refused(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: serde_json::Value) -> String {
        v.to_string()
    }

    #[test]
    fn validates_like_the_worker() {
        let types = vec!["board".to_string()];
        let ok = validate(
            "n",
            "",
            &types,
            &args(serde_json::json!({"filename": "../etc/run.sh", "dest_dir": "/opt/x"})),
        );
        assert_eq!(
            ok.map(|c| (c.filename, c.dest_dir)),
            Ok(("run.sh".into(), "/opt/x".into()))
        );
        let err = |a: serde_json::Value| validate("n", "", &types, &args(a)).err();
        assert_eq!(
            err(serde_json::json!({"filename": "a", "dest_dir": "rel"})).as_deref(),
            Some("invalid artifact destination dir: need an absolute path")
        );
        assert_eq!(
            err(serde_json::json!({"filename": "a", "dest_dir": "/a/../b"})).as_deref(),
            Some("invalid artifact destination dir: path must not contain '..' components")
        );
        assert_eq!(
            err(serde_json::json!({"dest_dir": "/a"})).as_deref(),
            Some("invalid filename")
        );
        assert_eq!(
            err(serde_json::json!({"filename": "-x", "dest_dir": "/a"})).as_deref(),
            Some("filename must not start with '-'")
        );
        assert!(validate("n", "", &types, "not json")
            .err()
            .is_some_and(|e| e.starts_with("can't parse 'args'")));
        assert_eq!(
            validate("n", "", &["".into()], r#"{"filename":"a","dest_dir":"/a"}"#).err(),
            Some("device type can't be empty".into())
        );
    }

    #[test]
    fn go_base() {
        assert_eq!(base(""), ".");
        assert_eq!(base("/"), "/");
        assert_eq!(base("a/b/"), "b");
        assert_eq!(base("x"), "x");
    }
}
