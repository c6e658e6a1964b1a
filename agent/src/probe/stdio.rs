//! The stdio probe: a short-lived `--rm -i` container of the server's image (network none),
//! whose attached stdin/stdout carry the MCP session. The container is removed on every path:
//! explicitly after the session, and from `Drop` if the probe future is abandoned.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};

use super::session::{self, failure};
use super::{FailureKind, ProbeFailure, ProbeReport, ProbeStage};

/// Label on every probe container, so operators (and tests) can find strays.
pub const PROBE_LABEL: (&str, &str) = ("mcpwatch.managed", "probe");

/// Longest wait for the container's removal once the session is over.
const REMOVE_GRACE: Duration = Duration::from_secs(5);

/// What a probe container runs.
pub(super) struct Command<'a> {
    pub image: &'a str,
    pub entrypoint: Option<&'a [String]>,
    pub cmd: &'a [String],
    pub env: &'a [String],
}

pub(super) async fn run(
    docker: &Docker,
    command: &Command<'_>,
    timeout: Duration,
    report: &mut ProbeReport,
) {
    // A random name lets the guard remove the container even when `create` was cut off by
    // the timeout after the daemon had already made it.
    let name = format!("mcpwatch-probe-{:016x}", fastrand::u64(..));
    let guard = ContainerGuard {
        docker: docker.clone(),
        name,
        armed: true,
    };
    let started = Instant::now();
    match tokio::time::timeout(timeout, start(docker, &guard.name, command)).await {
        Ok(Ok((reader, writer))) => {
            report.stage_latency.connect = Some(started.elapsed());
            session::run((reader, writer), timeout, report).await;
        }
        Ok(Err(e)) => {
            report.failure = Some(failure(ProbeStage::Connect, FailureKind::Transport, &e));
        }
        Err(_) => {
            report.failure = Some(ProbeFailure {
                stage: ProbeStage::Connect,
                kind: FailureKind::Timeout,
                message: format!("container not started within {} ms", timeout.as_millis()),
            });
        }
    }
    guard.remove().await;
}

/// Creates, attaches and starts the container; returns its stdout (as a byte stream) and stdin.
async fn start(
    docker: &Docker,
    name: &str,
    command: &Command<'_>,
) -> Result<(StdoutReader, Pin<Box<dyn tokio::io::AsyncWrite + Send>>), DockerError> {
    let Command {
        image,
        entrypoint,
        cmd,
        env,
    } = command;
    let body = ContainerCreateBody {
        image: Some((*image).to_owned()),
        entrypoint: entrypoint.map(<[String]>::to_vec),
        cmd: (!cmd.is_empty()).then(|| cmd.to_vec()),
        env: (!env.is_empty()).then(|| env.to_vec()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // Our closing stdin ends the server's stdin, as with `docker run -i`.
        stdin_once: Some(true),
        // No TTY: stdout and stderr stay apart (multiplexed) and bytes pass unaltered.
        tty: Some(false),
        labels: Some(HashMap::from([(
            PROBE_LABEL.0.to_owned(),
            PROBE_LABEL.1.to_owned(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            auto_remove: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    docker.create_container(Some(options), body).await?;
    // Attach before start, so not a byte of the server's output is missed.
    let attach = docker
        .attach_container(
            name,
            Some(AttachContainerOptions {
                stream: true,
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .await?;
    docker.start_container(name, None).await?;
    let reader = StdoutReader {
        output: attach.output,
        pending: None,
        pos: 0,
        name: name.to_owned(),
    };
    Ok((reader, attach.input))
}

/// Force-removes the probe container: explicitly via `remove`, or from `Drop` (spawned on the
/// current runtime) when the probe future is dropped midway.
struct ContainerGuard {
    docker: Docker,
    name: String,
    armed: bool,
}

impl ContainerGuard {
    async fn remove(mut self) {
        self.armed = false;
        let _ = tokio::time::timeout(REMOVE_GRACE, remove(&self.docker, &self.name)).await;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Without a runtime (process exit) there is nothing left to run the removal; the
        // `mcpwatch.managed=probe` label lets a later sweep find the container.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let name = std::mem::take(&mut self.name);
            rt.spawn(async move { remove(&docker, &name).await });
        }
    }
}

async fn remove(docker: &Docker, name: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => {}
        // Already gone (auto-remove after the server exited) or being removed by the daemon.
        Err(DockerError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => {}
        Err(e) => tracing::warn!(container = %name, error = %e, "probe container not removed"),
    }
}

/// The container's stdout as a byte stream: bollard yields demultiplexed frames; stdout
/// frames feed the MCP reader, stderr is only logged.
struct StdoutReader {
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>,
    /// The stdout frame being handed out, and how much of it is gone.
    pending: Option<LogOutput>,
    pos: usize,
    name: String,
}

impl AsyncRead for StdoutReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(frame) = &this.pending {
                // `pos` only ever advances by what was copied out, so it stays in bounds.
                let bytes = &frame.as_ref()[this.pos..];
                if !bytes.is_empty() {
                    let n = bytes.len().min(buf.remaining());
                    buf.put_slice(&bytes[..n]);
                    this.pos += n;
                    return Poll::Ready(Ok(()));
                }
                this.pending = None;
                this.pos = 0;
            }
            match ready!(this.output.poll_next_unpin(cx)) {
                // End of the attach stream is end of stdout: the container has exited.
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(frame @ (LogOutput::StdOut { .. } | LogOutput::Console { .. }))) => {
                    this.pending = Some(frame);
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    tracing::debug!(container = %this.name, stderr = %String::from_utf8_lossy(&message), "probe server stderr");
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frames(items: Vec<Result<LogOutput, DockerError>>) -> StdoutReader {
        StdoutReader {
            output: Box::pin(futures::stream::iter(items)),
            pending: None,
            pos: 0,
            name: "t".into(),
        }
    }

    fn out(s: &str) -> Result<LogOutput, DockerError> {
        Ok(LogOutput::StdOut {
            message: s.as_bytes().to_vec().into(),
        })
    }

    #[tokio::test]
    async fn reader_passes_stdout_and_drops_stderr() {
        let mut r = frames(vec![
            out("{\"a\":"),
            Ok(LogOutput::StdErr {
                message: b"log line\n".to_vec().into(),
            }),
            out(""),
            out("1}\n"),
        ]);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "{\"a\":1}\n");
    }

    #[tokio::test]
    async fn reader_hands_out_frames_in_pieces_of_the_callers_buffer() {
        let mut r = frames(vec![out("abcdef")]);
        let mut two = [0u8; 2];
        assert_eq!(r.read(&mut two).await.unwrap(), 2);
        assert_eq!(&two, b"ab");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cdef");
    }

    #[tokio::test]
    async fn reader_turns_stream_errors_into_io_errors() {
        let mut r = frames(vec![out("x"), Err(DockerError::RequestTimeoutError)]);
        let mut s = String::new();
        assert!(r.read_to_string(&mut s).await.is_err());
    }
}
