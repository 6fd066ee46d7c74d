//! Streaming reader and writer for Mender artifacts (formats v2 and v3).
//!
//! * [`read_artifact`] parses an artifact from any [`std::io::Read`] in one forward pass
//!   with bounded memory, either header-only ([`ReadMode::HeaderOnly`], e.g. over a ranged
//!   S3 GET) or verifying every checksum ([`ReadMode::Full`]). Errors are typed
//!   ([`Error`]); malformed input never panics.
//! * [`StreamParser`] / [`read_artifact_async`] run the same parser on a blocking thread fed
//!   from async code, so a server can parse an upload while streaming it to S3.
//! * [`write_artifact`] writes a v3 module-image artifact (`single-file`, `script`, ...)
//!   that `mender-artifact read` accepts; [`ArtifactSpec::single_file`] builds what the
//!   `single-file` update module expects.

mod compression;
mod error;
mod info;
mod reader;
mod stream;
mod tar;
mod writer;

pub use compression::Compression;
pub use error::{Error, Result};
pub use info::{ArtifactInfo, DependValue, FileInfo, JsonObject, PayloadInfo};
pub use reader::{read_artifact, read_header, verify_artifact, ReadMode, ReadOptions};
pub use stream::{read_artifact_async, StreamParser};
pub use writer::{write_artifact, ArtifactSpec, PayloadFile, ScriptFile};
