//! Extractors that turn every malformed request into API.md's error body: JSON bodies and sessions.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ledger_stages::auth::ApiKey;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::accounts::Session;
use crate::error::{ApiError, FieldProblem};

/// A JSON body. Not JSON → 415; unparsable → 400; a field of the wrong type → 422 naming the field.
pub struct JsonBody<T>(pub T);

/// A JSON body that may be absent: an empty body is `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde_json appends " at line L column C"; the field path says more.
        let reason = message.split(" at line ").next().unwrap_or(&message).to_owned();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::from("body") } else { path };
                ApiError::Validation(vec![FieldProblem::new(field, reason)])
            }
            _ => ApiError::BadRequest(format!("the body is not valid JSON: {message}")),
        }
    })
}

async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit_bytes: super::ACCOUNT_BODY_LIMIT }
        } else if super::serve::is_body_timeout(&rejection) {
            ApiError::RequestTimeout
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })
}

fn not_json() -> ApiError {
    ApiError::UnsupportedMediaType("send the body as Content-Type: application/json".into())
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(not_json());
        }
        let bytes = body_bytes(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let has_type = request.headers().contains_key(header::CONTENT_TYPE);
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json && has_type {
            return Err(not_json());
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// The bearer credential of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim())
}

/// The API key a request carries: `Authorization: Bearer ledger_…` or `X-API-Key: ledger_…` (the first wins).
/// REST and gRPC (its metadata as headers) both read it here.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// The client's IP address, as the listener saw it (no proxy header is trusted). A router called without
/// a listener (tests calling it directly) sees the unspecified address.
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientIp(peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| info.0.ip())))
    }
}

/// A live session (`Authorization: Bearer <jwt>`). API keys are refused here: account and project routes
/// take sessions only.
pub struct SessionAuth(pub Session);

impl<S> FromRequestParts<S> for SessionAuth
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        if ApiKey::looks_like_key(token) {
            return Err(ApiError::Unauthorized);
        }
        state.accounts.session(token).await.map(SessionAuth)
    }
}
