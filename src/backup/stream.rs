//! Moving bytes between a dump tool and storage: compress on a blocking
//! thread (libzstd with one worker, or gzip), upload the pieces as a
//! multipart upload with their sha256; and the reverse for restores.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::pgdump::{LineHasher, Scanner};
use super::storage::Storage;

/// Sees every raw byte on its way to the compressor.
pub trait Inspect: Send + 'static {
    fn feed(&mut self, data: &[u8]);
}

impl Inspect for Scanner {
    fn feed(&mut self, data: &[u8]) {
        Scanner::feed(self, data)
    }
}

impl Inspect for Option<LineHasher> {
    fn feed(&mut self, data: &[u8]) {
        if let Some(h) = self {
            h.feed(data)
        }
    }
}

/// An upload whose bytes are all written; the caller finishes or aborts it.
pub struct Streamed<I> {
    pub writer: WriteMultipart,
    pub stored: u64,
    pub sha256: String,
    pub inspect: I,
}

/// Stream `source` through `compression` into `object`. `raw` counts the
/// bytes read (shared with a progress display); `on_piece` gets the bytes
/// stored so far. On an error the upload is aborted.
pub async fn upload<R: Read + Send + 'static, I: Inspect>(
    storage: &Storage,
    object: &Path,
    compression: &str,
    source: R,
    inspect: I,
    raw: &Arc<AtomicU64>,
    on_piece: &mut (dyn FnMut(u64) + Send),
) -> Result<Streamed<I>, String> {
    let upload = storage.store.put_multipart(object).await.map_err(|e| format!("{}: {e}", storage.url))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let worker = {
        let (raw, compression) = (raw.clone(), compression.to_string());
        tokio::task::spawn_blocking(move || compress(source, &compression, tx, &raw, inspect))
    };
    let mut sha = Sha256::new();
    let mut stored = 0u64;
    let uploaded = async {
        while let Some(piece) = rx.recv().await {
            sha.update(&piece);
            stored += piece.len() as u64;
            writer.wait_for_capacity(4).await.map_err(|e| format!("{}: {e}", storage.url))?;
            writer.write(&piece);
            on_piece(stored);
        }
        Ok::<(), String>(())
    }
    .await;
    // On an upload error the receiver is gone, which stops the worker.
    drop(rx);
    let worked = worker.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()));
    match (uploaded, worked) {
        (Ok(()), Ok(inspect)) => Ok(Streamed { writer, stored, sha256: hex::encode(sha.finalize()), inspect }),
        (Err(e), _) | (_, Err(e)) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Start a dump tool with its stdout piped and its stderr collected on a thread.
pub fn spawn(
    mut cmd: std::process::Command,
    what: &str,
) -> Result<(std::process::Child, std::thread::JoinHandle<String>), String> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Ok((child, errors))
}

/// Wait for a tool started by [`spawn`]; its stderr says why it failed.
pub async fn finish(
    mut child: std::process::Child,
    errors: std::thread::JoinHandle<String>,
    what: &str,
) -> Result<(), String> {
    let status = tokio::task::spawn_blocking(move || child.wait()).await.map_err(|e| e.to_string())?;
    let text = errors.join().unwrap_or_default();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err(format!("{what} failed: {}", text.trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// Run a dump tool and stream its stdout into `object`. The upload is
/// completed only when the tool succeeded; otherwise it is aborted and the
/// tool's own error is returned. Gives back the stored size, the sha256 and
/// `inspect`.
#[allow(clippy::too_many_arguments)]
pub async fn dump_to<I: Inspect>(
    storage: &Storage,
    object: &Path,
    compression: &str,
    cmd: std::process::Command,
    what: &str,
    inspect: I,
    raw: &Arc<AtomicU64>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(u64, String, I), String> {
    let (mut child, errors) = spawn(cmd, what)?;
    let stdout = child.stdout.take().expect("piped");
    let mut on_piece = |stored: u64| progress(raw.load(Ordering::Relaxed), stored);
    let streamed = upload(storage, object, compression, stdout, inspect, raw, &mut on_piece).await;
    if streamed.is_err() {
        let _ = child.kill();
    }
    let done = finish(child, errors, what).await;
    let up = match (streamed, done) {
        (Ok(up), Err(e)) => {
            let _ = up.writer.abort().await;
            return Err(e);
        }
        // The upload failed and the tool was killed for it: the upload's error is the cause.
        (Err(e), _) => return Err(e),
        (Ok(up), Ok(())) => up,
    };
    up.writer.finish().await.map_err(|e| format!("{}: {e}", storage.url))?;
    Ok((up.stored, up.sha256, up.inspect))
}

/// Sends what is written to it in pieces of about 1 MiB.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const PIECE: usize = 1 << 20;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.tx.blocking_send(piece).map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// A compressing writer that can be finished, handing back the channel.
trait Compressor: Write {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter>;
}

impl Compressor for zstd::stream::Encoder<'static, ChannelWriter> {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter> {
        self.finish()
    }
}

impl Compressor for flate2::write::GzEncoder<ChannelWriter> {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter> {
        self.finish()
    }
}

impl Compressor for ChannelWriter {
    fn done(self: Box<Self>) -> std::io::Result<ChannelWriter> {
        Ok(*self)
    }
}

fn compress<R: Read, I: Inspect>(
    mut source: R,
    compression: &str,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    raw: &AtomicU64,
    mut inspect: I,
) -> std::io::Result<I> {
    let sink = ChannelWriter { tx, buf: Vec::with_capacity(PIECE) };
    let mut out: Box<dyn Compressor> = match compression {
        "zstd" => {
            let mut e = zstd::stream::Encoder::new(sink, 3)?;
            // One worker: compression overlaps reading the source and hashing its rows.
            e.multithread(1)?;
            Box::new(e)
        }
        "gzip" => Box::new(flate2::write::GzEncoder::new(sink, flate2::Compression::default())),
        _ => Box::new(sink),
    };
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            break;
        }
        inspect.feed(&buf[..n]);
        raw.fetch_add(n as u64, Ordering::Relaxed);
        out.write_all(&buf[..n])?;
    }
    out.done()?.flush()?;
    Ok(inspect)
}

/// Counts and hashes what passes through a reader.
struct Tap<R> {
    inner: R,
    sha: Sha256,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            this.sha.update(&buf.filled()[before..]);
        }
        r
    }
}

/// What `download` found.
pub struct Downloaded {
    /// sha256 of the stored bytes.
    pub sha256: String,
    /// Why the bytes could not be read or written, if they could not.
    pub error: Option<String>,
}

impl Downloaded {
    /// The bytes must be the ones the manifest recorded, and must have decoded.
    pub fn check(self, backup: &str, name: &str, recorded: &str) -> Result<(), String> {
        if self.sha256 != recorded {
            return Err(format!(
                "backup {backup} is corrupted: {name} has sha256 {}, the manifest recorded {recorded}",
                self.sha256
            ));
        }
        self.error.map_or(Ok(()), Err)
    }
}

/// Stream one stored object into a child's stdin (pg_restore, the mariadb
/// client), wait for it, and check the object's sha256.
pub async fn into_child(
    storage: &Storage,
    object: &Path,
    compression: &str,
    (backup, name, recorded): (&str, &str, &str),
    mut child: tokio::process::Child,
) -> Result<std::process::Output, String> {
    let mut stdin = child.stdin.take().expect("piped");
    let got = download(storage, object, compression, &mut stdin).await;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    got?.check(backup, name, recorded)?;
    Ok(out)
}

/// Read `object`, decompress it and write it to `sink`. A sink that stops
/// accepting (pg_restore exited) ends the copy without an error: the sink's
/// owner knows why.
pub async fn download<W: AsyncWrite + Unpin>(
    storage: &Storage,
    object: &Path,
    compression: &str,
    sink: &mut W,
) -> Result<Downloaded, String> {
    let stream = storage.store.get(object).await.map_err(|e| format!("{}: {e}", storage.url))?.into_stream();
    let reader = tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other)));
    let mut tap = Tap { inner: reader, sha: Sha256::new() };
    let error = {
        let mut decoded: Pin<Box<dyn AsyncRead + Send + '_>> = match compression {
            "zstd" => {
                Box::pin(async_compression::tokio::bufread::ZstdDecoder::new(tokio::io::BufReader::new(&mut tap)))
            }
            "gzip" => {
                Box::pin(async_compression::tokio::bufread::GzipDecoder::new(tokio::io::BufReader::new(&mut tap)))
            }
            _ => Box::pin(&mut tap),
        };
        let mut buf = vec![0u8; PIECE];
        loop {
            match decoded.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    if sink.write_all(&buf[..n]).await.is_err() {
                        break None;
                    }
                }
                Err(e) => break Some(format!("the backup object is damaged: {e}")),
            }
        }
    };
    // Whatever was not read yet still counts for the digest.
    let mut rest = vec![0u8; PIECE];
    while let Ok(n) = tap.read(&mut rest).await {
        if n == 0 {
            break;
        }
    }
    let _ = sink.flush().await;
    Ok(Downloaded { sha256: hex::encode(tap.sha.finalize()), error })
}
