//! Uploads and downloads: the same tar streams as docker exec ([`crate::communicators::tar`])
//! over an exec channel. The archive is produced (or unpacked) on a thread in chunks while the
//! channel carries it, so a tree is never held in memory whole.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use super::exec::Input;
use super::{SshComm, command};
use crate::communicators::{ExecError, OutputSink, Stream, UploadOptions, tar};

impl SshComm {
    /// Uploads a file or tree to `dest` as a tar stream, produced while it is sent.
    pub(super) fn tar_upload(
        &self,
        src: &Path,
        dest: &str,
        opts: &UploadOptions,
    ) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(dest)?;
        // Fail before creating anything when the source is missing.
        std::fs::symlink_metadata(src).map_err(|e| {
            io::Error::new(e.kind(), format!("upload source {}: {e}", src.display()))
        })?;
        let src = src.to_path_buf();
        let top = name.clone();
        let (rx, producer) = produce(move |w| tar::write_tree(&src, &top, w));
        let argv = command::untar_command(&self.settings.identity(), &parent);
        let sent = self.run_checked(
            &format!("`tar -x` into {parent}"),
            argv,
            Input::Stream(rx),
            None,
        );
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("tar panicked")));
        // A failure to read the source explains a failed extraction; report it first.
        produced?;
        sent?;
        if let Some(owner) = &opts.owner {
            let path = format!("{parent}/{name}").replace("//", "/");
            self.run_checked(
                &format!("`chown -R {owner}:`"),
                vec!["chown".into(), "-R".into(), format!("{owner}:"), path],
                Input::None,
                None,
            )?;
        }
        Ok(())
    }

    /// Writes `data` to `dest` with `mode`, as a one-file tar archive.
    pub(super) fn tar_upload_bytes(
        &self,
        data: &[u8],
        dest: &str,
        mode: u32,
    ) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(dest)?;
        let mut archive = Vec::with_capacity(data.len() + 2048);
        tar::write_bytes(data, &name, mode, &mut archive)?;
        let argv = command::untar_command(&self.settings.identity(), &parent);
        self.run_checked(
            &format!("`tar -x` into {parent}"),
            argv,
            Input::Bytes(archive),
            None,
        )
    }

    /// Fetches `src` into `dest`, unpacking the `tar -c` stream while it arrives.
    pub(super) fn tar_download(&self, src: &str, dest: &Path) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(src)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
        let dest = dest.to_path_buf();
        let unpacker = std::thread::spawn(move || tar::unpack_tree(ChunkReader::new(rx), &dest));
        let mut forward = Forward { tx: Some(tx) };
        let argv = command::tar_command(&self.settings.identity(), &parent, &name);
        let fetched = self.run_checked(
            &format!("`tar -c` of {src}"),
            argv,
            Input::None,
            Some(&mut forward),
        );
        drop(forward);
        let unpacked = unpacker
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("unpacking panicked")));
        fetched?;
        unpacked?;
        Ok(())
    }
}

/// Hands stdout chunks to the unpacking thread (dropping them once it has given up).
struct Forward {
    tx: Option<SyncSender<Vec<u8>>>,
}

impl OutputSink for Forward {
    fn chunk(&mut self, stream: Stream, data: &[u8]) {
        if stream != Stream::Stdout {
            return;
        }
        if let Some(tx) = &self.tx
            && tx.send(data.to_vec()).is_err()
        {
            self.tx = None;
        }
    }
}

/// Reads the chunks a channel delivers, as one stream.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes into chunks for the exec loop.
struct ChunkWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .send(chunk)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))?;
        }
        Ok(())
    }
}

/// Runs `write` on a thread, its output becoming chunks on the returned receiver.
fn produce(
    write: impl FnOnce(&mut ChunkWriter) -> io::Result<()> + Send + 'static,
) -> (Receiver<Vec<u8>>, std::thread::JoinHandle<io::Result<()>>) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
    let handle = std::thread::spawn(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        write(&mut w)?;
        w.flush()
    });
    (rx, handle)
}
