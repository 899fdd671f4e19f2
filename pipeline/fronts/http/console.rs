//! The web console: its files (built from `console/` into `console/dist/`, embedded in the binary) served at
//! `/` and under `/console/`, and browser sessions.
//!
//! A browser's session token lives in an HttpOnly, SameSite=Strict cookie that no script can read.
//! [`cookie_session`] turns it into the bearer credential the JSON API takes, on `/v1/` routes only, and
//! refuses a state-changing request (anything but GET and HEAD) that does not carry the session's CSRF token
//! in `X-CSRF-Token`: a token only the console's own page learns (from `/console/session`), so another site
//! cannot forge one even if a browser sent it the cookie. A request with its own `Authorization` header is
//! left alone: API clients keep their bearer tokens.
//!
//! Every console answer carries a Content-Security-Policy that allows scripts, styles and connections from
//! this origin only (no inline script, no other origin) and forbids framing.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rust_embed::RustEmbed;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::accounts::{Credentials, UserBody};
use super::extract::{ClientIp, JsonBody};
use crate::accounts::Issued;
use crate::error::ApiError;
use crate::fronts::base::{AppState, ConsoleSettings};

/// The console's built files. In release builds they are compiled in; debug builds read `console/dist/`.
#[derive(RustEmbed)]
#[folder = "console/dist/"]
struct Assets;

/// The cookie holding a browser's session token.
pub const SESSION_COOKIE: &str = "ledger_session";
const CSRF_HEADER: &str = "x-csrf-token";

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The console's routes besides `/` (which [`super::router`] shares with the Elasticsearch front).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/session", get(current).post(sign_in).delete(sign_out))
        .route("/console/signup", post(sign_up))
        .route("/console/{*file}", get(file))
        .layer(axum::middleware::map_response(protect))
}

/// Whether a `GET /` is a browser's (it asks for HTML) rather than a shipper's probe.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

/// The console's page.
pub(crate) async fn index(headers: &HeaderMap) -> Response {
    protect(asset("index.html", headers)).await
}

/// Security headers for every console answer.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// One embedded file, revalidated by its digest (`ETag`) so a new binary's files are never stale.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else { return ApiError::NotFound.into_response() };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let cache = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, String::from("no-cache"))];
    let matches = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, content_type(path))], file.data.into_owned()).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CSRF token of a session: derived from its token, which only the cookie holds, so it cannot be
/// guessed without it and needs no storage.
pub(crate) fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::new().chain_update(b"ledger console csrf\0").chain_update(session_token).finalize();
    hex(&digest[..16])
}

fn csrf_ok(headers: &HeaderMap, session_token: &str) -> bool {
    headers
        .get(CSRF_HEADER)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(csrf_token(session_token).as_bytes())))
}

/// The session token of the request's cookie, if it has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Middleware: a `/v1/` request with the session cookie and no `Authorization` header is authenticated by the
/// cookie, if it is a read or carries the session's CSRF token.
pub(crate) async fn cookie_session(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v1/") || request.headers().contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    let Some(token) = session_cookie(request.headers()).map(str::to_owned) else { return next.run(request).await };
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !safe && !csrf_ok(request.headers(), &token) {
        return ApiError::CsrfTokenInvalid.into_response();
    }
    match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(value) => {
            request.headers_mut().insert(header::AUTHORIZATION, value);
            next.run(request).await
        }
        Err(_) => ApiError::Unauthorized.into_response(),
    }
}

fn cookie(settings: ConsoleSettings, value: &str, max_age: u64) -> HeaderValue {
    let secure = if settings.secure_cookie { "; Secure" } else { "" };
    let text = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("ledger_session=; Max-Age=0"))
}

/// A signed-in answer: the user and the CSRF token in the body, the session in the cookie (never the body).
fn signed_in(state: &AppState, status: StatusCode, issued: Issued) -> Response {
    let body = json!({
        "user": UserBody::from(&issued.user),
        "csrf_token": csrf_token(&issued.token),
        "expires_in": issued.expires_in,
    });
    let mut response = (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(state.console, &issued.token, issued.expires_in));
    response
}

/// `POST /console/session` `{"email", "password"}`: sign in (the same checks and limits as `/v1/login`).
async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    let (email, password) = body.checked(false)?;
    let issued = state.accounts.login(&email, &password, ip).await?;
    Ok(signed_in(&state, StatusCode::OK, issued))
}

/// `POST /console/signup` `{"email", "password"}`: create an account and sign in (as `/v1/register`).
async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    let (email, password) = body.checked(true)?;
    let issued = state.accounts.register(&email, &password, ip).await?;
    Ok(signed_in(&state, StatusCode::CREATED, issued))
}

/// `GET /console/session`: who is signed in, and the session's CSRF token; 401 when nobody is.
async fn current(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = session_cookie(&headers).ok_or(ApiError::Unauthorized)?;
    let session = state.accounts.session(token).await?;
    let user = state.accounts.me(session).await?;
    let body = json!({"user": UserBody::from(&user), "csrf_token": csrf_token(token)});
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `DELETE /console/session` (with `X-CSRF-Token`): sign out; the session is refused from now on, everywhere.
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = session_cookie(&headers).ok_or(ApiError::Unauthorized)?;
    if !csrf_ok(&headers, token) {
        return Err(ApiError::CsrfTokenInvalid);
    }
    let session = state.accounts.session(token).await?;
    state.accounts.logout(session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(state.console, "", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; ledger_session=abc.def ; x=1"));
        assert_eq!(session_cookie(&headers), Some("abc.def"));
        headers.insert(header::COOKIE, HeaderValue::from_static("ledger_session_other=1"));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let mut headers = HeaderMap::new();
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&csrf_token("one")).expect("header"));
        assert!(csrf_ok(&headers, "one"));
        assert!(!csrf_ok(&headers, "two"));
        assert!(!csrf_ok(&HeaderMap::new(), "one"));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let plain = ConsoleSettings { enabled: true, secure_cookie: false };
        let value = cookie(plain, "t", 3600);
        assert_eq!(value, "ledger_session=t; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600");
        let tls = ConsoleSettings { secure_cookie: true, ..plain };
        assert!(cookie(tls, "t", 1).to_str().expect("text").ends_with("; Secure"));
    }

    #[test]
    fn the_page_and_its_files_are_embedded() {
        for path in ["index.html", "app.js", "app.css"] {
            assert!(Assets::get(path).is_some(), "console/dist/{path} is missing: run `npm run build` in console/");
        }
    }
}
