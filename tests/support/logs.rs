//! Log output a test reads back: a `MakeWriter` into a shared buffer, for a
//! `tracing` subscriber or the gateway's access log.
//!
//! Also included on its own (`#[path = "support/logs.rs"]`) by test files
//! that do not use the rest of `support`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

/// Every byte written through any clone, in order.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// What was written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
