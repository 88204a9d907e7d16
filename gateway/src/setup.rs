//! What the operator's commands do to the database: `weft-gateway create-user`,
//! `weft-gateway reset-password` and `weft-gateway disable-user`.

use deadpool_postgres::{GenericClient, Pool};
use serde_json::json;
use weft_domain::ids::{UserId, WorkspaceId};

use crate::api::workspaces;
use crate::audit::{self, Client, Event};
use crate::identity::passwords::{self, PasswordError};
use crate::identity::resets;
use crate::identity::users::{self, CreateError};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Email(#[from] users::EmailError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("`--name` must be 1 to 200 characters")]
    Name,
    #[error("`--workspace-name` must be 1 to 200 characters")]
    WorkspaceName,
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error("no person has the email {0}")]
    UnknownEmail(String),
    #[error("connecting to the database (WEFT_DATABASE_URL)")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("writing to the database")]
    Db(#[from] tokio_postgres::Error),
}

/// A person created from the command line.
pub struct Created {
    pub user: UserId,
    pub email: String,
    pub workspace: Option<WorkspaceId>,
}

/// Creates a person who signs in with `password`; with `owned_workspace`, also a
/// workspace of that name they own. Audited as the system's doing.
pub async fn create_user(
    pool: &Pool,
    email: &str,
    name: Option<&str>,
    password: secrecy::SecretString,
    owned_workspace: Option<&str>,
) -> Result<Created, SetupError> {
    let email = users::normalize_email(email)?;
    let name = name
        .map(str::trim)
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default())
        .to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(SetupError::Name);
    }
    let hash = passwords::hash(password).await?;
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let user = users::create(&tx, &email, &name, Some(&hash)).await?;
    let workspace = match owned_workspace {
        Some(workspace_name) => {
            let workspace_name =
                workspaces::valid_name(workspace_name).map_err(|_| SetupError::WorkspaceName)?;
            let workspace = workspaces::insert(&tx, &workspace_name, Some(user)).await?;
            Some(workspace.id)
        }
        None => None,
    };
    audit::record(
        &tx,
        workspace,
        None,
        &Client::default(),
        Event::new(audit::Action::UserCreated, "user", user)
            .with_summary(json!({ "email": email, "workspace": workspace, "via": "create-user" })),
    )
    .await?;
    tx.commit().await?;
    Ok(Created {
        user,
        email,
        workspace,
    })
}

/// Issues a password reset link for the person with `email`; returns the link.
pub async fn reset_password(
    pool: &Pool,
    public_url: &str,
    email: &str,
) -> Result<(String, chrono::DateTime<chrono::Utc>), SetupError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let user = person(&tx, email).await?;
    let issued = resets::issue(&tx, user).await?;
    audit::record(
        &tx,
        None,
        None,
        &Client::default(),
        Event::new(audit::Action::PasswordResetIssued, "user", user)
            .with_summary(json!({ "via": "reset-password", "expires_at": issued.expires_at })),
    )
    .await?;
    tx.commit().await?;
    Ok((resets::link(public_url, &issued.token), issued.expires_at))
}

/// Disables (or enables again) the person with `email`. Disabling ends their sessions at
/// once; their API keys stop because every request checks their creator.
pub async fn set_disabled(pool: &Pool, email: &str, disabled: bool) -> Result<(), SetupError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let user = person(&tx, email).await?;
    users::set_disabled(&tx, user, disabled).await?;
    let action = if disabled {
        audit::Action::UserDisabled
    } else {
        audit::Action::UserEnabled
    };
    audit::record(
        &tx,
        None,
        None,
        &Client::default(),
        Event::new(action, "user", user).with_summary(json!({ "via": "disable-user" })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The person with `email`.
async fn person(db: &impl GenericClient, email: &str) -> Result<UserId, SetupError> {
    let email = users::normalize_email(email)?;
    Ok(users::credentials(db, &email)
        .await?
        .ok_or(SetupError::UnknownEmail(email))?
        .id)
}
