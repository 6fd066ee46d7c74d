//! Fuzz target `tar`: the crate's own tar reader (the outer artifact archive and the inner
//! `header.tar*` / `data/NNNN.tar*` ones, behind each decompressor) and a writer → reader
//! round trip.
//!
//! Input: one mode byte, then data. Modes 0-7: `data` is an archive, compressed as
//! `mode % 4` says (none, gzip, xz, zstd), read as the outer archive when `mode & 4`; every
//! entry must hold exactly its declared size. Modes 8 and up: `data` is a list of entries
//! (`[name length][name][data length: 2 bytes][data]`...) written with the crate's writer,
//! which must read back identically.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_artifact::fuzzing::{read_tar, write_tar};
use mender_artifact::Compression;

const COMPRESSIONS: [Compression; 4] = [
    Compression::None,
    Compression::Gzip,
    Compression::Xz,
    Compression::Zstd,
];

/// Entries encoded in `data`; names that a tar cannot hold (empty, NUL) are skipped.
fn entries(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((&name_len, rest)) = data.split_first() {
        let name_len = usize::from(name_len);
        if rest.len() < name_len + 2 {
            break;
        }
        let (name, rest) = rest.split_at(name_len);
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 4096;
        let rest = &rest[2..];
        let len = len.min(rest.len());
        let (content, rest) = rest.split_at(len);
        data = rest;
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.is_empty() || name.contains('\0') {
            continue;
        }
        out.push((name.to_string(), content.to_vec()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode < 8 {
        let compression = COMPRESSIONS[usize::from(mode % 4)];
        if let Ok(read) = read_tar(rest, compression, mode & 4 != 0, 8 << 20) {
            for e in read {
                assert_eq!(e.size, e.data.len() as u64, "{}", e.name);
            }
        }
        return;
    }
    let written = entries(rest);
    let refs: Vec<(&str, &[u8])> = written
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let archive = write_tar(&refs).expect("writing to a Vec");
    let read = match read_tar(&archive, Compression::None, true, u64::MAX) {
        Ok(read) => read,
        Err(e) => panic!("the writer's archive of {written:?} does not read back: {e}"),
    };
    let back: Vec<(String, Vec<u8>)> = read.into_iter().map(|e| (e.name, e.data)).collect();
    assert_eq!(back, written);
});
