//! Entry points for the fuzz targets in the repository's `fuzz/` directory (feature
//! `fuzzing`; not a stable API): the crate's own tar reader and writer, otherwise private,
//! behind the same bounded decoders the artifact reader uses.

use std::io::{self, Read};

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::reader::LimitReader;
use crate::tar::{self, EntryKind, TarReader};

/// Decoder memory cap used by [`read_tar`] (as small as fuzzing needs).
const DECODER_MEMORY: u64 = 16 << 20;

/// One entry as [`read_tar`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Name (long names from PAX `path` / GNU `L` entries).
    pub name: String,
    /// Declared size, equal to `data.len()`.
    pub size: u64,
    /// Type flag: `b'0'` for files, `b'5'` for directories, else the raw flag.
    pub kind: u8,
    /// The entry's data.
    pub data: Vec<u8>,
}

/// Reads every entry of the tar archive in `data`, first decompressed with `compression`
/// (at most `max_output` decompressed bytes), as the outer artifact archive (`outer`) or as
/// an inner `header.tar*` / `data/NNNN.tar*` one, up to the end-of-archive marker.
pub fn read_tar(
    data: &[u8],
    compression: Compression,
    outer: bool,
    max_output: u64,
) -> Result<Vec<TarEntry>> {
    let decoder = compression
        .decoder(data, DECODER_MEMORY)
        .map_err(|source| Error::Decompress {
            member: "fuzz".into(),
            source,
        })?;
    let mut r = TarReader::new(
        LimitReader::new(decoder, Some(max_output), None),
        "fuzz",
        outer,
    );
    let mut entries = Vec::new();
    while let Some(e) = r.next_entry()? {
        let mut data = Vec::new();
        r.read_to_end(&mut data).map_err(|source| Error::Io {
            context: e.name.clone(),
            source,
        })?;
        entries.push(TarEntry {
            kind: match e.kind {
                EntryKind::File => b'0',
                EntryKind::Directory => b'5',
                EntryKind::Other(flag) => flag,
            },
            name: e.name,
            size: e.size,
            data,
        });
    }
    Ok(entries)
}

/// Writes regular files `(name, data)` and the end-of-archive marker with the crate's tar
/// writer (PAX headers for long names), as the artifact writer lays out members.
pub fn write_tar(entries: &[(&str, &[u8])]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for (name, data) in entries {
        tar::write_file(&mut out, name, data, 0o644, 1_700_000_000, tar::ROOT)?;
    }
    tar::write_end(&mut out)?;
    Ok(out)
}
