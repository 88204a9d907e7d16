//! People and how they prove who they are (architecture §11): passwords, sessions, the
//! secrets Weft issues, password reset links, single sign-on (OpenID Connect), and the
//! back-off of failed logins.

pub mod login_throttle;
pub mod passwords;
pub mod resets;
pub mod sessions;
pub mod sso;
pub mod tokens;
pub mod users;
