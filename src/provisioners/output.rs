//! Streams a command's output to the printer line by line, prefixed with its source, and keeps
//! the last lines for the failure message.

use std::collections::VecDeque;

use crate::communicators::{OutputSink, Stream};
use crate::ui::Printer;

/// How many lines a failure shows.
pub const TAIL_LINES: usize = 20;

/// An [`OutputSink`] that prints lines live and remembers the tail.
pub struct LineSink {
    printer: Printer,
    source: String,
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
    /// Print lines as they come (false: only keep the tail).
    live: bool,
}

impl LineSink {
    pub fn new(printer: &Printer, source: impl Into<String>, live: bool) -> Self {
        Self {
            printer: printer.clone(),
            source: source.into(),
            partial: [Vec::new(), Vec::new()],
            tail: VecDeque::new(),
            live,
        }
    }

    fn line(&mut self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches('\r');
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        if self.live {
            self.printer.output(&self.source, name, text);
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(self.printer.redactor().redact(text));
    }

    /// Flushes partial lines and returns the last lines seen.
    pub fn finish(&mut self) -> Vec<String> {
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let rest = std::mem::take(&mut self.partial[i]);
            if !rest.is_empty() {
                self.line(stream, &rest);
            }
        }
        self.tail.iter().cloned().collect()
    }
}

impl OutputSink for LineSink {
    fn shows_live(&self) -> bool {
        self.live
    }

    fn chunk(&mut self, stream: Stream, data: &[u8]) {
        let i = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        self.partial[i].extend_from_slice(data);
        while let Some(pos) = self.partial[i].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[i].drain(..=pos).collect();
            self.line(stream, &line[..line.len() - 1]);
        }
    }
}
