//! Mail the gateway sends when `WEFT_SMTP_URL` is set: invitations and password reset
//! links, to the person they are for. Without it nothing is mailed and the links are
//! handed over by whoever created them (they are in the API's answer either way).
//!
//! A mail that cannot be sent does not undo what it announces: the invitation or reset
//! stands, the answer says `mailed: false`, and the failure is logged (without the link).

use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

/// How long one delivery to the SMTP server may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The URL itself is not shown: it holds the SMTP password.
    #[error(
        "WEFT_SMTP_URL is not a usable SMTP URL ({0}): write smtps://user:password@host:465 or smtp://host:25"
    )]
    Url(String),
    #[error("WEFT_SMTP_FROM `{0}` is not a mailbox like `Weft <weft@example.com>`")]
    From(String),
    #[error("`{0}` is not an address mail can be sent to")]
    To(String),
    #[error("building the mail failed: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("the SMTP server did not take the mail: {0}")]
    Send(#[from] lettre::transport::smtp::Error),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(url: &SecretString, from: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|e| MailError::Url(e.to_string().replace(url.expose_secret(), "***")))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = from.parse().map_err(|_| MailError::From(from.to_owned()))?;
        Ok(Self { transport, from })
    }

    async fn send(&self, to: &str, subject: &str, text: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::To(to.to_owned()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)?;
        self.transport.send(message).await?;
        Ok(())
    }

    /// Mails `email` their invitation to `workspace`.
    pub async fn invitation(
        &self,
        email: &str,
        workspace: &str,
        role: &str,
        url: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), MailError> {
        let text = format!(
            "You are invited to join the Weft workspace \"{workspace}\" as {role}.\n\n\
             Accept the invitation here (the link works once, until {}):\n\n{url}\n\n\
             If you did not expect this, ignore this mail.\n",
            expires_at.format("%Y-%m-%d %H:%M UTC")
        );
        self.send(email, &format!("Join {workspace} on Weft"), text)
            .await
    }

    /// Mails `email` a link to choose a new password.
    pub async fn password_reset(
        &self,
        email: &str,
        url: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), MailError> {
        let text = format!(
            "Choose a new Weft password here (the link works once, until {}):\n\n{url}\n\n\
             Setting it signs you out everywhere. If you did not ask for this, tell your \
             workspace's owner.\n",
            expires_at.format("%Y-%m-%d %H:%M UTC")
        );
        self.send(email, "Your Weft password", text).await
    }
}

/// Whether a mail went out; a failure is logged, for the caller to answer `mailed: false`.
pub fn sent(result: Result<(), MailError>, what: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "mailing the {what} failed; it stands: hand the link over instead");
            false
        }
    }
}
