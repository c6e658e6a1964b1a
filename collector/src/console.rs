//! The web console's files, built by Vite into `console/dist` and embedded in the binary
//! (rust-embed, in debug builds too), so the collector serves the console with no file
//! system access and `cargo build` needs no npm. `index.html` is revalidated on every load
//! (its ETag is its hash); everything under `/assets/` has a content hash in its name and is
//! cached for a year. A precompressed `.gz` twin is served to clients that accept gzip.
//! The console routes by URL fragment (`/#/hosts/web-1`), so no path other than these
//! falls back to the page: unknown paths keep the API's JSON 404.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

#[derive(rust_embed::Embed)]
#[folder = "../console/dist"]
struct Assets;

/// `/`, `/index.html` and `/assets/{file}`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers, "no-cache")
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    // Only names the build produced exist in the embedded set; `..` or `/` cannot name
    // anything else, but refuse them before the lookup all the same.
    if file.contains('/') || file.contains("..") || file.ends_with(".gz") {
        return not_found();
    }
    serve(
        &format!("assets/{file}"),
        &headers,
        "public, max-age=31536000, immutable",
    )
}

fn serve(path: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    let Some(file) = Assets::get(path) else {
        return not_found();
    };
    let Some(content_type) = content_type(path) else {
        return not_found();
    };
    let etag = format!(
        "\"{}\"",
        mcpwatch_common::hex::encode(&file.metadata.sha256_hash()[..16])
    );
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::try_from(etag.as_str()) {
        out.insert(header::ETAG, v);
    }
    if if_none_match(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let body = match Assets::get(&format!("{path}.gz")).filter(|_| accepts_gzip(headers)) {
        Some(gz) => {
            out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gz.data
        }
        None => file.data,
    };
    (StatusCode::OK, out, body.into_owned()).into_response()
}

fn not_found() -> Response {
    crate::api::error::ApiError::NotFound.into_response()
}

/// The types the build emits, by extension; anything else is not served.
fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => return None,
    })
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn gzip_is_negotiated_by_accept_encoding() {
        assert!(accepts_gzip(&with(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br"
        )));
        assert!(accepts_gzip(&with(
            header::ACCEPT_ENCODING,
            "br;q=1, GZIP;q=0.5"
        )));
        assert!(!accepts_gzip(&with(
            header::ACCEPT_ENCODING,
            "gzip;q=0, br"
        )));
        assert!(!accepts_gzip(&with(header::ACCEPT_ENCODING, "identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn only_known_types_are_served() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(content_type("index.html"), Some("text/html; charset=utf-8"));
        assert_eq!(content_type("assets/x.map"), None);
        assert_eq!(content_type("noext"), None);
    }

    #[test]
    fn the_page_is_embedded_and_revalidates() {
        let page = serve("index.html", &HeaderMap::new(), "no-cache");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = page.headers()[header::ETAG].to_str().unwrap().to_owned();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, HeaderValue::try_from(etag).unwrap());
        assert_eq!(
            serve("index.html", &again, "no-cache").status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            serve("assets/none.js", &HeaderMap::new(), "x").status(),
            StatusCode::NOT_FOUND
        );
    }
}
