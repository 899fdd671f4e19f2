//! Accounts, projects and API keys: the rules, independent of HTTP.
//!
//! - Passwords: bcrypt (cost from config), always on a blocking thread, and always run at login, even for
//!   an unknown e-mail (against a dummy hash), so timing does not tell which e-mails have accounts.
//! - Sessions: an HS256 JWT (the algorithm is pinned: `alg: none` or another algorithm is refused) that
//!   names a server-side session; logout deletes the session, so the token is refused at once.
//! - Login attempts are counted per (e-mail, client IP) before the password is checked, failures per e-mail
//!   under a looser ceiling, and login and register requests per IP; past a limit, 429 until its window
//!   ends. bcrypt runs on at most `auth.bcrypt_concurrency` threads at once; past it, 503.
//! - Anything that changes what a key may do (revocation, project deletion, new settings) makes every
//!   cache forget the key before answering.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ledger_stages::auth::{ApiKey, KeyDigest, KeyValidator};
use ledger_stages::rules::StageRules;
use ledger_stages::{ProjectSettings, Scope, SettingsPatch};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::AccountsConfig;
use crate::error::ApiError;
use crate::store::{Backend, KeyRecord, Project, StoreError, User};

const ISSUER: &str = "ledger";

/// A store failure as the client sees it.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // A duplicate the caller did not name (registration names the e-mail) is a bug, not the client's.
            StoreError::Duplicate => ApiError::Internal("a row with the same unique value exists".into()),
            StoreError::Moved => ApiError::Internal("a row changed under an update".into()),
            StoreError::Unavailable { what, cause } => {
                tracing::warn!(%cause, what, "dependency unavailable");
                ApiError::Unavailable { what, retry_after: Duration::from_secs(1) }
            }
            StoreError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    /// The server-side session id.
    sid: String,
    iss: String,
    iat: i64,
    exp: i64,
}

/// A request's session, once its token and server-side session are checked.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

/// What register and login hand back.
pub struct Issued {
    pub user: User,
    pub token: String,
    pub expires_in: u64,
}

/// A new key: the record, and the key itself, which exists only in this answer.
pub struct NewKey {
    pub record: KeyRecord,
    pub key: ApiKey,
}

pub struct Accounts {
    backend: Backend,
    validator: KeyValidator,
    config: AccountsConfig,
    defaults: ProjectSettings,
    /// The operator's ceilings (`[limits]`).
    limits: crate::config::LimitsConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// A bcrypt hash of a random password at the configured cost, verified against when the e-mail is
    /// unknown so that a failed login costs the same whether or not the account exists.
    dummy_hash: OnceCell<String>,
    /// bcrypt jobs running at once: password guessing must not take every core from ingestion and queries.
    bcrypt_slots: tokio::sync::Semaphore,
}

/// How long an address an account signed in from stays known to it (see [`Accounts::login`]).
pub const KNOWN_ADDRESS_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Times are kept to the microsecond, as API.md prints them and as PostgreSQL stores them.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

impl Accounts {
    pub(crate) fn new(
        backend: Backend,
        validator: KeyValidator,
        config: AccountsConfig,
        jwt_secret: &[u8],
        defaults: ProjectSettings,
        limits: crate::config::LimitsConfig,
    ) -> Accounts {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 0;
        Accounts {
            backend,
            validator,
            defaults,
            limits,
            encoding: EncodingKey::from_secret(jwt_secret),
            decoding: DecodingKey::from_secret(jwt_secret),
            validation,
            dummy_hash: OnceCell::new(),
            bcrypt_slots: tokio::sync::Semaphore::new(match config.bcrypt_concurrency {
                0 => std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
                n => n,
            }),
            config,
        }
    }

    pub(crate) fn validator(&self) -> &KeyValidator {
        &self.validator
    }

    // ---- users and sessions

    /// Counts one login or register attempt from `ip`; past `auth.attempts_per_ip_per_minute`, 429.
    async fn limit_ip(&self, ip: IpAddr, refused: fn(Duration) -> ApiError) -> Result<(), ApiError> {
        let (count, remaining) =
            self.backend.counters.hit(&format!("attempts-ip:{ip}"), Duration::from_secs(60)).await?;
        if count > u64::from(self.config.attempts_per_ip_per_minute) {
            return Err(refused(remaining));
        }
        Ok(())
    }

    /// Runs a bcrypt job once a slot is free (at most `auth.bcrypt_concurrency` at once); 503 when none
    /// frees up within `auth.bcrypt_queue_ms`.
    async fn bcrypt<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let wait = self.config.bcrypt_queue;
        let busy = ApiError::Unavailable { what: "password checking (busy)", retry_after: Duration::from_secs(1) };
        let _slot = match tokio::time::timeout(wait, self.bcrypt_slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(busy),
        };
        blocking(job).await
    }

    pub(crate) async fn register(&self, email: &str, password: &str, ip: IpAddr) -> Result<Issued, ApiError> {
        self.limit_ip(ip, |retry_after| ApiError::RateLimited { retry_after }).await?;
        let cost = self.config.bcrypt_cost;
        let password = password.to_owned();
        let hash = self.bcrypt(move || bcrypt::hash(password, cost)).await?.map_err(ApiError::internal)?;
        let user = User { id: Uuid::now_v7(), email: email.to_owned(), created_at: now() };
        self.backend.accounts.create_user(&user, &hash).await.map_err(|e| match e {
            StoreError::Duplicate => ApiError::EmailTaken,
            other => other.into(),
        })?;
        tracing::info!(user_id = %user.id, "user registered");
        self.issue(user).await
    }

    /// Logs in, counting the attempt before the password is checked (`ip` is the client's address, an
    /// IPv6 /64 taken as one):
    /// - per (e-mail, IP): atomically counted first, so a burst of guesses cannot all pass a check made
    ///   before any of them is counted; a success clears it;
    /// - per e-mail from every IP: a looser ceiling on failures only, which refuses *unknown* addresses:
    ///   an address this account signed in from within [`KNOWN_ADDRESS_FOR`] is held by its own
    ///   (e-mail, IP) limit alone, so strangers guessing from many addresses cannot lock the owner out;
    /// - per IP: every login and register.
    pub(crate) async fn login(&self, email: &str, password: &str, ip: IpAddr) -> Result<Issued, ApiError> {
        self.limit_ip(ip, |retry_after| ApiError::TooManyLoginAttempts { retry_after }).await?;
        let window = self.config.login_window;
        // Keyed by a digest: e-mail addresses have no business in cache key names.
        let email_key = KeyDigest::of(email).to_hex();
        let per_email = format!("login-failures:{email_key}");
        let known = format!("login-known:{email_key}:{ip}");
        let (failures, remaining) = self.backend.counters.peek(&per_email).await?;
        if failures >= u64::from(self.config.login_max_failures_per_email)
            && self.backend.counters.peek(&known).await?.0 == 0
        {
            return Err(ApiError::TooManyLoginAttempts { retry_after: remaining });
        }
        let per_source = format!("login-attempts:{email_key}:{ip}");
        let (attempts, remaining) = self.backend.counters.hit(&per_source, window).await?;
        if attempts > u64::from(self.config.login_max_failures) {
            return Err(ApiError::TooManyLoginAttempts { retry_after: remaining });
        }
        let found = self.backend.accounts.user_by_email(email).await?;
        let hash = match &found {
            Some((_, hash)) => hash.clone(),
            None => self.dummy_hash().await?,
        };
        let password = password.to_owned();
        let verified = self.bcrypt(move || bcrypt::verify(password, &hash).unwrap_or(false)).await?;
        match found {
            Some((user, _)) if verified => {
                self.backend.counters.clear(&per_source).await?;
                self.backend.counters.hit(&known, KNOWN_ADDRESS_FOR).await?;
                self.issue(user).await
            }
            _ => {
                self.backend.counters.hit(&per_email, window).await?;
                Err(ApiError::Unauthorized)
            }
        }
    }

    async fn dummy_hash(&self) -> Result<String, ApiError> {
        let cost = self.config.bcrypt_cost;
        self.dummy_hash
            .get_or_try_init(|| async move {
                let random = Uuid::new_v4().to_string();
                self.bcrypt(move || bcrypt::hash(random, cost)).await?.map_err(ApiError::internal)
            })
            .await
            .cloned()
    }

    async fn issue(&self, user: User) -> Result<Issued, ApiError> {
        let session_id = Uuid::new_v4();
        let ttl = self.config.session_ttl;
        self.backend.sessions.create_session(session_id, user.id, ttl).await?;
        let iat = Utc::now().timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            sid: session_id.to_string(),
            iss: ISSUER.into(),
            iat,
            exp: iat + i64::try_from(self.config.session_ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(Issued { user, token, expires_in: self.config.session_ttl.as_secs() })
    }

    /// Checks a session token: signature, algorithm, issuer, expiry, and that its session is still live.
    pub(crate) async fn session(&self, token: &str) -> Result<Session, ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::Unauthorized)?
            .claims;
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| ApiError::Unauthorized)?;
        let session_id = Uuid::parse_str(&claims.sid).map_err(|_| ApiError::Unauthorized)?;
        match self.backend.sessions.session_user(session_id).await? {
            Some(owner) if owner == user_id => Ok(Session { user_id, session_id }),
            _ => Err(ApiError::Unauthorized),
        }
    }

    pub(crate) async fn logout(&self, session: Session) -> Result<(), ApiError> {
        Ok(self.backend.sessions.delete_session(session.session_id).await?)
    }

    pub(crate) async fn me(&self, session: Session) -> Result<User, ApiError> {
        // A session whose user is gone is no session.
        self.backend.accounts.user(session.user_id).await?.ok_or(ApiError::Unauthorized)
    }

    // ---- projects

    /// The operator's ceilings (`[limits]`).
    pub(crate) fn limits(&self) -> &crate::config::LimitsConfig {
        &self.limits
    }

    /// Each setting of `patch` out of bounds: past its type's bound, or past the operator's ceiling.
    pub(crate) fn settings_problems(&self, patch: &SettingsPatch) -> Vec<(&'static str, String)> {
        let mut problems = patch.problems();
        problems.extend(patch.problems_within(&self.limits.project_settings()));
        problems
    }

    /// A new project; `stages`: its own stage rules, checked by the caller.
    pub(crate) async fn create_project(
        &self,
        owner: Uuid,
        name: String,
        patch: SettingsPatch,
        stages: Option<StageRules>,
    ) -> Result<Project, ApiError> {
        let max = self.limits.max_projects_per_account;
        if self.backend.accounts.projects(owner).await?.len() >= max {
            let reason = format!("an account owns at most {max} projects on this server");
            return Err(ApiError::Validation(vec![crate::error::FieldProblem::new("name", reason)]));
        }
        let project = Project {
            id: Uuid::now_v7(),
            owner_id: owner,
            name,
            created_at: now(),
            settings: patch.apply(self.defaults.clone()),
            stages: stages.filter(|s| !s.is_empty()).map(std::sync::Arc::new),
        };
        self.backend.accounts.create_project(&project).await?;
        Ok(project)
    }

    pub(crate) async fn projects(&self, owner: Uuid) -> Result<Vec<Project>, ApiError> {
        Ok(self.backend.accounts.projects(owner).await?)
    }

    /// The project a reader may read: an API key's own project when the key has the `query` scope (naming
    /// another project is a 404), or, with a session, the `project_id` it names if the user owns it.
    pub(crate) async fn read_access(
        &self,
        key: Option<&str>,
        session_token: Option<&str>,
        project_param: Option<&str>,
    ) -> Result<Uuid, ApiError> {
        use ledger_stages::auth::AuthError;
        if let Some(key) = key {
            let project = self.validator.validate(key).await.map_err(|e| match e {
                AuthError::Malformed(_) | AuthError::Unknown => ApiError::Unauthorized,
                AuthError::Unavailable(_) => {
                    ApiError::Unavailable { what: "the account store", retry_after: Duration::from_secs(1) }
                }
            })?;
            if !project.has_scope(Scope::Query) {
                return Err(ApiError::InsufficientScope(Scope::Query.as_str()));
            }
            if project_param.is_some_and(|p| Uuid::parse_str(p).ok() != Some(project.project_id)) {
                return Err(ApiError::NotFound);
            }
            return Ok(project.project_id);
        }
        let session = self.session(session_token.ok_or(ApiError::Unauthorized)?).await?;
        let project = project_param
            .ok_or_else(|| ApiError::BadRequest("`project_id` is required with a session token".into()))?;
        // An id that is not a UUID names nothing: a 404 like any unknown id.
        let id = Uuid::parse_str(project).map_err(|_| ApiError::NotFound)?;
        Ok(self.project(session.user_id, id).await?.id)
    }

    pub(crate) async fn project(&self, owner: Uuid, id: Uuid) -> Result<Project, ApiError> {
        self.backend.accounts.project(owner, id).await?.ok_or(ApiError::NotFound)
    }

    pub(crate) async fn update_project(
        &self,
        owner: Uuid,
        id: Uuid,
        name: Option<String>,
        patch: SettingsPatch,
        stages: Option<StageRules>,
    ) -> Result<Project, ApiError> {
        let mut project = self.project(owner, id).await?;
        project.name = name.unwrap_or(project.name);
        project.settings = patch.apply(project.settings);
        // Given, the rules replace the project's whole (an empty object clears them).
        if let Some(stages) = stages {
            project.stages = Some(stages).filter(|s| !s.is_empty()).map(std::sync::Arc::new);
        }
        let updated = self.backend.accounts.update_project(owner, &project).await?.ok_or(ApiError::NotFound)?;
        // Cached key validations carry the settings and rules: make the new ones apply from the next request
        // on, on every instance.
        let digests = self.backend.accounts.key_digests(id).await?;
        self.forget_keys(&digests).await?;
        Ok(updated)
    }

    pub(crate) async fn delete_project(&self, owner: Uuid, id: Uuid) -> Result<(), ApiError> {
        let digests = self.backend.accounts.delete_project(owner, id).await?.ok_or(ApiError::NotFound)?;
        self.forget_keys(&digests).await?;
        tracing::info!(project_id = %id, keys = digests.len(), "project deleted");
        Ok(())
    }

    // ---- keys

    pub(crate) async fn create_key(
        &self,
        owner: Uuid,
        project_id: Uuid,
        name: String,
        scopes: Vec<Scope>,
    ) -> Result<NewKey, ApiError> {
        self.project(owner, project_id).await?;
        let key = ApiKey::generate();
        let record = KeyRecord {
            id: Uuid::now_v7(),
            project_id,
            name,
            prefix: key.prefix().to_owned(),
            scopes,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.backend.accounts.create_key(&record, &key.digest()).await?;
        // A client may have tried this key before it existed (a negative entry): forget that.
        self.forget_keys(&[key.digest()]).await?;
        tracing::info!(project_id = %project_id, key_id = %record.id, prefix = record.prefix, "API key created");
        Ok(NewKey { record, key })
    }

    pub(crate) async fn keys(&self, owner: Uuid, project_id: Uuid) -> Result<Vec<KeyRecord>, ApiError> {
        self.project(owner, project_id).await?;
        Ok(self.backend.accounts.keys(project_id).await?)
    }

    pub(crate) async fn revoke_key(&self, owner: Uuid, project_id: Uuid, key_id: Uuid) -> Result<(), ApiError> {
        self.project(owner, project_id).await?;
        let digest = self.backend.accounts.revoke_key(project_id, key_id, now()).await?.ok_or(ApiError::NotFound)?;
        self.forget_keys(&[digest]).await?;
        tracing::info!(project_id = %project_id, key_id = %key_id, "API key revoked");
        Ok(())
    }

    async fn forget_keys(&self, digests: &[KeyDigest]) -> Result<(), ApiError> {
        self.validator.forget(digests).await.map_err(|e| {
            // The store already changed; only the caches could not be told. Answer 503 so the client
            // retries, rather than claim success while another instance may still accept the key.
            ApiError::from(StoreError::Unavailable { what: "cache", cause: e.to_string() })
        })
    }
}

/// The shared handle the fronts use.
pub type SharedAccounts = Arc<Accounts>;
