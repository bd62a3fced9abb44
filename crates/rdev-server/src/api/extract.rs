//! `Path` and `Query` extractors whose rejections are [`ApiError`]s, so a malformed path
//! segment or query string answers `{"error":{"code","message"}}` like every other error
//! instead of axum's plain-text 400.

use axum::extract::FromRequestParts;

use super::ApiError;

/// [`axum::extract::Path`] answering `invalid_path` on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// [`axum::extract::Query`] answering `invalid_query` on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
