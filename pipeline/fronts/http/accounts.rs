//! `/v1/register`, `/v1/login`, `/v1/logout`, `/v1/me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ClientIp, JsonBody, SessionAuth};
use crate::accounts::Issued;
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::fronts::base::{AppState, timestamp};
use crate::store::User;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Compared case-insensitively.
    #[schema(required = true, example = "ada@example.com")]
    email: Option<String>,
    /// 8 to 72 bytes.
    #[schema(required = true, min_length = 8, max_length = 72)]
    password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    id: String,
    email: String,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&User> for UserBody {
    fn from(u: &User) -> Self {
        UserBody { id: u.id.to_string(), email: u.email.clone(), created_at: timestamp(&u.created_at) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    user: UserBody,
    /// A session token (JWT) for `Authorization: Bearer`.
    token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
}

impl From<Issued> for SessionBody {
    fn from(i: Issued) -> Self {
        SessionBody { user: UserBody::from(&i.user), token: i.token, token_type: "Bearer", expires_in: i.expires_in }
    }
}

/// A plausible e-mail: something@domain.tld, no spaces, at most 254 bytes. Deliverability is not ours to
/// judge; typos like a missing `@` or domain are.
fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else { return false };
    email.len() <= 254
        && !local.is_empty()
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !local.contains('@')
}

impl Credentials {
    /// The e-mail (trimmed, lower-cased) and password, or every problem with them.
    pub(super) fn checked(self, check_rules: bool) -> Result<(String, String), ApiError> {
        let mut problems = Vec::new();
        let email = self.email.map(|e| e.trim().to_lowercase());
        match &email {
            None => problems.push(FieldProblem::new("email", "is required")),
            Some(e) if check_rules && !plausible_email(e) => {
                problems.push(FieldProblem::new("email", "is not an e-mail address"));
            }
            Some(_) => {}
        }
        match &self.password {
            None => problems.push(FieldProblem::new("password", "is required")),
            Some(p) if check_rules && !(8..=72).contains(&p.len()) => {
                problems.push(FieldProblem::new("password", "must be 8 to 72 bytes"));
            }
            Some(_) => {}
        }
        match (email, self.password) {
            (Some(email), Some(password)) if problems.is_empty() => Ok((email, password)),
            _ => Err(ApiError::Validation(problems)),
        }
    }
}

#[utoipa::path(post, path = "/v1/register", tag = "accounts", request_body = Credentials,
    responses(
        (status = 201, body = SessionBody, description = "Account created; a session token for it"),
        (status = 409, body = ErrorBody, description = "email_taken"),
        (status = 422, body = ErrorBody, description = "validation_failed"),
        (status = 429, body = ErrorBody, description = "rate_limited: too many attempts from this IP, with Retry-After"),
        (status = 503, body = ErrorBody, description = "unavailable: password checking busy or a store down, with Retry-After"),
    ))]
pub(crate) async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<(StatusCode, Json<SessionBody>), ApiError> {
    let (email, password) = body.checked(true)?;
    let issued = state.accounts.register(&email, &password, ip).await?;
    Ok((StatusCode::CREATED, Json(issued.into())))
}

#[utoipa::path(post, path = "/v1/login", tag = "accounts", request_body = Credentials,
    responses(
        (status = 200, body = SessionBody),
        (status = 401, body = ErrorBody, description = "Wrong e-mail or password (one message for both)"),
        (status = 429, body = ErrorBody, description = "too_many_login_attempts, with Retry-After"),
        (status = 503, body = ErrorBody, description = "unavailable: password checking busy or a store down, with Retry-After"),
    ))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Json<SessionBody>, ApiError> {
    // No length rules at login: a wrong password is a 401 whatever its length.
    let (email, password) = body.checked(false)?;
    let issued = state.accounts.login(&email, &password, ip).await?;
    Ok(Json(issued.into()))
}

#[utoipa::path(post, path = "/v1/logout", tag = "accounts", security(("session" = [])),
    responses((status = 204, description = "The token is refused from the next request on"), (status = 401, body = ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
) -> Result<StatusCode, ApiError> {
    state.accounts.logout(session).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("session" = [])),
    responses((status = 200, body = UserBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
) -> Result<Json<UserBody>, ApiError> {
    let user = state.accounts.me(session).await?;
    Ok(Json(UserBody::from(&user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_emails() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(plausible_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a b@c.de", "a@.co", "a@b.", "a@b@c.de"] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let err = Credentials { email: None, password: Some("short".into()) }.checked(true).expect_err("invalid");
        let ApiError::Validation(problems) = err else { panic!("not a validation error") };
        assert_eq!(problems.len(), 2);
    }
}
