//! Audit rows for requests refused before they reach a route: a body over `max_body_size`
//! (413, refused by the body-limit layer from its Content-Length) and a URI over
//! [`MAX_URI`] (414, refused here). The route-level audit never sees those, yet the API
//! promises that every refused request is recorded. The row holds the sizes, never the body.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error;
use crate::metrics::CollectorMetrics;
use crate::now_ms;
use crate::store::query::audit::AuditEntry;
use crate::store::Store;

/// Longest request URI (path and query) accepted. hyper answers far longer ones itself,
/// before any of this runs; those stay unaudited.
pub const MAX_URI: usize = 8 * 1024;

/// Put on a response by the route-level audit when it wrote a row, so this layer does not
/// write a second one.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// What the layer needs: where rows go and where failures are counted.
#[derive(Clone)]
pub struct RefusalAudit {
    pub store: Store,
    pub metrics: Arc<CollectorMetrics>,
}

/// The outermost layer of the HTTP endpoint: refuses over-long URIs, and records 413 and 414
/// answers that no route recorded.
pub async fn audit_refusals(
    State(audit): State<RefusalAudit>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let (object, source) = super::auth::audit_target(&req);
    let request_id = super::request_id::of(&req);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let resp = if uri_len > MAX_URI {
        error::plain(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            &format!("the request URI is longer than {MAX_URI} bytes"),
        )
    } else {
        next.run(req).await
    };
    let status = resp.status();
    let refused = matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::URI_TOO_LONG
    );
    if refused && resp.extensions().get::<Audited>().is_none() {
        let entry = AuditEntry {
            at_ms: now_ms(),
            actor: "anonymous".into(),
            token_id: None,
            session_id: None,
            source,
            action: format!("{method} (refused before routing)"),
            object,
            result: status.as_u16(),
            detail: format!(
                "uri {uri_len} bytes; content-length {}",
                declared.map_or("none".to_owned(), |n| n.to_string())
            ),
            request_id,
        };
        // In a task of its own (in the request's span): a client hanging up drops this
        // future, not the row.
        let write = tokio::spawn(
            async move {
                if let Err(e) = audit.store.insert_audit(entry).await {
                    tracing::error!(error = %e, "writing an audit record failed");
                    audit.metrics.audit_failed();
                }
            }
            .instrument(tracing::Span::current()),
        );
        let _ = write.await;
    }
    resp
}
