//! Minimal streaming tar reader and writer (ustar, with PAX/GNU long names and sizes).
//!
//! Written here rather than taken from a crate so that the reader can (a) tell a truncated
//! stream from a finished one (a clean end needs the end-of-archive marker), (b) count every
//! byte consumed, and (c) never allocate more than a fixed amount per entry header.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

pub(crate) const BLOCK: usize = 512;

/// Largest PAX extended header / GNU long-name entry accepted (they are buffered).
const MAX_EXTENSION_SIZE: u64 = 64 * 1024;

/// Largest size the octal `size` field of a ustar header can hold.
const MAX_OCTAL_SIZE: u64 = 0o77777777777;

/// Kind of a tar entry, as far as artifacts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Directory,
    Other(u8),
}

/// Header of the entry the reader is positioned on.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub size: u64,
    pub mtime: i64,
    pub kind: EntryKind,
}

/// Pull-style tar reader: `next_entry` then `Read` the entry's data.
///
/// `outer` selects how read errors are reported: for the outer artifact the inner reader is
/// the caller's source (errors become [`Error::Io`]); for inner archives the inner reader is
/// a decompressor (errors become [`Error::Decompress`], refined by the caller).
pub(crate) struct TarReader<R> {
    inner: R,
    context: String,
    outer: bool,
    pos: u64,
    remaining: u64,
    padding: u64,
    finished: bool,
    truncated: bool,
    source_error: Option<io::Error>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, context: impl Into<String>, outer: bool) -> Self {
        TarReader {
            inner,
            context: context.into(),
            outer,
            pos: 0,
            remaining: 0,
            padding: 0,
            finished: false,
            truncated: false,
            source_error: None,
        }
    }

    /// Bytes consumed from the inner reader so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// True once an EOF was met where more data was required.
    pub fn hit_truncation(&self) -> bool {
        self.truncated
    }

    /// Takes the last error returned by the inner reader, if any.
    pub fn take_source_error(&mut self) -> Option<io::Error> {
        self.source_error.take()
    }

    fn map_io(&self, e: io::Error) -> Error {
        if self.truncated || e.kind() == io::ErrorKind::UnexpectedEof {
            return Error::Truncated {
                context: self.context.clone(),
            };
        }
        if self.outer {
            Error::Io {
                context: self.context.clone(),
                source: e,
            }
        } else {
            Error::Decompress {
                member: self.context.clone(),
                source: e,
            }
        }
    }

    /// Reads from the inner reader, tracking position, errors and EOF.
    fn raw_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.source_error = Some(io::Error::new(e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
    }

    /// Fills `buf` completely; returns `Ok(false)` on EOF before the first byte.
    fn read_block(&mut self, buf: &mut [u8; BLOCK]) -> Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            let n = self
                .raw_read(&mut buf[filled..])
                .map_err(|e| self.map_io(e))?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                self.truncated = true;
                return Err(Error::Truncated {
                    context: self.context.clone(),
                });
            }
            filled += n;
        }
        Ok(true)
    }

    /// Discards `n` bytes of the inner reader.
    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self
                .raw_read(&mut buf[..want])
                .map_err(|e| self.map_io(e))?;
            if got == 0 {
                self.truncated = true;
                return Err(Error::Truncated {
                    context: self.context.clone(),
                });
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads the whole data of the current entry (used for small extension entries).
    fn read_entry_data(&mut self, limit: u64) -> Result<Vec<u8>> {
        if self.remaining > limit {
            return Err(Error::TooLarge {
                member: format!("tar extension header in {}", self.context),
                limit,
            });
        }
        let mut data = vec![0u8; self.remaining as usize];
        let mut filled = 0;
        while filled < data.len() {
            let n = self.read(&mut data[filled..]).map_err(|e| self.map_io(e))?;
            filled += n;
        }
        Ok(data)
    }

    /// Advances to the next entry, skipping what is left of the current one.
    /// Returns `None` at the end-of-archive marker.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.finished {
            return Ok(None);
        }
        let left = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(left)?;

        let mut long_name: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                self.truncated = true;
                return Err(Error::Truncated {
                    context: format!("{} (no end-of-archive marker)", self.context),
                });
            }
            if block.iter().all(|&b| b == 0) {
                // End of archive: two zero blocks. (Go's archive/tar tolerates EOF instead
                // of the second one; we do not, so that a cut upload is always noticed.)
                if !self.read_block(&mut block)? {
                    self.truncated = true;
                    return Err(Error::Truncated {
                        context: format!("{} (incomplete end-of-archive marker)", self.context),
                    });
                }
                if block.iter().any(|&b| b != 0) {
                    return Err(Error::invalid_tar(
                        self.context.clone(),
                        "garbage after the first end-of-archive block",
                    ));
                }
                self.finished = true;
                return Ok(None);
            }
            let header = parse_header(&block).map_err(|r| Error::invalid_tar(&self.context, r))?;
            self.remaining = pax_size.take().unwrap_or(header.size);
            self.padding = padding(self.remaining);
            match header.typeflag {
                b'x' => {
                    let data = self.read_entry_data(MAX_EXTENSION_SIZE)?;
                    let (path, size) =
                        parse_pax(&data).map_err(|r| Error::invalid_tar(&self.context, r))?;
                    if path.is_some() {
                        long_name = path;
                    }
                    pax_size = size;
                    self.skip_current()?;
                }
                b'L' => {
                    let data = self.read_entry_data(MAX_EXTENSION_SIZE)?;
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    long_name = Some(
                        String::from_utf8(data[..end].to_vec())
                            .map_err(|_| Error::invalid_tar(&self.context, "non-UTF-8 name"))?,
                    );
                    self.skip_current()?;
                }
                b'g' | b'K' => {
                    self.skip_current()?;
                }
                flag => {
                    let kind = match flag {
                        b'0' | 0 | b'7' => EntryKind::File,
                        b'5' => EntryKind::Directory,
                        other => EntryKind::Other(other),
                    };
                    // The header's own name only counts without a PAX `path` / GNU long name
                    // (writers truncate it, possibly inside a UTF-8 character).
                    let name = match long_name.take() {
                        Some(name) => name,
                        None => String::from_utf8(header.name).map_err(|_| {
                            Error::invalid_tar(&self.context, "non-UTF-8 entry name")
                        })?,
                    };
                    return Ok(Some(Entry {
                        name,
                        size: self.remaining,
                        mtime: header.mtime,
                        kind,
                    }));
                }
            }
        }
    }

    fn skip_current(&mut self) -> Result<()> {
        let left = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(left)
    }

    /// Reads what follows the end-of-archive marker, at most `limit` bytes; returns true
    /// when the inner reader reached its EOF within them (for a decompressor: its trailer
    /// was read and checked). The rest, if any, is left unread.
    pub fn drain_upto(&mut self, limit: u64) -> Result<bool> {
        let mut buf = [0u8; 8192];
        let mut left = limit;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = self
                .raw_read(&mut buf[..want])
                .map_err(|e| self.map_io(e))?;
            if n == 0 {
                return Ok(true);
            }
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        Ok(self.raw_read(&mut probe).map_err(|e| self.map_io(e))? == 0)
    }

    /// Bytes of the current entry not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current entry's data; `Ok(0)` at the end of the entry. A premature EOF of
    /// the inner reader is an `UnexpectedEof` error (and marks the reader truncated).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.raw_read(&mut buf[..want])?;
        if n == 0 {
            self.truncated = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} truncated", self.context),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct RawHeader {
    /// Raw bytes: checked as UTF-8 only when no extension header overrides it.
    name: Vec<u8>,
    size: u64,
    mtime: i64,
    typeflag: u8,
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn parse_octal(field: &[u8]) -> Result<u64, String> {
    let text = cstr(field);
    let trimmed: Vec<u8> = text
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != b' ')
        .collect();
    if trimmed.is_empty() {
        return Ok(0);
    }
    let mut value: u64 = 0;
    for b in trimmed {
        if !(b'0'..=b'7').contains(&b) {
            return Err(format!(
                "invalid octal number {:?}",
                String::from_utf8_lossy(text)
            ));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| "numeric field overflow".to_string())?;
    }
    Ok(value)
}

/// Numeric field: octal text, or GNU base-256 (high bit of the first byte set).
fn parse_numeric(field: &[u8]) -> Result<u64, String> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err("negative base-256 number".into());
        }
        let mut value: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| "numeric field overflow".to_string())?;
        }
        return Ok(value);
    }
    parse_octal(field)
}

fn parse_header(block: &[u8; BLOCK]) -> Result<RawHeader, String> {
    let stored = parse_octal(&block[148..156]).map_err(|_| "not a tar header".to_string())?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err("not a tar header (bad header checksum)".into());
    }
    let ustar = &block[257..262] == b"ustar";
    let mut name = cstr(&block[0..100]).to_vec();
    if ustar {
        let prefix = cstr(&block[345..500]);
        // GNU tar uses part of the prefix area for atime/ctime; only POSIX ustar ("ustar\0")
        // has a real prefix.
        if !prefix.is_empty() && block[262] == 0 {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    let size = parse_numeric(&block[124..136])?;
    let mtime = parse_numeric(&block[136..148])?;
    Ok(RawHeader {
        name,
        size,
        mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
        typeflag: block[156],
    })
}

/// Parses PAX records (`"<len> <key>=<value>\n"`); returns `path` and `size` if present.
fn parse_pax(mut data: &[u8]) -> Result<(Option<String>, Option<u64>), String> {
    let mut path = None;
    let mut size = None;
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("malformed PAX record".into());
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("malformed PAX record")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => {
                path = Some(String::from_utf8(value.to_vec()).map_err(|_| "non-UTF-8 PAX path")?);
            }
            b"size" => {
                size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("malformed PAX size")?,
                );
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok((path, size))
}

/// Ownership fields written into a header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub uname: &'static str,
}

pub(crate) const NO_OWNER: Owner = Owner { uname: "" };
pub(crate) const ROOT: Owner = Owner { uname: "root" };

fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

fn ustar_block(
    name: &[u8],
    size: u64,
    mode: u32,
    mtime: u64,
    typeflag: u8,
    owner: Owner,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    // Truncated (the full name is in a PAX header) at a character boundary, so that the
    // field stays UTF-8 for readers that check it.
    let mut n = name.len().min(100);
    while n > 0 && n < name.len() && (name[n] & 0xc0) == 0x80 {
        n -= 1;
    }
    b[..n].copy_from_slice(&name[..n]);
    put_octal(&mut b[100..108], u64::from(mode));
    put_octal(&mut b[108..116], 0);
    put_octal(&mut b[116..124], 0);
    put_octal(&mut b[124..136], size.min(MAX_OCTAL_SIZE));
    put_octal(&mut b[136..148], mtime.min(MAX_OCTAL_SIZE));
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    let u = owner.uname.as_bytes();
    b[265..265 + u.len()].copy_from_slice(u);
    b[297..297 + u.len()].copy_from_slice(u);
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let text = format!("{sum:06o}");
    b[148..154].copy_from_slice(&text.as_bytes()[text.len() - 6..]);
    b[154] = 0;
    b[155] = b' ';
    b
}

fn pax_record(key: &str, value: &str) -> String {
    // The length prefix counts itself: iterate until it is stable.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    loop {
        let candidate = len.to_string().len() + body.len();
        if candidate == len {
            return format!("{len}{body}");
        }
        len = candidate;
    }
}

/// Writes the header(s) of a regular file entry (a PAX header first when the name does
/// not fit ustar or the size exceeds 8 GiB). Returns the number of bytes written.
pub(crate) fn write_file_header<W: Write>(
    w: &mut W,
    name: &str,
    size: u64,
    mode: u32,
    mtime: u64,
    owner: Owner,
) -> io::Result<u64> {
    let mut written = 0;
    let mut pax = String::new();
    if name.len() > 100 {
        pax.push_str(&pax_record("path", name));
    }
    if size > MAX_OCTAL_SIZE {
        pax.push_str(&pax_record("size", &size.to_string()));
    }
    if !pax.is_empty() {
        let block = ustar_block(
            b"././@PaxHeader",
            pax.len() as u64,
            0o644,
            mtime,
            b'x',
            owner,
        );
        w.write_all(&block)?;
        w.write_all(pax.as_bytes())?;
        let pad = padding(pax.len() as u64) as usize;
        w.write_all(&[0u8; BLOCK][..pad])?;
        written += (BLOCK + pax.len() + pad) as u64;
    }
    w.write_all(&ustar_block(
        name.as_bytes(),
        size,
        mode,
        mtime,
        b'0',
        owner,
    ))?;
    Ok(written + BLOCK as u64)
}

/// Writes the zero padding after `size` bytes of entry data. Returns the bytes written.
pub(crate) fn write_padding<W: Write>(w: &mut W, size: u64) -> io::Result<u64> {
    let pad = padding(size) as usize;
    w.write_all(&[0u8; BLOCK][..pad])?;
    Ok(pad as u64)
}

/// Writes a whole small entry (header, data, padding). Returns the bytes written.
pub(crate) fn write_file<W: Write>(
    w: &mut W,
    name: &str,
    data: &[u8],
    mode: u32,
    mtime: u64,
    owner: Owner,
) -> io::Result<u64> {
    let mut n = write_file_header(w, name, data.len() as u64, mode, mtime, owner)?;
    w.write_all(data)?;
    n += data.len() as u64;
    n += write_padding(w, data.len() as u64)?;
    Ok(n)
}

/// Writes the end-of-archive marker (two zero blocks). Returns the bytes written.
pub(crate) fn write_end<W: Write>(w: &mut W) -> io::Result<u64> {
    w.write_all(&[0u8; 2 * BLOCK])?;
    Ok(2 * BLOCK as u64)
}

/// Size of a whole entry (headers + data + padding) as written by [`write_file_header`].
#[cfg(test)]
pub(crate) fn entry_size(name: &str, size: u64) -> u64 {
    let mut sink = io::sink();
    let header = write_file_header(&mut sink, name, size, 0o644, 0, NO_OWNER).unwrap_or(0);
    header + size + padding(size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            write_file(&mut out, name, data, 0o644, 1_700_000_000, ROOT).unwrap();
        }
        write_end(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_with_long_name() {
        let long = "d/".repeat(80) + "file";
        let data = archive(&[("a", b"hello"), (&long, b"x")]);
        assert_eq!(
            data.len() as u64,
            entry_size("a", 5) + entry_size(&long, 1) + 1024
        );
        let mut r = TarReader::new(&data[..], "t", true);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.name.as_str(), e.size, e.mtime), ("a", 5, 1_700_000_000));
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name, long);
        assert!(r.next_entry().unwrap().is_none());
        assert_eq!(r.position(), data.len() as u64);
        assert!(r.drain_upto(0).unwrap());
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn drain_upto_stops_at_its_limit() {
        let mut data = archive(&[("a", b"hello")]);
        let end = data.len() as u64;
        data.extend(vec![9u8; 20_000]);
        let mut r = TarReader::new(&data[..], "t", true);
        r.next_entry().unwrap().unwrap();
        assert!(r.next_entry().unwrap().is_none());
        assert_eq!(r.position(), end, "nothing read after the marker");
        assert!(!r.drain_upto(10_000).unwrap());
        assert_eq!(r.position(), end + 10_001);
        assert!(r.drain_upto(10_000).unwrap());
        assert_eq!(r.position(), data.len() as u64);
    }

    #[test]
    fn truncation_is_detected() {
        let data = archive(&[("a", &[7u8; 1000])]);
        for cut in [0, 100, 512, 700, 1536, 1600, 2048, 2559] {
            let mut r = TarReader::new(&data[..cut], "t", true);
            let res = (|| -> Result<()> {
                while let Some(_e) = r.next_entry()? {
                    io::copy(&mut r, &mut io::sink()).map_err(|e| r.map_io(e))?;
                }
                Ok(())
            })();
            assert!(
                matches!(res, Err(Error::Truncated { .. })),
                "cut {cut}: {res:?}"
            );
        }
    }

    /// Found by the `tar` fuzz target: a long name whose first 100 bytes end inside a UTF-8
    /// character was written truncated mid-character, and the reader refused the ustar name
    /// even though the PAX `path` replaces it.
    #[test]
    fn long_utf8_name_round_trips() {
        let name = format!("x{}", "\u{e9}".repeat(60));
        let data = archive(&[("a", b"hello"), (&name, b"long")]);
        let pos = BLOCK + BLOCK + BLOCK + BLOCK; // "a" + data, PAX header + records
        assert!(std::str::from_utf8(cstr(&data[pos..pos + 100])).is_ok());
        let mut r = TarReader::new(&data[..], "t", true);
        assert_eq!(r.next_entry().unwrap().unwrap().name, "a");
        assert_eq!(r.next_entry().unwrap().unwrap().name, name);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn pax_path_overrides_a_non_utf8_header_name() {
        let name = "\u{e9}".repeat(60);
        let mut data = archive(&[(&name, b"x")]);
        // As another writer may leave it: the ustar name cut inside a character.
        let pos = 2 * BLOCK;
        data[pos + 99] = 0xc3;
        data[pos + 148..pos + 156].fill(b' ');
        let sum: u64 = data[pos..pos + BLOCK].iter().map(|&b| u64::from(b)).sum();
        data[pos + 148..pos + 155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut r = TarReader::new(&data[..], "t", true);
        assert_eq!(r.next_entry().unwrap().unwrap().name, name);
        // Without the PAX header the same name is refused.
        let mut r = TarReader::new(&data[pos..], "t", true);
        assert!(matches!(r.next_entry(), Err(Error::InvalidTar { .. })));
    }

    #[test]
    fn garbage_is_not_tar() {
        let data = vec![0x41u8; 2048];
        let mut r = TarReader::new(&data[..], "t", true);
        assert!(matches!(r.next_entry(), Err(Error::InvalidTar { .. })));
    }

    #[test]
    fn base256_and_pax_size() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 5;
        field[10] = 1;
        assert_eq!(parse_numeric(&field).unwrap(), 261);
        let rec = pax_record("size", "9000000000");
        let (_, size) = parse_pax(rec.as_bytes()).unwrap();
        assert_eq!(size, Some(9_000_000_000));
        let rec = pax_record("path", &"x".repeat(95));
        assert_eq!(
            rec.len(),
            rec[..rec.find(' ').unwrap()].parse::<usize>().unwrap()
        );
    }
}
