//! An in-process client session on a mux, as a newline-delimited byte pipe: what the agent's
//! own MCP probe speaks through, so a stdio server is probed on the very session clients
//! use instead of in a throw-away container. A small task moves lines between the pipe and
//! the session; dropping the pipe ends the session (its in-flight requests are cancelled
//! upstream).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

use super::session_mux::{ClientSession, MuxError, MuxHandle};

/// Longest line the probe may send; its requests are a few hundred bytes.
const PIPE_BUFFER: usize = 64 * 1024;

/// Opens a session on `mux` (on the slot reserved for the probe, so clients holding every
/// other slot cannot fail it) and returns the client's ends of a pipe carrying it.
pub async fn open_pipe(
    mux: &MuxHandle,
) -> Result<(ReadHalf<DuplexStream>, WriteHalf<DuplexStream>), MuxError> {
    let session = mux.open_reserved_session().await?;
    let (client, ours) = tokio::io::duplex(PIPE_BUFFER);
    tokio::spawn(pump(session, ours));
    Ok(tokio::io::split(client))
}

async fn pump(mut session: ClientSession, pipe: DuplexStream) {
    let (read, mut write) = tokio::io::split(pipe);
    let mut lines = BufReader::new(read).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if session.send(line).await.is_err() {
                        return;
                    }
                }
                // The client closed its end (or wrote something that is not UTF-8).
                Ok(None) | Err(_) => return,
            },
            message = session.recv() => {
                let Some(message) = message else { return };
                let mut line = message.line;
                line.push('\n');
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}
