//! Log bytes as CloudWatch Logs would ingest them: the functions' JSON
//! subscriber (`baton_lambda::telemetry`, at its default `info`) installed in
//! this process, writing into a counter instead of stdout.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

static BYTES: AtomicU64 = AtomicU64::new(0);

struct Counted;

impl io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        BYTES.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct CountingSink;

impl<'a> MakeWriter<'a> for CountingSink {
    type Writer = Counted;
    fn make_writer(&'a self) -> Counted {
        Counted
    }
}

/// Installs the counting subscriber; false if another was installed first.
pub fn install() -> bool {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new("info"))
        .with_target(false)
        .with_writer(CountingSink)
        .try_init()
        .is_ok()
}

/// Bytes logged so far.
pub fn bytes() -> u64 {
    BYTES.load(Ordering::Relaxed)
}
