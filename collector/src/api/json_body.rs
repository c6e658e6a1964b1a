//! JSON request bodies read the way JSON Schema (and so the OpenAPI document) reads them: a
//! number with a zero fractional part is an integer, so `870.0` is accepted wherever `870`
//! is. serde would refuse `870.0` for an `i64` field; this layer rewrites such numbers as
//! integers before any handler's extractor sees the body. Bodies that are not JSON, or not
//! valid JSON, pass unchanged (the extractor answers them).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Number, Value};

/// The integer a JSON number stands for, when it is a float with no fractional part that
/// fits an `i64`.
fn integral(n: &Number) -> Option<i64> {
    let f = n.as_f64().filter(|_| n.is_f64())?;
    // 2^63 is exactly representable; every float below it with no fraction fits.
    let fits = f.is_finite() && f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63);
    fits.then_some(f as i64)
}

/// Rewrites integral floats in `v` as integers; whether anything changed.
fn normalize(v: &mut Value) -> bool {
    match v {
        Value::Number(n) => match integral(n) {
            Some(i) => {
                *v = Value::Number(i.into());
                true
            }
            None => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |c, x| normalize(x) | c),
        Value::Object(map) => map.values_mut().fold(false, |c, x| normalize(x) | c),
        _ => false,
    }
}

/// The middleware (see the module's comment). Reading the body respects the body limit
/// layered outside (413 from the `Bytes` rejection).
pub async fn integral_numbers(req: Request, next: Next) -> Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(b) => b,
        Err(rejection) => return rejection.into_response(),
    };
    let rewritten = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|mut v| normalize(&mut v).then_some(v))
        .and_then(|v| serde_json::to_vec(&v).ok());
    let body = rewritten.map_or_else(|| Body::from(bytes), Body::from);
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_json_integral_floats_become_integers() {
        let mut v = json!({"a": 870.0, "b": [-5299.0, 0.5, 3], "c": {"d": 1e300, "e": -0.0}});
        assert!(normalize(&mut v));
        assert_eq!(
            v,
            json!({"a": 870, "b": [-5299, 0.5, 3], "c": {"d": 1e300, "e": 0}})
        );
        assert!(v["a"].is_i64() && v["b"][0].is_i64());
        let mut plain = json!({"a": 1, "b": "x", "c": 0.25});
        assert!(!normalize(&mut plain), "nothing to rewrite");
        let mut edge = json!(9.223_372_036_854_776e18);
        assert!(!normalize(&mut edge), "2^63 does not fit an i64");
    }
}
