//! Password reset links: issued by a workspace owner (for a person who belongs to none of
//! anyone else's workspaces) or by the operator's `weft-gateway reset-password`; used
//! once, before they expire. Setting the new password ends every session of the person.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use weft_domain::ids::UserId;

use super::tokens::{self, Kind};

/// How long a reset link works.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A reset just issued: the token goes into the link, and is not kept.
pub struct Issued {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Issues a reset for `user`; earlier unused ones stop working.
pub async fn issue(db: &impl GenericClient, user: UserId) -> Result<Issued, tokio_postgres::Error> {
    let token = tokens::generate(Kind::PasswordReset);
    let expires_at =
        Utc::now() + chrono::Duration::from_std(LIFETIME).expect("a day fits in a chrono duration");
    db.execute(
        "DELETE FROM password_resets WHERE user_id = $1 AND used_at IS NULL",
        &[&user],
    )
    .await?;
    db.execute(
        "INSERT INTO password_resets (id, user_id, token_sha256, expires_at) VALUES ($1, $2, $3, $4)",
        &[&uuid::Uuid::now_v7(), &user, &tokens::digest(&token), &expires_at],
    )
    .await?;
    Ok(Issued { token, expires_at })
}

/// The link a person opens to choose a new password.
pub fn link(public_url: &str, token: &str) -> String {
    format!("{public_url}/password-reset#token={token}")
}

/// Uses a reset: the person whose password `new_hash` becomes, with all their sessions
/// ended; `None` for an unknown, used or expired token.
pub async fn redeem(
    db: &impl GenericClient,
    token: &str,
    new_hash: &str,
) -> Result<Option<UserId>, tokio_postgres::Error> {
    let row = db
        .query_opt(
            "UPDATE password_resets SET used_at = now() \
             WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > now() \
             RETURNING user_id",
            &[&tokens::digest(token)],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let user: UserId = row.try_get("user_id")?;
    db.execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&user, &new_hash],
    )
    .await?;
    db.execute("DELETE FROM sessions WHERE user_id = $1", &[&user])
        .await?;
    Ok(Some(user))
}
