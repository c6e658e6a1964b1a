//! A raw agent-protocol client for tests and benchmarks: real mutual TLS, hand-made frames,
//! and the hostile variants (no client certificate, raw bytes after the handshake).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use mcpwatch_common::tls::{self, TlsFiles};
use mcpwatch_common::wire::{Frame, FrameCodec, Hello, DEFAULT_MAX_FRAME_LEN, PROTOCOL_VERSION};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Client config presenting `cert`/`key`, trusting `ca`.
pub fn config(ca: &Path, cert: &Path, key: &Path) -> Arc<ClientConfig> {
    tls::client_config(&TlsFiles {
        ca: ca.to_owned(),
        cert: cert.to_owned(),
        key: key.to_owned(),
        crl: Vec::new(),
    })
    .expect("client config")
}

/// Client config with no client certificate at all.
pub fn config_without_cert(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::load_certs(ca).expect("ca") {
        roots.add(c).expect("add root");
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// TCP + TLS handshake to the collector (server name "localhost").
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, AnyError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    Ok(TlsConnector::from(config).connect(name, tcp).await?)
}

/// A framed agent-protocol connection.
pub struct Conn {
    pub framed: Framed<TlsStream<TcpStream>, FrameCodec>,
}

impl Conn {
    pub async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Conn, AnyError> {
        let stream = connect(addr, config).await?;
        Ok(Conn {
            framed: Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_LEN)),
        })
    }

    pub fn hello(agent_id: &str) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_id: agent_id.to_owned(),
            agent_version: "test".into(),
            hostname: "test-host".into(),
            boot_id: "test-boot".into(),
            last_acked_seq: 0,
        }
    }

    /// Sends a Hello and returns the collector's answer (Welcome or Reject).
    pub async fn handshake(&mut self, hello: Hello) -> Result<Frame, AnyError> {
        self.framed.send(Frame::Hello(hello)).await?;
        self.recv().await
    }

    pub async fn send(&mut self, frame: Frame) -> Result<(), AnyError> {
        Ok(self.framed.send(frame).await?)
    }

    /// Next frame; an error when the collector closed the stream.
    pub async fn recv(&mut self) -> Result<Frame, AnyError> {
        match self.framed.next().await {
            Some(f) => Ok(f?),
            None => Err("stream closed by collector".into()),
        }
    }

    /// Writes raw bytes under the TLS layer, bypassing the codec.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), AnyError> {
        let io = self.framed.get_mut();
        io.write_all(bytes).await?;
        io.flush().await?;
        Ok(())
    }

    /// True once the collector has closed the stream (EOF or reset), within `timeout`.
    pub async fn closed_within(&mut self, timeout: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, async {
                loop {
                    match self.framed.next().await {
                        None | Some(Err(_)) => return,
                        Some(Ok(_)) => continue,
                    }
                }
            })
            .await,
            Ok(())
        )
    }
}
