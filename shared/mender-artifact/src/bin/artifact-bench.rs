//! Benchmark: parses an artifact file header-only and in full, printing the times,
//! throughput and the process's peak RSS (VmHWM).
//!
//! `cargo run --release -p mender-artifact --bin artifact-bench -- FILE`

use std::fs::File;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mender_artifact::{read_header, verify_artifact, ArtifactInfo, Result};

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn timed(path: &str, f: fn(File) -> Result<ArtifactInfo>) -> Result<(ArtifactInfo, Duration)> {
    let file = File::open(path).map_err(|source| mender_artifact::Error::Io {
        context: path.to_string(),
        source,
    })?;
    let start = Instant::now();
    let info = f(file)?;
    Ok((info, start.elapsed()))
}

fn run(path: &str) -> Result<()> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("file:               {path} ({len} bytes)");

    // Header-only: best of 5 (the first run also warms the page cache for the header).
    let mut best = Duration::MAX;
    let mut header = None;
    for _ in 0..5 {
        let (info, t) = timed(path, read_header)?;
        best = best.min(t);
        header = Some(info);
    }
    if let Some(h) = &header {
        println!(
            "header-only parse:  {:.3} ms (read {} bytes; name {:?}, {} payload(s), signed {})",
            best.as_secs_f64() * 1e3,
            h.size,
            h.name,
            h.payloads.len(),
            h.signed
        );
    }

    let (info, t) = timed(path, verify_artifact)?;
    let payload: u64 = info
        .payloads
        .iter()
        .flat_map(|p| &p.files)
        .filter_map(|f| f.size)
        .sum();
    let secs = t.as_secs_f64().max(1e-9);
    println!(
        "full verification:  {:.3} s, {:.1} MB/s of artifact, {:.1} MB/s of payload ({} bytes, {:?})",
        secs,
        len as f64 / secs / 1e6,
        payload as f64 / secs / 1e6,
        payload,
        info.compression
    );
    println!("peak RSS (VmHWM):   {}", peak_rss());
    Ok(())
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: artifact-bench FILE");
        return ExitCode::from(2);
    };
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
