//! `[access_log]`: where the per-request access line goes and how it is
//! buffered on its way there.

use serde::Deserialize;

pub const DEFAULT_ACCESS_LOG_PATH: &str = "stdout";
pub const DEFAULT_ACCESS_LOG_BUFFER_BYTES: usize = 64 * 1024;
pub const DEFAULT_ACCESS_LOG_QUEUE_BUFFERS: usize = 64;
pub const DEFAULT_ACCESS_LOG_FLUSH_MS: u64 = 1000;
pub const DEFAULT_ACCESS_LOG_SAMPLE_2XX_HITS: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// `stdout`, `off`, or a file (appended to; reopened on SIGUSR1).
    pub path: String,
    /// `json` or `text`; empty: `log.format`.
    pub format: String,
    /// Bytes of lines a worker thread collects before handing them to the
    /// writer thread in one write.
    pub buffer_bytes: usize,
    /// Full buffers waiting for the writer; past it lines are dropped and
    /// counted in `access_log_dropped_total`, never waited for.
    pub queue_buffers: usize,
    /// The longest a line waits in a worker's buffer before it is written.
    pub flush_ms: u64,
    /// Write one in this many 2xx cache hits; every other line is always
    /// written. 1: every line.
    pub sample_2xx_hits: u32,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            path: DEFAULT_ACCESS_LOG_PATH.into(),
            format: String::new(),
            buffer_bytes: DEFAULT_ACCESS_LOG_BUFFER_BYTES,
            queue_buffers: DEFAULT_ACCESS_LOG_QUEUE_BUFFERS,
            flush_ms: DEFAULT_ACCESS_LOG_FLUSH_MS,
            sample_2xx_hits: DEFAULT_ACCESS_LOG_SAMPLE_2XX_HITS,
        }
    }
}

impl AccessLogConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() {
            return Err("access_log.path: must be \"stdout\", \"off\" or a file path".into());
        }
        if !matches!(self.format.as_str(), "" | "json" | "text") {
            return Err("access_log.format: must be \"json\" or \"text\" (or unset: log.format)".into());
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.buffer_bytes) {
            return Err("access_log.buffer_bytes: must be between 4096 and 16777216".into());
        }
        if !(1..=4096).contains(&self.queue_buffers) {
            return Err("access_log.queue_buffers: must be between 1 and 4096".into());
        }
        if !(10..=60_000).contains(&self.flush_ms) {
            return Err("access_log.flush_ms: must be between 10 and 60000".into());
        }
        if self.sample_2xx_hits == 0 {
            return Err("access_log.sample_2xx_hits: must be at least 1 (1 writes every line)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::PathBuf;

    #[test]
    fn bad_access_log_values_name_their_field() {
        for (toml, field) in [
            ("[access_log]\npath = \"\"\n", "access_log.path"),
            ("[access_log]\nformat = \"xml\"\n", "access_log.format"),
            ("[access_log]\nbuffer_bytes = 10\n", "access_log.buffer_bytes"),
            ("[access_log]\nqueue_buffers = 0\n", "access_log.queue_buffers"),
            ("[access_log]\nflush_ms = 0\n", "access_log.flush_ms"),
            (
                "[access_log]\nsample_2xx_hits = 0\n",
                "access_log.sample_2xx_hits",
            ),
        ] {
            let e = Config::parse(toml, PathBuf::new()).unwrap_err();
            assert!(e.starts_with(field), "{toml}: {e}");
        }
        Config::parse(
            "[access_log]\npath = \"off\"\nsample_2xx_hits = 100\n",
            PathBuf::new(),
        )
        .unwrap();
    }
}
