//! Cursor paging shared by list endpoints: `?limit=N&cursor=C`, where the cursor is the
//! opaque value returned as `next_cursor` (an id to continue below or above).

use serde::{Deserialize, Serialize};

use super::error::ApiError;

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

impl PageQuery {
    /// The page size, refusing sizes above `max` (a clear 400, not a silent clamp).
    pub fn limit(&self, max: usize) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100.min(max)),
            Some(0) => Err(ApiError::bad("limit must be at least 1")),
            Some(n) if n > max => Err(ApiError::bad(format!("limit must be at most {max}"))),
            Some(n) => Ok(n),
        }
    }
}

/// A page of items and where the next one starts (`None`: this was the last).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}
