//! The stdio attach: connects a running supervised stdio container's stdin and stdout to one
//! [`SessionMux`](super::SessionMux) through Docker's attach (stream, not logs).
//!
//! The container runs without a TTY, so the attach stream carries stdout and stderr as
//! separate frames: stdout is split into lines for the mux, stderr is counted and dropped
//! (it is the server's log, never protocol). A line longer than [`MAX_LINE`] is dropped and
//! counted; its bytes are discarded as they arrive, so memory stays bounded whatever the
//! server writes. Each line from the mux goes to stdin followed by a newline.
//!
//! Reading and writing run concurrently, so a server blocked writing its stdout can never be
//! stalled by a write to its stdin. The attach ends when the container's output ends
//! (stopped, restarted, removed), when the attach stream fails, or when the mux stops; the
//! mux's upstream channel then closes, and its in-flight requests fail with -32000
//! (connection closed). Re-attaching after a restart (with a new mux) is the caller's job:
//! await [`AttachTask::wait`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::AttachContainerOptions;
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Upstream;

/// Longest stdout line handed to the mux, without its newline.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("docker attach failed: {0}")]
    Docker(#[from] DockerError),
}

/// Why an attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachEnd {
    /// The container's output ended: it stopped, restarted or was removed.
    OutputClosed,
    /// The attach stream failed (daemon gone, connection cut).
    StreamFailed(String),
    /// Writing to the container's stdin failed.
    StdinFailed(String),
    /// The mux stopped taking lines (shut down, or every handle dropped).
    MuxGone,
}

/// What an attach dropped or passed, for the gateway's metrics.
#[derive(Debug, Default)]
pub struct AttachStats {
    pub lines_from_server: AtomicU64,
    pub lines_to_server: AtomicU64,
    /// stdout lines over [`MAX_LINE`], dropped.
    pub oversized_lines: AtomicU64,
    /// stdout lines that are not UTF-8, dropped.
    pub invalid_lines: AtomicU64,
    /// stderr bytes, dropped.
    pub stderr_bytes: AtomicU64,
}

/// A live attach: give `upstream` to [`SessionMux::spawn`](super::SessionMux::spawn) and
/// await `ended` to learn when to re-attach.
pub struct Attachment {
    pub upstream: Upstream,
    pub stats: Arc<AttachStats>,
    pub ended: AttachTask,
}

/// The task moving lines between the container and the mux.
pub struct AttachTask {
    task: JoinHandle<AttachEnd>,
}

impl AttachTask {
    /// Returns when the attach has ended, and why.
    pub async fn wait(self) -> AttachEnd {
        match self.task.await {
            Ok(end) => end,
            // The task never panics by design; a cancelled runtime is the only other case.
            Err(e) => AttachEnd::StreamFailed(e.to_string()),
        }
    }
}

/// Attaches to the running container `container` (id or name). `queue` bounds the lines
/// waiting in each direction.
pub async fn attach(
    docker: &Docker,
    container: &str,
    queue: usize,
) -> Result<Attachment, AttachError> {
    let options = AttachContainerOptions {
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        logs: false,
        ..Default::default()
    };
    let attached = docker.attach_container(container, Some(options)).await?;
    let queue = queue.max(1);
    let (from_server_tx, from_server) = mpsc::channel(queue);
    let (to_server, to_server_rx) = mpsc::channel(queue);
    let stats = Arc::new(AttachStats::default());
    let task = tokio::spawn(pump(
        attached.output,
        attached.input,
        from_server_tx,
        to_server_rx,
        Arc::clone(&stats),
        container.to_owned(),
    ));
    Ok(Attachment {
        upstream: Upstream {
            from_server,
            to_server,
        },
        stats,
        ended: AttachTask { task },
    })
}

type Output = std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogOutput, DockerError>> + Send>>;
type Input = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

async fn pump(
    output: Output,
    input: Input,
    from_server: mpsc::Sender<String>,
    to_server: mpsc::Receiver<String>,
    stats: Arc<AttachStats>,
    container: String,
) -> AttachEnd {
    // Whichever side ends first ends the attach; dropping the other closes the mux's
    // channels (and with them the upstream).
    let end = tokio::select! {
        end = read_output(output, from_server, &stats) => end,
        end = write_input(input, to_server, &stats) => end,
    };
    tracing::info!(container = %container, reason = ?end, "gateway stdio attach ended");
    end
}

async fn read_output(
    mut output: Output,
    from_server: mpsc::Sender<String>,
    stats: &AttachStats,
) -> AttachEnd {
    let mut lines = LineSplitter::default();
    loop {
        let bytes = match output.next().await {
            None => return AttachEnd::OutputClosed,
            Some(Err(e)) => return AttachEnd::StreamFailed(e.to_string()),
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => message,
            Some(Ok(LogOutput::StdErr { message })) => {
                stats
                    .stderr_bytes
                    .fetch_add(message.len() as u64, Ordering::Relaxed);
                continue;
            }
            Some(Ok(LogOutput::StdIn { .. })) => continue,
        };
        for line in lines.push(&bytes, stats) {
            stats.lines_from_server.fetch_add(1, Ordering::Relaxed);
            if from_server.send(line).await.is_err() {
                return AttachEnd::MuxGone;
            }
        }
    }
}

async fn write_input(
    mut input: Input,
    mut to_server: mpsc::Receiver<String>,
    stats: &AttachStats,
) -> AttachEnd {
    while let Some(mut line) = to_server.recv().await {
        line.push('\n');
        let written = match input.write_all(line.as_bytes()).await {
            Ok(()) => input.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            return AttachEnd::StdinFailed(e.to_string());
        }
        stats.lines_to_server.fetch_add(1, Ordering::Relaxed);
    }
    AttachEnd::MuxGone
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes; longer ones are skipped
/// up to their newline without being kept.
#[derive(Default)]
struct LineSplitter {
    buf: Vec<u8>,
    /// Inside an over-long line: drop bytes until the next newline.
    skipping: bool,
}

impl LineSplitter {
    fn push(&mut self, mut bytes: &[u8], stats: &AttachStats) -> Vec<String> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (chunk, rest, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if !self.skipping {
                if self.buf.len() + chunk.len() > MAX_LINE {
                    stats.oversized_lines.fetch_add(1, Ordering::Relaxed);
                    self.buf = Vec::new();
                    self.skipping = true;
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            if complete {
                if !self.skipping {
                    let mut line = std::mem::take(&mut self.buf);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        match String::from_utf8(line) {
                            Ok(s) => out.push(s),
                            Err(_) => {
                                stats.invalid_lines.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                self.skipping = false;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_frames_and_blank_lines_skipped() {
        let stats = AttachStats::default();
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"a\":", &stats).is_empty());
        assert_eq!(
            s.push(b"1}\r\n\n{\"b\":2}\n{", &stats),
            ["{\"a\":1}", "{\"b\":2}"]
        );
        assert_eq!(s.push(b"}\n", &stats), ["{}"]);
    }

    #[test]
    fn an_over_long_line_is_dropped_counted_and_not_kept() {
        let stats = AttachStats::default();
        let mut s = LineSplitter::default();
        let chunk = vec![b'x'; MAX_LINE / 2 + 1];
        assert!(s.push(&chunk, &stats).is_empty());
        assert!(s.push(&chunk, &stats).is_empty());
        assert_eq!(stats.oversized_lines.load(Ordering::Relaxed), 1);
        assert!(s.buf.capacity() <= MAX_LINE, "nothing kept while skipping");
        assert!(s.push(&chunk, &stats).is_empty());
        assert!(s.buf.is_empty());
        assert_eq!(s.push(b"tail\nok\n", &stats), ["ok"]);
        assert_eq!(stats.oversized_lines.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_and_invalid_utf8_is_counted() {
        let stats = AttachStats::default();
        let mut s = LineSplitter::default();
        let mut line = vec![b'y'; MAX_LINE];
        line.push(b'\n');
        assert_eq!(s.push(&line, &stats).len(), 1);
        assert!(s.push(b"\xff\xfe\n", &stats).is_empty());
        assert_eq!(stats.invalid_lines.load(Ordering::Relaxed), 1);
        assert_eq!(stats.oversized_lines.load(Ordering::Relaxed), 0);
    }
}
