//! The HTTP client `openidconnect` talks to the provider through: the collector's own
//! reqwest client (platform TLS roots, no proxy, no redirects — following one would let a
//! response steer requests elsewhere), with a time limit and a cap on what an answer may
//! weigh, so a broken or hostile provider cannot hold a sign-in or fill memory.

use std::time::Duration;

use openidconnect::http;
use openidconnect::{HttpRequest, HttpResponse};

/// The most a provider's answer (discovery, keys, tokens) may weigh.
pub const MAX_BODY: usize = 1 << 20;

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("request to the provider failed: {0}")]
    Request(String),
    #[error("the provider's answer is larger than {MAX_BODY} bytes")]
    TooLarge,
}

/// A client for the provider at most `timeout` per request.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::notify::http::client("oidc", timeout, &crate::notify::Destinations::Any)
        .map_err(|e| e.to_string())
}

/// Performs `request` with `client`: what `openidconnect`'s async calls take (as a closure
/// over this function).
pub async fn send(
    client: reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, TransportError> {
    let (parts, body) = request.into_parts();
    let url = reqwest::Url::parse(&parts.uri.to_string())
        .map_err(|e| TransportError::Request(format!("bad URL: {e}")))?;
    let mut out = client
        .request(parts.method, url)
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        // Without the URL: one with a query could carry a code.
        .map_err(|e| TransportError::Request(e.without_url().to_string()))?;
    let mut response = http::Response::builder().status(out.status());
    if let Some(headers) = response.headers_mut() {
        *headers = std::mem::take(out.headers_mut());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = out
        .chunk()
        .await
        .map_err(|e| TransportError::Request(e.without_url().to_string()))?
    {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(TransportError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    response
        .body(bytes)
        .map_err(|e| TransportError::Request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server answering `reply` to whatever it is asked.
    async fn serve(reply: Vec<u8>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&reply).await;
        });
        addr
    }

    fn get(addr: std::net::SocketAddr) -> HttpRequest {
        http::Request::builder()
            .uri(format!("http://{addr}/.well-known/openid-configuration"))
            .body(Vec::new())
            .unwrap()
    }

    #[tokio::test]
    async fn oidc_transport_passes_answers_and_refuses_huge_ones_and_redirects() {
        let c = client(Duration::from_secs(5)).unwrap();
        let ok = serve(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
                .to_vec(),
        )
        .await;
        let r = send(c.clone(), get(ok)).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (200, &b"{}"[..])
        );
        assert_eq!(r.headers()["content-type"], "application/json");

        let mut huge = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_BODY + 1
        )
        .into_bytes();
        huge.resize(huge.len() + MAX_BODY + 1, b'x');
        let big = serve(huge).await;
        assert!(matches!(
            send(c.clone(), get(big)).await,
            Err(TransportError::TooLarge)
        ));

        // A redirect is handed back as it is, never followed.
        let moved = serve(
            b"HTTP/1.1 302 Found\r\nlocation: http://192.0.2.1/\r\ncontent-length: 0\r\n\r\n"
                .to_vec(),
        )
        .await;
        let r = send(c, get(moved)).await.unwrap();
        assert_eq!(r.status().as_u16(), 302);
    }
}
