//! A 256 MiB artifact (made by `mender-artifact` from a sparse zero file) verified in full
//! through a counting reader: every byte is read once, memory stays flat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write;
use std::time::Instant;

use common::{cli_or_skip, peak_rss_kib, run, Counting};
use mender_artifact::{read_header, verify_artifact};

const SIZE: u64 = 256 << 20;

/// Writes `SIZE` bytes of pseudo-random text over a 16-letter alphabet: compresses about
/// 2:1 with Huffman codes, so decoding really works (random bytes would be stored
/// uncompressed by deflate, zeros are all back-references).
fn write_random(path: &std::path::Path) {
    let mut w = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..SIZE >> 20 {
        for chunk in block.chunks_exact_mut(16) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = b'a' + ((x >> (i * 4)) & 15) as u8;
            }
        }
        w.write_all(&block).unwrap();
    }
    w.flush().unwrap();
}

fn large(compression: &str, random: bool) {
    let test = format!("large_{compression}{}", if random { "_text" } else { "" });
    let Some(cli) = cli_or_skip(&test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if random {
        write_random(&d.join("big.img"));
    } else {
        // Sparse file of zeros.
        fs::File::create(d.join("big.img"))
            .unwrap()
            .set_len(SIZE)
            .unwrap();
    }
    let t = Instant::now();
    run(
        &cli,
        d,
        &[
            "write",
            "module-image",
            "-T",
            "single-file",
            "-n",
            "big-1",
            "-t",
            "t1",
            "-f",
            "big.img",
            "--compression",
            compression,
            "-o",
            "big.mender",
        ],
    );
    let path = d.join("big.mender");
    let file_len = fs::metadata(&path).unwrap().len();
    eprintln!(
        "{test}: mender-artifact write took {:?}, artifact is {file_len} bytes",
        t.elapsed()
    );

    let t = Instant::now();
    let header = read_header(fs::File::open(&path).unwrap()).unwrap();
    eprintln!(
        "{test}: header-only parse {:?}, read {} bytes",
        t.elapsed(),
        header.size
    );
    assert!(header.size < 16 * 1024);

    let rss_before = peak_rss_kib();
    let t = Instant::now();
    let mut reader = Counting {
        inner: fs::File::open(&path).unwrap(),
        count: 0,
        max_read: 0,
    };
    let info = verify_artifact(&mut reader).unwrap();
    let elapsed = t.elapsed();
    eprintln!(
        "{test}: full verification {elapsed:?} ({:.0} MB/s of payload), largest read {} bytes, peak RSS {:?} → {:?} KiB",
        SIZE as f64 / elapsed.as_secs_f64() / 1e6,
        reader.max_read,
        rss_before,
        peak_rss_kib()
    );
    assert_eq!(reader.count, file_len);
    assert_eq!(info.size, file_len);
    let f = &info.payloads[0].files[0];
    assert_eq!(f.size, Some(SIZE));
    if !random {
        // SHA-256 of 256 MiB of zeros.
        assert_eq!(
            f.checksum,
            "a6d72ac7690f53be6ae46ba88506bd97302a093f7108472bd9efc3cefda06484"
        );
    }
    if let Some(peak) = peak_rss_kib() {
        assert!(peak < 128 * 1024, "peak RSS {peak} KiB");
    }
}

#[test]
fn large_uncompressed_artifact() {
    large("none", false);
}

#[test]
fn large_gzip_artifact() {
    large("gzip", false);
}

/// Compressible text: gzip decoding is unoptimised in debug builds, so this takes
/// longer; run with `--ignored` (or in release).
#[test]
#[ignore]
fn large_gzip_text_artifact() {
    large("gzip", true);
}
