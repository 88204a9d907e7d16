//! TLS to the data stores: PostgreSQL's `sslmode` (libpq's names and meanings, over
//! rustls) and the CA files that add to the system's roots, for PostgreSQL and for the
//! broker's `amqps://`.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and refuses the other values, so
//! the mode is taken out of the URL here and carried beside its `Config`; whether the
//! server's certificate is checked is this module's verifier, not tokio-postgres's mode.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode `{0}` is not one of {ALLOWED_MODES}")]
    UnknownSslMode(String),
    #[error("cannot read `{}`: {source}", path.display())]
    CaUnreadable { path: PathBuf, source: io::Error },
    #[error(
        "`{}` holds no PEM certificate: give the CA's certificate, the text from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----",
        path.display()
    )]
    CaEmpty { path: PathBuf },
    #[error("`{}` is not a PEM file of CA certificates: {reason}", path.display())]
    CaInvalid { path: PathBuf, reason: String },
    #[error(
        "no certificate authority to check the database server's certificate against: the system has no root certificates; set WEFT_DATABASE_CA_FILE to the CA that signed it"
    )]
    NoRoots,
    #[error("TLS could not be set up: {0}")]
    Setup(String),
}

const ALLOWED_MODES: &str = "disable, prefer, require, verify-ca, verify-full";

/// How a connection to PostgreSQL uses TLS, as libpq's `sslmode` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked, so the connection is
    /// encrypted but the server is not authenticated.
    Require,
    /// TLS with a certificate signed by a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a certificate signed by a trusted CA and issued for the URL's host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(text: &str) -> Result<Self, TlsError> {
        match text {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(TlsError::UnknownSslMode(other.to_owned())),
        }
    }
}

impl SslMode {
    /// What tokio-postgres is told: whether to ask the server for TLS and whether to go
    /// on without it.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Negotiation;
        match self {
            Self::Disable => Negotiation::Disable,
            Self::Prefer => Negotiation::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Negotiation::Require,
        }
    }
}

/// A PostgreSQL URL or `key=value` string without its `sslmode` settings, and the mode
/// they set (the last one wins, as in libpq); [`SslMode::Prefer`] when none is set.
pub fn split_ssl_mode(text: &str) -> Result<(Cow<'_, str>, SslMode), TlsError> {
    let url_form = text.starts_with("postgres://") || text.starts_with("postgresql://");
    let (rest, mode) = if url_form {
        split_url_ssl_mode(text)?
    } else {
        split_keyword_ssl_mode(text)?
    };
    Ok((rest, mode.unwrap_or_default()))
}

fn split_url_ssl_mode(text: &str) -> Result<(Cow<'_, str>, Option<SslMode>), TlsError> {
    let Some((head, query)) = text.split_once('?') else {
        return Ok((Cow::Borrowed(text), None));
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", value)) => {
                let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                mode = Some(value.parse()?);
            }
            _ => kept.push(pair),
        }
    }
    if mode.is_none() {
        return Ok((Cow::Borrowed(text), None));
    }
    let rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((Cow::Owned(rest), mode))
}

fn split_keyword_ssl_mode(text: &str) -> Result<(Cow<'_, str>, Option<SslMode>), TlsError> {
    // A string that does not tokenize is left whole for tokio-postgres to refuse.
    let Some(pairs) = keyword_pairs(text) else {
        return Ok((Cow::Borrowed(text), None));
    };
    let mut mode = None;
    let mut rest = String::new();
    let mut from = 0;
    for pair in pairs.iter().filter(|pair| pair.key == "sslmode") {
        mode = Some(pair.value.parse()?);
        rest.push_str(&text[from..pair.span.0]);
        from = pair.span.1;
    }
    if mode.is_none() {
        return Ok((Cow::Borrowed(text), None));
    }
    rest.push_str(&text[from..]);
    Ok((Cow::Owned(rest), mode))
}

/// One `key = value` of a libpq connection string: where it is in the text, and its
/// value unquoted.
struct KeywordPair<'a> {
    span: (usize, usize),
    key: &'a str,
    value: String,
}

/// The pairs of a libpq `key=value` string (values bare or in single quotes, `\`
/// escaping the next character), or `None` when it is not one.
fn keyword_pairs(text: &str) -> Option<Vec<KeywordPair<'_>>> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_spaces(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            return Some(pairs);
        };
        while chars
            .next_if(|(_, c)| *c != '=' && !c.is_whitespace())
            .is_some()
        {}
        let key_end = chars.peek().map_or(text.len(), |&(at, _)| at);
        skip_spaces(&mut chars);
        chars.next_if(|(_, c)| *c == '=')?;
        skip_spaces(&mut chars);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None if quoted => return None,
                None => break text.len(),
                Some((_, '\\')) => value.push(chars.next()?.1),
                Some((at, '\'')) if quoted => break at + 1,
                Some((at, c)) if c.is_whitespace() && !quoted => break at,
                Some((_, c)) => value.push(c),
            }
        };
        pairs.push(KeywordPair {
            span: (start, end),
            key: &text[start..key_end],
            value,
        });
    }
}

/// Where PostgreSQL is and how to reach it: the connection settings (whose `Debug` hides
/// the password) and the `sslmode` they were given with.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
}

impl DatabaseUrl {
    /// `config` as parsed without its `sslmode` (see [`split_ssl_mode`]), and that mode.
    pub fn new(mut config: tokio_postgres::Config, ssl_mode: SslMode) -> Self {
        config.ssl_mode(ssl_mode.negotiation());
        Self { config, ssl_mode }
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The TLS connector for this mode: the server's certificate checked against the
    /// system's roots and `ca`'s certificates for `verify-ca` and `verify-full`, not at
    /// all for `prefer` and `require` (as libpq without a root certificate file).
    pub fn connector(&self, ca: Option<&CaFile>) -> Result<MakeRustlsConnect, TlsError> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match self.ssl_mode {
            // Under `disable` tokio-postgres never starts TLS; the verifier goes unused.
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Lenient {
                chain: None,
                provider: Arc::clone(&provider),
            }),
            SslMode::VerifyCa => Arc::new(Lenient {
                chain: Some(webpki_verifier(ca, &provider)?),
                provider: Arc::clone(&provider),
            }),
            SslMode::VerifyFull => webpki_verifier(ca, &provider)?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The provider reqwest and lapin build on too, named rather than taken from the process
/// default, which is unset whenever more than one provider is compiled in.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn webpki_verifier(
    ca: Option<&CaFile>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped: an image without them still verifies
    // against the CA file.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = ca {
        roots.add_parsable_certificates(ca.certs.iter().cloned());
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))
}

/// The verifier of the modes that check less than `verify-full`: the chain but not the
/// host name (`verify-ca`), or nothing (`prefer`, `require`: no `chain`). In every mode the
/// handshake must be signed by the certificate's key, or the session keys would not be
/// bound to the server that sent it.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The name is checked last, after the chain, so a refusal for the name alone
        // means the chain was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// CA certificates (PEM) trusted besides the system's, read and checked at start.
#[derive(Clone)]
pub struct CaFile {
    path: PathBuf,
    /// As read: lapin takes PEM text.
    pem: Arc<str>,
    certs: Arc<[CertificateDer<'static>]>,
}

// The certificates would be dumped byte by byte.
impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl CaFile {
    /// Reads the file and checks that it holds at least one certificate and that each one
    /// can be a trust anchor, so a wrong file stops the process at start rather than
    /// failing every connection later.
    pub fn read(path: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read_to_string(path).map_err(|source| TlsError::CaUnreadable {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| TlsError::CaInvalid {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::CaEmpty {
                path: path.to_owned(),
            });
        }
        let mut anchors = RootCertStore::empty();
        for (number, cert) in certs.iter().enumerate() {
            anchors
                .add(cert.clone())
                .map_err(|e| invalid(format!("certificate {}: {e}", number + 1)))?;
        }
        Ok(Self {
            path: path.to_owned(),
            pem: Arc::from(pem),
            certs: Arc::from(certs),
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }
}

/// What to add to the message of a failed connection whose cause (`error` or one of its
/// sources) is a server certificate the handshake refused: why, in words, and what to do;
/// empty for any other failure. `ca_setting` is the setting that adds a CA.
pub fn certificate_advice(error: &(dyn std::error::Error + 'static), ca_setting: &str) -> String {
    match refused_certificate(error) {
        Some(CertificateError::UnknownIssuer) => format!(
            " (the server's certificate is not trusted: no system CA nor any in {ca_setting} signed it)"
        ),
        Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
            " (the server's certificate is trusted but not issued for the host in the URL: connect by a name it was issued for)"
                .to_owned()
        }
        _ => String::new(),
    }
}

fn refused_certificate<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CertificateError> {
    let mut next = Some(error);
    while let Some(error) = next {
        // tokio-rustls reports rustls's error inside an io::Error, whose `source` skips it.
        let wrapped = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(error), wrapped].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(refused)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(refused);
            }
        }
        next = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (String, SslMode) {
        let (rest, mode) = split_ssl_mode(text).expect("valid");
        (rest.into_owned(), mode)
    }

    #[test]
    fn the_mode_is_taken_out_of_a_url() {
        assert_eq!(
            split("postgres://weft@db/weft?sslmode=verify-full"),
            ("postgres://weft@db/weft".to_owned(), SslMode::VerifyFull)
        );
        assert_eq!(
            split("postgresql://db/weft?connect_timeout=5&sslmode=verify-ca&application_name=x"),
            (
                "postgresql://db/weft?connect_timeout=5&application_name=x".to_owned(),
                SslMode::VerifyCa
            )
        );
        assert_eq!(
            split("postgres://db/weft?sslmode=disable&sslmode=require"),
            ("postgres://db/weft".to_owned(), SslMode::Require),
            "the last one wins"
        );
        assert_eq!(
            split("postgres://db/weft?connect_timeout=5"),
            (
                "postgres://db/weft?connect_timeout=5".to_owned(),
                SslMode::Prefer
            ),
            "libpq's default"
        );
    }

    #[test]
    fn the_mode_is_taken_out_of_a_keyword_string() {
        assert_eq!(
            split("host=db sslmode=verify-full user=weft"),
            ("host=db  user=weft".to_owned(), SslMode::VerifyFull)
        );
        assert_eq!(
            split("password='a b\\' sslmode=disable' sslmode = 'verify-ca'"),
            (
                "password='a b\\' sslmode=disable' ".to_owned(),
                SslMode::VerifyCa
            ),
            "quoted values are values, not pairs"
        );
        assert_eq!(
            split("host=db password='unterminated"),
            ("host=db password='unterminated".to_owned(), SslMode::Prefer),
            "left for tokio-postgres to refuse"
        );
    }

    #[test]
    fn an_unknown_mode_is_refused_naming_the_allowed_ones() {
        for text in [
            "postgres://db/weft?sslmode=allow",
            "host=db sslmode=Verify-Full",
        ] {
            let error = split_ssl_mode(text).expect_err("unknown").to_string();
            assert!(
                error.ends_with("is not one of disable, prefer, require, verify-ca, verify-full"),
                "{error}"
            );
        }
        assert_eq!(
            "allow".parse::<SslMode>().expect_err("unknown").to_string(),
            "sslmode `allow` is not one of disable, prefer, require, verify-ca, verify-full"
        );
    }

    #[test]
    fn tokio_postgres_is_told_whether_to_insist_on_tls() {
        use tokio_postgres::config::SslMode as Negotiation;
        for (mode, negotiation) in [
            (SslMode::Disable, Negotiation::Disable),
            (SslMode::Prefer, Negotiation::Prefer),
            (SslMode::Require, Negotiation::Require),
            (SslMode::VerifyCa, Negotiation::Require),
            (SslMode::VerifyFull, Negotiation::Require),
        ] {
            let url = DatabaseUrl::new(tokio_postgres::Config::new(), mode);
            assert_eq!(url.config().get_ssl_mode(), negotiation, "{mode:?}");
        }
    }

    fn temp_file(content: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("weft-ca-{}.pem", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, content).expect("written");
        path
    }

    #[test]
    fn a_ca_file_without_a_usable_certificate_is_refused_naming_it() {
        let missing = std::env::temp_dir().join("weft-no-such-ca.pem");
        let error = CaFile::read(&missing).expect_err("missing").to_string();
        assert!(
            error.starts_with(&format!("cannot read `{}`: ", missing.display())),
            "{error}"
        );

        let key = temp_file("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let error = CaFile::read(&key).expect_err("no certificate").to_string();
        assert!(
            error.starts_with(&format!("`{}` holds no PEM certificate", key.display())),
            "{error}"
        );
        std::fs::remove_file(key).expect("removed");

        let garbage = temp_file(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        );
        let error = CaFile::read(&garbage).expect_err("not DER").to_string();
        assert!(
            error.starts_with(&format!(
                "`{}` is not a PEM file of CA certificates: certificate 1: ",
                garbage.display()
            )),
            "{error}"
        );
        std::fs::remove_file(garbage).expect("removed");
    }

    #[test]
    fn refused_certificates_are_explained_through_io_errors() {
        let refused = |error: CertificateError| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(error),
            )
        };
        let advice = certificate_advice(&refused(CertificateError::UnknownIssuer), "WEFT_X_CA");
        assert_eq!(
            advice,
            " (the server's certificate is not trusted: no system CA nor any in WEFT_X_CA signed it)"
        );
        assert!(
            certificate_advice(&refused(CertificateError::NotValidForName), "WEFT_X_CA")
                .contains("not issued for the host in the URL")
        );
        assert_eq!(
            certificate_advice(&io::Error::other("refused"), "WEFT_X_CA"),
            ""
        );
    }
}
