//! Artifact writer: builds a v3 module-image artifact (one payload, e.g. `single-file` or
//! `script`) laid out exactly like `mender-artifact write module-image` does, so
//! `mender-artifact read` and mender clients accept it.
//!
//! The manifest (which precedes the data) needs the checksums of the payload files, and the
//! outer tar needs the compressed data archive's size before its bytes. The writer therefore
//! reads each payload file once, compressing it into a spool (memory up to 1 MiB, then an
//! anonymous temporary file) while hashing it, and then copies the spool to the output.
//! Memory stays bounded whatever the payload size; the output only needs [`Write`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::info::{DependValue, JsonObject};
use crate::tar::{self as tarw, NO_OWNER, ROOT};

/// Spool size kept in memory before spilling to a temporary file.
const SPOOL_MEMORY: usize = 1 << 20;

/// One payload file. Its content is read exactly once, and must be exactly `size` bytes.
pub struct PayloadFile {
    /// File name inside the payload (letters, digits and `.,_-` only).
    pub name: String,
    /// Exact content length.
    pub size: u64,
    /// Permission bits stored in the data archive (default `0o644`).
    pub mode: u32,
    /// Modification time in Unix seconds (default: now).
    pub mtime: Option<u64>,
    reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for PayloadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadFile")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("mode", &self.mode)
            .field("mtime", &self.mtime)
            .finish_non_exhaustive()
    }
}

impl PayloadFile {
    /// A file whose `size` bytes of content come from `reader`.
    pub fn from_reader(
        name: impl Into<String>,
        size: u64,
        reader: impl Read + Send + 'static,
    ) -> Self {
        PayloadFile {
            name: name.into(),
            size,
            mode: 0o644,
            mtime: None,
            reader: Box::new(reader),
        }
    }

    /// A file with in-memory content.
    pub fn from_bytes(name: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        let data = data.into();
        let size = data.len() as u64;
        Self::from_reader(name, size, io::Cursor::new(data))
    }

    /// A file on disk: name, size, permissions and mtime are taken from it.
    pub fn from_path(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid file name"))?;
        let mut pf = Self::from_reader(name, meta.len(), file);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            pf.mode = meta.permissions().mode() & 0o7777;
        }
        pf.mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        Ok(pf)
    }

    /// Sets the permission bits.
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the modification time (Unix seconds).
    pub fn with_mtime(mut self, mtime: u64) -> Self {
        self.mtime = Some(mtime);
        self
    }
}

/// A state script (`ArtifactInstall_Enter_00`, ...), stored under `scripts/` in the header.
#[derive(Debug, Clone)]
pub struct ScriptFile {
    /// `<State>_<Enter|Leave|Error>_<NN>[_description]`.
    pub name: String,
    /// Script content.
    pub content: Vec<u8>,
}

/// What to write. Field semantics follow `mender-artifact write module-image` options.
#[derive(Debug)]
pub struct ArtifactSpec {
    /// `-n`: artifact name.
    pub name: String,
    /// `-t`: compatible device types (at least one).
    pub device_types: Vec<String>,
    /// `-T`: payload type (update module name).
    pub payload_type: String,
    /// `-f`: payload files, in order.
    pub files: Vec<PayloadFile>,
    /// `--provides`: extra type-info provides.
    pub provides: BTreeMap<String, String>,
    /// `--depends`: type-info depends.
    pub depends: BTreeMap<String, DependValue>,
    /// `--meta-data`: payload meta-data object.
    pub meta_data: Option<JsonObject>,
    /// `--clears-provides`: extra clears_artifact_provides entries.
    pub clears_provides: Vec<String>,
    /// `--no-default-clears-provides`.
    pub no_default_clears_provides: bool,
    /// `--software-filesystem` (default `rootfs-image`).
    pub software_filesystem: Option<String>,
    /// `--software-name` (default: the payload type).
    pub software_name: Option<String>,
    /// `--software-version` (default: the artifact name).
    pub software_version: Option<String>,
    /// `--no-default-software-version`.
    pub no_default_software_version: bool,
    /// `-g`: artifact group provided.
    pub provides_group: Option<String>,
    /// `-N`: artifact names this one depends on.
    pub depends_artifact_names: Vec<String>,
    /// `-G`: artifact groups this one depends on.
    pub depends_groups: Vec<String>,
    /// `-s`: state scripts.
    pub scripts: Vec<ScriptFile>,
    /// `--compression` (default gzip).
    pub compression: Compression,
    /// Modification time of the header/data members (default: now), Unix seconds.
    pub mtime: Option<u64>,
}

impl ArtifactSpec {
    /// A module-image artifact with no files and defaults everywhere else.
    pub fn module_image(
        name: impl Into<String>,
        device_types: Vec<String>,
        payload_type: impl Into<String>,
    ) -> Self {
        ArtifactSpec {
            name: name.into(),
            device_types,
            payload_type: payload_type.into(),
            files: Vec::new(),
            provides: BTreeMap::new(),
            depends: BTreeMap::new(),
            meta_data: None,
            clears_provides: Vec::new(),
            no_default_clears_provides: false,
            software_filesystem: None,
            software_name: None,
            software_version: None,
            no_default_software_version: false,
            provides_group: None,
            depends_artifact_names: Vec::new(),
            depends_groups: Vec::new(),
            scripts: Vec::new(),
            compression: Compression::Gzip,
            mtime: None,
        }
    }

    /// What upstream's `single-file-artifact-gen` produces for the `single-file` update
    /// module: payload type `single-file` with the files `dest_dir`, `filename`,
    /// `permissions` (one line of text each) and the file itself. `dest_dir` must be
    /// absolute; the file keeps its `name` (the basename is taken).
    pub fn single_file(
        name: impl Into<String>,
        device_types: Vec<String>,
        dest_dir: &str,
        file: PayloadFile,
    ) -> Result<Self> {
        if !dest_dir.starts_with('/') {
            return Err(Error::InvalidSpec(format!(
                "dest_dir must be an absolute path, got {dest_dir:?}"
            )));
        }
        let mut file = file;
        let base = file.name.rsplit('/').next().unwrap_or_default().to_string();
        file.name = base.clone();
        let mut spec = Self::module_image(name, device_types, "single-file");
        spec.files = vec![
            PayloadFile::from_bytes("dest_dir", format!("{dest_dir}\n")),
            PayloadFile::from_bytes("filename", format!("{base}\n")),
            PayloadFile::from_bytes("permissions", format!("{:o}\n", file.mode & 0o7777)),
            file,
        ];
        Ok(spec)
    }

    /// The type-info provides written (defaults applied like mender-artifact 3.9).
    pub fn effective_provides(&self) -> BTreeMap<String, String> {
        let mut out = self.provides.clone();
        let explicit = self.software_filesystem.is_some()
            || self.software_name.is_some()
            || self.software_version.is_some();
        let mut key = self
            .software_filesystem
            .clone()
            .unwrap_or_else(|| "rootfs-image".into());
        let mut name = self.software_name.clone().unwrap_or_default();
        let mut version = self.software_version.clone().unwrap_or_default();
        if !self.no_default_software_version {
            if name.is_empty() {
                name = self.payload_type.clone();
            }
            if version.is_empty() {
                version = self.name.clone();
            }
        }
        if !name.is_empty() {
            key = format!("{key}.{name}");
        }
        if !key.is_empty() && !version.is_empty() {
            let key = format!("{key}.version");
            if explicit || !out.contains_key(&key) {
                out.insert(key, version);
            }
        }
        out
    }

    /// The clears_artifact_provides written (defaults applied like mender-artifact 3.9).
    pub fn effective_clears_provides(&self) -> Vec<String> {
        let mut list = self.clears_provides.clone();
        if self.no_default_clears_provides || self.no_default_software_version {
            return list;
        }
        let fs = self
            .software_filesystem
            .as_deref()
            .unwrap_or("rootfs-image");
        let name = self
            .software_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.payload_type);
        let default = format!("{fs}.{name}.*");
        if !list.contains(&default) {
            list.push(default);
        }
        list
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidSpec(m));
        if self.name.is_empty() || self.name.chars().any(char::is_whitespace) {
            return bad(format!("invalid artifact name {:?}", self.name));
        }
        if self.device_types.is_empty() {
            return bad("at least one device type is required".into());
        }
        if self.device_types.iter().any(|d| d.is_empty()) {
            return bad("empty device type".into());
        }
        if self.payload_type.is_empty() || self.payload_type.contains('/') {
            return bad(format!("invalid payload type {:?}", self.payload_type));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            if !crate::reader::valid_file_name(&f.name) {
                return bad(format!(
                    "invalid file name {:?}: only letters, digits and \".,_-\" are allowed",
                    f.name
                ));
            }
            if !seen.insert(f.name.as_str()) {
                return bad(format!("duplicate file name {:?}", f.name));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.scripts {
            if !valid_script_name(&s.name) {
                return bad(format!(
                    "invalid state script name {:?}: expected <ArtifactState>_<Enter|Leave|Error>_<NN>[_description]",
                    s.name
                ));
            }
            if !seen.insert(s.name.as_str()) {
                return bad(format!("duplicate state script {:?}", s.name));
            }
        }
        Ok(())
    }
}

/// Script name check of `mender-artifact` (`artifact/scripter.go`).
fn valid_script_name(name: &str) -> bool {
    const STATES: [&str; 6] = [
        "ArtifactInstall",
        "ArtifactReboot",
        "ArtifactCommit",
        "ArtifactRollback",
        "ArtifactRollbackReboot",
        "ArtifactFailure",
    ];
    let mut parts = name.splitn(4, '_');
    let (Some(state), Some(action), Some(num)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let rest_ok = parts
        .next()
        .is_none_or(|d| !d.is_empty() && !d.chars().any(char::is_whitespace));
    STATES.contains(&state)
        && matches!(action, "Enter" | "Leave" | "Error")
        && num.len() == 2
        && num.bytes().all(|b| b.is_ascii_digit())
        && rest_ok
        && !name.contains('/')
}

#[derive(Serialize)]
struct PayloadTypeJson<'a> {
    #[serde(rename = "type")]
    payload_type: &'a str,
}

#[derive(Serialize)]
struct ProvidesJson<'a> {
    artifact_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_group: Option<&'a str>,
}

#[derive(Serialize)]
struct DependsJson<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    artifact_name: &'a [String],
    device_type: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    artifact_group: &'a [String],
}

#[derive(Serialize)]
struct HeaderInfoJson<'a> {
    payloads: Vec<PayloadTypeJson<'a>>,
    artifact_provides: ProvidesJson<'a>,
    artifact_depends: DependsJson<'a>,
}

#[derive(Serialize)]
struct TypeInfoOut<'a> {
    #[serde(rename = "type")]
    payload_type: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    artifact_depends: &'a BTreeMap<String, DependValue>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    artifact_provides: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    clears_artifact_provides: &'a [String],
}

/// Counts bytes written.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the artifact described by `spec` to `out`; returns the number of bytes written.
pub fn write_artifact<W: Write>(spec: ArtifactSpec, out: W) -> Result<u64> {
    spec.validate()?;
    let mtime = spec.mtime.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let ext = spec.compression.extension();
    let provides = spec.effective_provides();
    let clears = spec.effective_clears_provides();

    // 1. Data archive → spool, hashing each file.
    let mut checksums: Vec<(String, String)> = Vec::new();
    let spool = tempfile::spooled_tempfile(SPOOL_MEMORY);
    let mut enc = spec
        .compression
        .encoder(spool)
        .map_err(|e| Error::write("data archive", e))?;
    for mut f in spec.files {
        let w = |e| Error::write(format!("data/0000/{}", f.name), e);
        tarw::write_file_header(
            &mut enc,
            &f.name,
            f.size,
            f.mode,
            f.mtime.unwrap_or(mtime),
            ROOT,
        )
        .map_err(|e| Error::write("data archive", e))?;
        let mut hasher = HashingWriter {
            inner: &mut enc,
            hasher: Sha256::new(),
        };
        let copied = io::copy(&mut (&mut f.reader).take(f.size), &mut hasher).map_err(w)?;
        if copied != f.size {
            return Err(Error::InvalidSpec(format!(
                "file {:?}: {} bytes read, {} declared",
                f.name, copied, f.size
            )));
        }
        let mut probe = [0u8; 1];
        if f.reader.read(&mut probe).map_err(w)? != 0 {
            return Err(Error::InvalidSpec(format!(
                "file {:?} is longer than its declared size {}",
                f.name, f.size
            )));
        }
        let digest = hasher.hasher.finalize();
        tarw::write_padding(&mut enc, f.size).map_err(|e| Error::write("data archive", e))?;
        checksums.push((format!("data/0000/{}", f.name), hex::encode(digest)));
    }
    tarw::write_end(&mut enc).map_err(|e| Error::write("data archive", e))?;
    let mut spool = enc.finish().map_err(|e| Error::write("data archive", e))?;
    let data_len = spool
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::write("data archive", e))?;
    spool
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::write("data archive", e))?;

    // 2. Header archive (small, in memory).
    let header_info = HeaderInfoJson {
        payloads: vec![PayloadTypeJson {
            payload_type: &spec.payload_type,
        }],
        artifact_provides: ProvidesJson {
            artifact_name: &spec.name,
            artifact_group: spec.provides_group.as_deref(),
        },
        artifact_depends: DependsJson {
            artifact_name: &spec.depends_artifact_names,
            device_type: &spec.device_types,
            artifact_group: &spec.depends_groups,
        },
    };
    let type_info = TypeInfoOut {
        payload_type: &spec.payload_type,
        artifact_depends: &spec.depends,
        artifact_provides: &provides,
        clears_artifact_provides: &clears,
    };
    let hw = |e| Error::write("header archive", e);
    let mut header = spec.compression.encoder(Vec::new()).map_err(hw)?;
    tarw::write_file(
        &mut header,
        "header-info",
        &to_json(&header_info)?,
        0o600,
        0,
        NO_OWNER,
    )
    .map_err(hw)?;
    for s in &spec.scripts {
        tarw::write_file(
            &mut header,
            &format!("scripts/{}", s.name),
            &s.content,
            0o755,
            mtime,
            ROOT,
        )
        .map_err(hw)?;
    }
    tarw::write_file(
        &mut header,
        "headers/0000/type-info",
        &to_json(&type_info)?,
        0o600,
        0,
        NO_OWNER,
    )
    .map_err(hw)?;
    if let Some(md) = spec.meta_data.as_ref().filter(|m| !m.is_empty()) {
        tarw::write_file(
            &mut header,
            "headers/0000/meta-data",
            &to_json(md)?,
            0o600,
            0,
            NO_OWNER,
        )
        .map_err(hw)?;
    }
    tarw::write_end(&mut header).map_err(hw)?;
    let header = header.finish().map_err(hw)?;

    // 3. Manifest: payload files in order, then header and version (as mender-artifact).
    let version = br#"{"format":"mender","version":3}"#;
    let header_name = format!("header.tar{ext}");
    checksums.push((header_name.clone(), hex::encode(Sha256::digest(&header))));
    checksums.push(("version".into(), hex::encode(Sha256::digest(version))));
    let manifest: String = checksums
        .iter()
        .map(|(path, sum)| format!("{sum}  {path}\n"))
        .collect();

    // 4. Outer archive.
    let ow = |e| Error::write("artifact", e);
    let mut out = CountingWriter {
        inner: out,
        count: 0,
    };
    tarw::write_file(&mut out, "version", version, 0o600, 0, NO_OWNER).map_err(ow)?;
    tarw::write_file(
        &mut out,
        "manifest",
        manifest.as_bytes(),
        0o600,
        0,
        NO_OWNER,
    )
    .map_err(ow)?;
    tarw::write_file(&mut out, &header_name, &header, 0o600, mtime, ROOT).map_err(ow)?;
    let data_name = format!("data/0000.tar{ext}");
    tarw::write_file_header(&mut out, &data_name, data_len, 0o600, mtime, ROOT).map_err(ow)?;
    let copied = io::copy(&mut spool, &mut out).map_err(ow)?;
    if copied != data_len {
        return Err(Error::write(
            "artifact",
            io::Error::other("data spool changed size"),
        ));
    }
    tarw::write_padding(&mut out, data_len).map_err(ow)?;
    tarw::write_end(&mut out).map_err(ow)?;
    out.flush().map_err(ow)?;
    Ok(out.count)
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::InvalidSpec(format!("cannot encode JSON: {e}")))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::reader::verify_artifact;

    #[test]
    fn script_names() {
        assert!(valid_script_name("ArtifactInstall_Enter_00"));
        assert!(valid_script_name("ArtifactCommit_Leave_99_wifi-driver"));
        assert!(!valid_script_name("Download_Enter_00"));
        assert!(!valid_script_name("ArtifactInstall_Enter_0"));
        assert!(!valid_script_name("ArtifactInstall_Begin_00"));
    }

    #[test]
    fn defaults_like_mender_artifact() {
        let mut s = ArtifactSpec::module_image("n1", vec!["t".into()], "script");
        assert_eq!(
            s.effective_provides(),
            BTreeMap::from([("rootfs-image.script.version".into(), "n1".into())])
        );
        assert_eq!(s.effective_clears_provides(), vec!["rootfs-image.script.*"]);
        s.software_name = Some("app".into());
        s.software_version = Some("1.2".into());
        s.software_filesystem = Some("fs".into());
        assert_eq!(
            s.effective_provides(),
            BTreeMap::from([("fs.app.version".into(), "1.2".into())])
        );
        assert_eq!(s.effective_clears_provides(), vec!["fs.app.*"]);
    }

    #[test]
    fn round_trip_all_compressions() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ] {
            let mut spec = ArtifactSpec::single_file(
                "rel-1",
                vec!["a".into(), "b".into()],
                "/opt/app",
                PayloadFile::from_bytes("app.bin", vec![9u8; 70_000]).with_mode(0o750),
            )
            .unwrap();
            spec.compression = c;
            let mut out = Vec::new();
            let n = write_artifact(spec, &mut out).unwrap();
            assert_eq!(n, out.len() as u64);
            let info = verify_artifact(&out[..]).unwrap();
            assert_eq!(info.name, "rel-1");
            assert_eq!(info.compression, c);
            assert_eq!(info.size, n);
            let p = &info.payloads[0];
            assert_eq!(p.payload_type.as_deref(), Some("single-file"));
            let names: Vec<_> = p.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["dest_dir", "filename", "permissions", "app.bin"]);
            assert_eq!(p.files[3].size, Some(70_000));
        }
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut spec = ArtifactSpec::module_image("n", vec!["t".into()], "x");
        spec.files.push(PayloadFile::from_reader(
            "f",
            10,
            io::Cursor::new(vec![1u8; 5]),
        ));
        assert!(matches!(
            write_artifact(spec, io::sink()),
            Err(Error::InvalidSpec(_))
        ));
    }
}
