//! Who is calling, and what they may do.
//!
//! A request proves who it is with an API key (`Authorization: Bearer hk_<id>_<secret>`) or with
//! a dashboard session cookie; the key's role grants permissions (see
//! [`hubkeeper_core::access::Role`]). The key store and the session rows live in
//! `hubkeeper_core::access`; this module is how HTTP presents them:
//!
//! - [`caller`]: the authenticated caller and its extractors;
//! - [`authenticator`]: verifying keys (with a short cache) and session cookies;
//! - [`sessions`]: how session cookies are issued;
//! - [`csrf`]: why a cookie alone never authorizes a change;
//! - [`routes`]: `/auth/login`, `/auth/logout`, `/auth/me`, `/auth/session`.

pub mod authenticator;
pub mod caller;
pub mod csrf;
pub mod routes;
pub mod sessions;

pub use authenticator::{authenticate, Authenticator, KEY_CACHE_TTL};
pub use caller::{AppAccess, AuthMethod, Authenticated, Caller};
pub use csrf::{is_safe_method, CSRF_HEADER};
pub use hubkeeper_core::access::{
    create_key, create_key_for_apps, install_key, is_well_formed_key, revoke_key, CreateKeyError,
    InstallKeyError, Installed, NewApiKey, Permission, Role,
};
pub use routes::router;
pub use sessions::{SessionSettings, DEFAULT_SESSION_TTL, DEV_SESSION_COOKIE, SESSION_COOKIE};
