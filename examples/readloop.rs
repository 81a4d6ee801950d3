//! The reader that `scripts/bench` runs inside its container: it times what a monitoring tool
//! does to a `/proc` file, open + read to EOF + close, and prints one `key=value` line.
//!
//! ```text
//! readloop PATH [ITERATIONS] [WARMUP]                  sequential loop
//! readloop --parallel K PATH [ITERATIONS] [WARMUP]     K threads, each ITERATIONS reads
//! readloop --first-read PATH                           one read, the first this process does
//! ```
//!
//! Output (one line, stdout):
//!
//! ```text
//! PATH iterations=N total_us=T us_per_read=X.XX bytes=B
//! PATH parallel=K iterations=N total_us=T us_per_read=X.XX reads_per_s=R bytes=B
//! PATH first_read_us=X.XX bytes=B
//! ```
//!
//! `iterations` counts per thread, `us_per_read` is wall time over all reads (so for K threads
//! it is the aggregate cost, the inverse of `reads_per_s`), `bytes` is what the last read got.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

/// Read buffer size: larger than any file the bench reads, so a read normally takes one
/// read(2) for the data and one more for EOF.
const BUF_SIZE: usize = 64 * 1024;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "readloop", about = "Times open+read+close loops on one file")]
struct Args {
    /// The file to read.
    path: PathBuf,

    /// Timed open+read+close rounds (per thread with --parallel).
    #[arg(default_value_t = 10_000)]
    iterations: u64,

    /// Untimed rounds first (per thread with --parallel).
    #[arg(default_value_t = 100)]
    warmup: u64,

    /// Time a single open+read+close, with no warm-up.
    #[arg(long, conflicts_with = "parallel")]
    first_read: bool,

    /// Run K reader threads at once and report the aggregate rate.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallel: Option<u32>,
}

/// One round: open read-only, read until EOF, close. Returns the bytes read.
fn read_once(path: &Path, buf: &mut [u8]) -> io::Result<usize> {
    let mut file = File::open(path)?;
    let mut total = 0;
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `rounds` rounds; returns the bytes of the last one.
fn read_rounds(path: &Path, rounds: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut bytes = 0;
    for _ in 0..rounds {
        bytes = read_once(path, buf)?;
    }
    Ok(bytes)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn first_read(path: &Path) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let start = Instant::now();
    let bytes = read_once(path, &mut buf)?;
    let us = micros(start.elapsed());
    println!("{} first_read_us={us:.2} bytes={bytes}", path.display());
    Ok(())
}

fn sequential(path: &Path, iterations: u64, warmup: u64) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    read_rounds(path, warmup, &mut buf)?;
    let start = Instant::now();
    let bytes = read_rounds(path, iterations, &mut buf)?;
    let us = micros(start.elapsed());
    println!(
        "{} iterations={iterations} total_us={us:.0} us_per_read={:.2} bytes={bytes}",
        path.display(),
        us / iterations.max(1) as f64
    );
    Ok(())
}

/// K threads warm up, meet at a barrier, and read; the clock runs from the barrier until the
/// last thread is done.
fn parallel(path: &Path, threads: u32, iterations: u64, warmup: u64) -> io::Result<()> {
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            let path = path.to_path_buf();
            thread::spawn(move || {
                let mut buf = vec![0u8; BUF_SIZE];
                let warm = read_rounds(&path, warmup, &mut buf);
                // Always reach the barrier, or the other threads would wait forever.
                barrier.wait();
                warm?;
                read_rounds(&path, iterations, &mut buf)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut bytes = 0;
    for worker in workers {
        bytes = worker
            .join()
            .map_err(|_| io::Error::other("reader thread panicked"))??;
    }
    let us = micros(start.elapsed());
    let reads = (u64::from(threads) * iterations).max(1) as f64;
    println!(
        "{} parallel={threads} iterations={iterations} total_us={us:.0} us_per_read={:.2} \
         reads_per_s={:.0} bytes={bytes}",
        path.display(),
        us / reads,
        reads / (us / 1e6)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.first_read {
        first_read(&args.path)
    } else if let Some(k) = args.parallel {
        parallel(&args.path, k, args.iterations, args.warmup)
    } else {
        sequential(&args.path, args.iterations, args.warmup)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("readloop: {}: {e}", args.path.display());
            ExitCode::FAILURE
        }
    }
}
