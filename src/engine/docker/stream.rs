//! Bridges between blocking `Read`/`Write` code (tar builders, unpackers) on a plain thread and
//! the async byte streams bollard sends and receives, with backpressure (bounded channels) so a
//! large tree is never held in memory.

use std::io::{self, Read, Write};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

/// Chunks in flight between the two sides.
const DEPTH: usize = 8;
/// Size of a chunk the writer sends.
const CHUNK: usize = 256 * 1024;

pub(crate) type Chunk = Result<Bytes, io::Error>;

/// A bounded channel of byte chunks.
pub(crate) fn channel() -> (mpsc::Sender<Chunk>, mpsc::Receiver<Chunk>) {
    mpsc::channel(DEPTH)
}

/// The receiving end as a stream (for a request body).
pub(crate) fn receiver_stream(rx: mpsc::Receiver<Chunk>) -> impl Stream<Item = Chunk> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// A `Write` that sends its bytes down the channel; must not be used on a runtime thread.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Chunk>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }

    /// Sends an error instead of the rest of the stream, so the request fails.
    pub(crate) fn fail(self, e: &io::Error) {
        let _ = self
            .tx
            .blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A `Read` over chunks arriving on the channel; must not be used on a runtime thread.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        Self {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}
