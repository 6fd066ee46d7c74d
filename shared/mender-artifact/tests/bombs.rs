//! Decompression bombs and data after the end of an archive (issue 12, finding 3).
//!
//! Each payload member here is crafted by hand, without compressing gigabytes: a gzip stream
//! made of one repeated deflate block of zeros, zstd RLE blocks (4 bytes for 128 KiB), an xz
//! stream whose tar header declares 40 GiB. Every case must end quickly (a watchdog thread
//! fails the test after a deadline) and with memory that does not grow with the bomb.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{join, peak_rss_kib, set_manifest_sum, split, tar, ustar_header, Counting, Member};
use mender_artifact::{
    read_artifact, verify_artifact, write_artifact, ArtifactSpec, Compression, Error, PayloadFile,
    ReadOptions, StreamParser,
};

const GIB: u64 = 1 << 30;

/// Runs `f` on a thread; panics if it takes longer than `secs` seconds.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: not finished within {secs} s"));
    eprintln!("{what}: {:?}", start.elapsed());
    out
}

/// Peak RSS must stay well below the bomb's size.
fn assert_bounded_memory(what: &str) {
    if let Some(peak) = peak_rss_kib() {
        eprintln!("{what}: peak RSS {peak} KiB");
        assert!(peak < 256 * 1024, "{what}: peak RSS {peak} KiB");
    }
}

/// A valid uncompressed artifact (crate writer) with one payload file `f`, split into its
/// members; tests replace `data/0000.tar` with a crafted member.
fn members() -> Vec<Member> {
    let mut spec = ArtifactSpec::module_image("bomb-1", vec!["t1".into()], "single-file");
    spec.files
        .push(PayloadFile::from_bytes("f", b"hello".to_vec()));
    spec.compression = Compression::None;
    let mut out = Vec::new();
    write_artifact(spec, &mut out).unwrap();
    split(&out)
}

/// The artifact with `data` as its payload member `name`, whose file `f` is declared to
/// have `content` (its manifest checksum).
fn with_data(name: &str, data: Vec<u8>, content: &[u8]) -> Vec<u8> {
    let mut m = members();
    set_manifest_sum(&mut m, "data/0000/f", content);
    let d = m.iter_mut().find(|m| m.name == "data/0000.tar").unwrap();
    d.name = name.into();
    d.data = data;
    join(&m)
}

/// A ustar header whose size field is GNU base-256 (for sizes beyond 8 GiB).
fn header_base256(name: &str, size: u64) -> [u8; 512] {
    let mut b = ustar_header(name, 0);
    b[124..136].fill(0);
    b[124] = 0x80;
    b[128..136].copy_from_slice(&size.to_be_bytes());
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

/// A gzip stream of `prefix` followed by `mib` MiB of zeros, a few KiB per GiB: one deflate
/// block that decodes to 1 MiB of zeros (its back-references only reach zeros) is repeated.
/// The CRC and length in the trailer are right, so the stream is valid.
fn gzip_with_zero_tail(prefix: &[u8], mib: u64) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let window = vec![0u8; 64 * 1024];
    let one_mib = vec![0u8; 1 << 20];
    enc.write_all(prefix).unwrap();
    enc.write_all(&window).unwrap();
    enc.flush().unwrap(); // sync flush: byte-aligned, window all zeros
    let start = enc.get_ref().len();
    enc.write_all(&one_mib).unwrap();
    enc.flush().unwrap();
    let deflate = enc.get_ref().clone();
    let block = &deflate[start..];

    let mut crc = flate2::Crc::new();
    crc.update(prefix);
    crc.update(&window);
    let mut zeros_crc = flate2::Crc::new();
    zeros_crc.update(&one_mib);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(&deflate);
    crc.combine(&zeros_crc);
    for _ in 1..mib {
        out.extend_from_slice(block);
        crc.combine(&zeros_crc);
    }
    out.extend_from_slice(&[0x03, 0x00]); // final, empty, fixed-Huffman block
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    out
}

/// A zstd frame: `raw` as a raw block, then `zero_blocks` RLE blocks of 128 KiB of zeros.
fn zstd_rle(raw: &[u8], zero_blocks: u64) -> Vec<u8> {
    let block_header = |last: bool, kind: u32, size: u32| {
        let v = u32::from(last) | (kind << 1) | (size << 3);
        v.to_le_bytes()[..3].to_vec()
    };
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3]; // no content size, 128 KiB window
    out.extend(block_header(zero_blocks == 0, 0, raw.len() as u32));
    out.extend_from_slice(raw);
    for i in 0..zero_blocks {
        out.extend(block_header(i + 1 == zero_blocks, 1, 128 * 1024));
        out.push(0);
    }
    out
}

/// A zstd skippable frame of `len` bytes (ignored by decoders).
fn zstd_skippable(len: u32) -> Vec<u8> {
    let mut out = vec![0x50, 0x2a, 0x4d, 0x18];
    out.extend_from_slice(&len.to_le_bytes());
    out.resize(out.len() + len as usize, 0xa5);
    out
}

/// Declared small: the payload tar ends (end-of-archive marker) after a 1 KiB file, but its
/// gzip stream goes on with 4 GiB of zeros. Upstream's reader stops at the marker; ours
/// used to decompress the whole stream.
#[test]
fn gzip_zeros_after_the_payload_tar_end_are_not_decompressed() {
    let content = vec![b'x'; 1024];
    let inner = tar(&[("f", &content)]);
    let gz = gzip_with_zero_tail(&inner, 4096);
    eprintln!("gzip bomb: {} bytes → 4 GiB", gz.len());
    let artifact = with_data("data/0000.tar.gz", gz, &content);
    let info = within(20, "gzip tail", move || verify_artifact(&artifact[..])).unwrap();
    let f = &info.payloads[0].files[0];
    assert_eq!(f.size, Some(1024));
    assert_bounded_memory("gzip tail");
}

/// Declared plausibly (4 GiB, within the total limit) but expanding 32768:1: zstd RLE blocks
/// behind a 512-byte raw block holding the tar header, padded with a skippable frame so that
/// the member's compressed size does not give the bomb away before decompression. Rejected by
/// the ratio limit once the grace allowance is used up.
#[test]
fn zstd_bomb_is_rejected_by_the_compression_ratio() {
    let header = ustar_header("f", 4 * GIB);
    let mut zst = zstd_rle(&header, 4 * GIB / (128 * 1024));
    zst.extend(zstd_skippable(8 << 20));
    eprintln!("zstd bomb: {} bytes → 4 GiB", zst.len());
    let artifact = with_data("data/0000.tar.zst", zst, b"not checked");
    let err = within(60, "zstd ratio", move || verify_artifact(&artifact[..])).unwrap_err();
    assert!(matches!(err, Error::CompressionRatio { .. }), "{err}");
    assert!(err.to_string().contains("data/0000.tar.zst"), "{err}");
    assert_bounded_memory("zstd ratio");
}

/// Declared huge: the tar header of the payload file announces 40 GiB (base-256), more than
/// the limit on decompressed payload data; refused at the header, before decompressing it.
#[test]
fn xz_payload_declared_huge_is_rejected_at_its_header() {
    let mut inner = header_base256("f", 40 * GIB).to_vec();
    inner.extend(vec![0u8; 1 << 20]);
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 0);
    enc.write_all(&inner).unwrap();
    let xz = enc.finish().unwrap();
    let artifact = with_data("data/0000.tar.xz", xz, b"not checked");
    let err = within(10, "xz declared", move || verify_artifact(&artifact[..])).unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
}

/// Declared 4 GiB in a zstd member of a few hundred KiB: the member cannot hold that much
/// within the ratio limit, so it is refused at the tar header without decompressing.
#[test]
fn zstd_payload_declared_beyond_the_ratio_is_rejected_at_its_header() {
    let header = ustar_header("f", 4 * GIB);
    let zst = zstd_rle(&header, 4 * GIB / (128 * 1024));
    let artifact = with_data("data/0000.tar.zst", zst, b"not checked");
    let err = within(5, "zstd declared", move || verify_artifact(&artifact[..])).unwrap_err();
    assert!(matches!(err, Error::CompressionRatio { .. }), "{err}");
}

/// The decompressed size of a payload file is the size its tar header declares: a stream
/// that ends early is a truncation. (This already held before the bomb limits: the tar
/// reader never hands out more or fewer bytes than declared.)
#[test]
fn payload_file_shorter_than_declared_is_truncated() {
    let mut inner = ustar_header("f", 1 << 20).to_vec();
    inner.extend(vec![7u8; 4096]);
    let gz = common::gzip(&inner);
    let artifact = with_data("data/0000.tar.gz", gz, &vec![7u8; 1 << 20]);
    let err = verify_artifact(&artifact[..]).unwrap_err();
    assert!(err.is_truncated(), "{err}");
}

/// Data after the outer end-of-archive marker is ignored and not read (upstream's Go
/// reader stops at the marker too); `StreamParser` still counts it in `size`, since it is
/// part of the upload.
#[test]
fn data_after_the_artifact_end_is_not_read() {
    let mut spec = ArtifactSpec::module_image("trail-1", vec!["t1".into()], "single-file");
    spec.files
        .push(PayloadFile::from_bytes("f", vec![1u8; 5000]));
    let mut artifact = Vec::new();
    write_artifact(spec, &mut artifact).unwrap();
    let len = artifact.len() as u64;
    let mut reader = Counting {
        inner: (&artifact[..]).chain(std::io::repeat(0x5a).take(64 << 20)),
        count: 0,
        max_read: 0,
    };
    let info = verify_artifact(&mut reader).unwrap();
    assert_eq!(
        reader.count, len,
        "bytes read after the end-of-archive marker"
    );
    assert_eq!(info.size, len);

    let mut with_tail = artifact.clone();
    with_tail.extend(vec![0x5au8; 100_000]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let size = rt.block_on(async {
        let mut p = StreamParser::spawn(ReadOptions::full());
        for chunk in with_tail.chunks(4096) {
            p.feed(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        p.finish().await.unwrap().size
    });
    assert_eq!(size, with_tail.len() as u64);
}

/// `max_payload_size` caps the total over all payload files, here of an ordinary artifact.
#[test]
fn max_payload_size_is_enforced() {
    let mut spec = ArtifactSpec::module_image("cap-1", vec!["t1".into()], "single-file");
    spec.files
        .push(PayloadFile::from_bytes("a", vec![3u8; 600 * 1024]));
    spec.files
        .push(PayloadFile::from_bytes("b", vec![4u8; 600 * 1024]));
    let mut artifact = Vec::new();
    write_artifact(spec, &mut artifact).unwrap();
    let opts = |max| ReadOptions {
        max_payload_size: max,
        ..ReadOptions::full()
    };
    read_artifact(&artifact[..], &opts(2 << 20)).unwrap();
    // Each file fits, the two do not: refused at the second file's header.
    let err = read_artifact(&artifact[..], &opts(1 << 20)).unwrap_err();
    match &err {
        Error::PayloadTooLarge { member, limit } => {
            assert_eq!(*limit, 1 << 20);
            assert!(member.contains("file b"), "{err}");
        }
        other => panic!("{other}"),
    }
}

/// The ratio is checked while decoding: gzip'd zeros (~1000:1) with a small grace.
#[test]
fn gzip_ratio_is_checked_while_decoding() {
    let content = vec![0u8; 64 << 20];
    let mut inner = ustar_header("f", content.len() as u64).to_vec();
    inner.extend_from_slice(&content);
    inner.extend_from_slice(&[0u8; 1024]);
    let mut gz = gzip_with_zero_tail(&inner, 1);
    // Bytes after the gzip stream (ignored by the decoder) make the member large enough
    // for the declared 64 MiB to pass the check at the tar header.
    gz.extend(vec![0u8; 1 << 20]);
    let artifact = with_data("data/0000.tar.gz", gz, &content);
    let opts = |ratio| ReadOptions {
        max_compression_ratio: ratio,
        compression_ratio_grace: 1 << 20,
        ..ReadOptions::full()
    };
    read_artifact(&artifact[..], &opts(2000)).unwrap();
    let err = read_artifact(&artifact[..], &opts(100)).unwrap_err();
    match &err {
        Error::CompressionRatio {
            member,
            decompressed,
            compressed,
            max_ratio,
        } => {
            assert_eq!(member, "data/0000.tar.gz");
            assert_eq!(*max_ratio, 100);
            assert!(*decompressed > (1 << 20) + 100 * *compressed, "{err}");
            assert!(*decompressed < 32 << 20, "stopped early: {err}");
        }
        other => panic!("{other}"),
    }
}
