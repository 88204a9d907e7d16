//! People: their normalized email, name and password hash.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;
use weft_domain::ids::UserId;

/// How an email is compared and stored: trimmed and lower-cased. Local parts are
/// case-sensitive in theory and never in practice; two accounts differing only in case
/// would be a trap.
pub fn normalize_email(email: &str) -> Result<String, EmailError> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@').ok_or(EmailError)?;
    let plausible = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.chars().count() <= 320
        && !email.chars().any(char::is_whitespace);
    plausible.then_some(email).ok_or(EmailError)
}

#[derive(Debug, thiserror::Error)]
#[error("`email` must be an address of the form name@domain")]
pub struct EmailError;

/// A person as the API shows them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub disabled: bool,
}

impl UserView {
    pub const COLUMNS: &str = "u.id, u.email, u.display_name, u.created_at, u.last_login_at, \
                               u.disabled_at IS NOT NULL AS disabled";

    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            display_name: row.try_get("display_name")?,
            created_at: row.try_get("created_at")?,
            last_login_at: row.try_get("last_login_at")?,
            disabled: row.try_get("disabled")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("a person with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Inserts a person; `email` normalized and `password_hash` a PHC string already.
pub async fn create(
    db: &impl GenericClient,
    email: &str,
    display_name: &str,
    password_hash: Option<&str>,
) -> Result<UserId, CreateError> {
    let id = UserId::generate();
    let inserted = db
        .execute(
            "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4)",
            &[&id, &email, &display_name, &password_hash],
        )
        .await;
    match inserted {
        Ok(_) => Ok(id),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(CreateError::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

/// What a login checks a password against.
pub struct Credentials {
    pub id: UserId,
    pub password_hash: Option<String>,
    pub disabled: bool,
}

pub async fn credentials(
    db: &impl GenericClient,
    email: &str,
) -> Result<Option<Credentials>, tokio_postgres::Error> {
    let row = db
        .query_opt(
            "SELECT id, password_hash, disabled_at IS NOT NULL AS disabled FROM users WHERE email = $1",
            &[&email],
        )
        .await?;
    row.map(|row| {
        Ok(Credentials {
            id: row.try_get("id")?,
            password_hash: row.try_get("password_hash")?,
            disabled: row.try_get("disabled")?,
        })
    })
    .transpose()
}

/// Disables or enables a person; disabling also ends their sessions.
pub async fn set_disabled(
    db: &impl GenericClient,
    user: UserId,
    disabled: bool,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END \
         WHERE id = $1",
        &[&user, &disabled],
    )
    .await?;
    if disabled {
        db.execute("DELETE FROM sessions WHERE user_id = $1", &[&user])
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_email("  Ada.Lovelace@Example.COM ").expect("valid"),
            "ada.lovelace@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a b@example.com",
            "a@b@c",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
