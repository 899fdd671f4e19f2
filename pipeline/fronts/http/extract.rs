//! Extractors that turn every malformed request into API.md's error body: JSON bodies and sessions.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ledger_stages::auth::ApiKey;
use serde::de::DeserializeOwned;

use crate::accounts::Session;
use crate::error::{ApiError, FieldProblem};
use crate::fronts::base::AppState;
use crate::fronts::base::credential::bearer;

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

/// The path of the first string (or key) holding a NUL character, if one does.
fn nul_at(value: &serde_json::Value, path: &mut String) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = nul_at(v, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(k, v)| {
            let len = path.len();
            path.push_str(if path.is_empty() { "" } else { "." });
            path.push_str(k);
            let found = k.contains('\0') || nul_at(v, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // A NUL can only come as the escape `\u0000`; neither database stores one in text, so it is refused here,
    // naming where, instead of failing in the store.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        let mut path = String::new();
        if nul_at(&value, &mut path) {
            let field = if path.is_empty() { String::from("body") } else { path };
            return Err(ApiError::validation(field, "must not contain NUL (\\u0000) characters"));
        }
    }
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
        } else if crate::fronts::base::body::is_body_timeout(&rejection) {
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

/// The client's IP address, as the listener saw it (no proxy header is trusted), an IPv6 address as its
/// /64. A router called without a listener (tests calling it directly) sees the unspecified address.
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
        Ok(ClientIp(crate::fronts::base::listen::client_address(ip)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Login {
        #[allow(dead_code)]
        email: String,
    }

    #[test]
    fn nul_characters_are_refused_naming_the_field() {
        let error = parse_json::<Login>(br#"{"email": "a\u0000b@example.com"}"#).expect_err("NUL");
        assert!(matches!(&error, ApiError::Validation(p) if p[0].field == "email"), "{error:?}");
        assert!(parse_json::<Login>(br#"{"email": "a\\u0000b"}"#).is_ok(), "an escaped backslash is text");
    }
}
