//! The credentials put into a request as the connector's auth type says.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};

use super::credentials::Credentials;
use super::request::{Carrying, PreparedRequest, permanent};
use crate::manifest::{Auth, KeyLocation};
use crate::messages::NodeError;

/// A credential as a header value, never echoed: a line break in it would otherwise let
/// a stored credential add headers of its own.
fn secret_header(name: &HeaderName, value: &str) -> Result<HeaderValue, NodeError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        permanent(format!(
            "a credential of the connection is not a valid value for the `{name}` header (line breaks or control characters): update the connection"
        ))
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Puts the credentials into the request as the auth type says. For `oauth2` the access
/// token must be there already (obtained or refreshed by the caller).
pub fn authorize(
    request: &mut PreparedRequest,
    auth: &Auth,
    credentials: &Credentials,
) -> Result<(), NodeError> {
    if *auth != Auth::None {
        request.carrying = Carrying::Credentials;
    }
    match auth {
        Auth::None => {}
        Auth::ApiKey {
            location,
            name,
            prefix,
        } => {
            let key = credentials.require("api_key")?;
            match location {
                KeyLocation::Header => {
                    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        permanent(format!("auth.name: `{name}` is not a header name"))
                    })?;
                    let value = format!("{}{key}", prefix.as_deref().unwrap_or(""));
                    let value = secret_header(&header, &value)?;
                    request.headers.insert(header, value);
                }
                KeyLocation::Query => {
                    request.url.query_pairs_mut().append_pair(name, key);
                }
            }
        }
        Auth::Bearer => {
            let token = credentials.require("token")?;
            request.headers.insert(
                AUTHORIZATION,
                secret_header(&AUTHORIZATION, &format!("Bearer {token}"))?,
            );
        }
        Auth::Basic => {
            let user = credentials.require("username")?;
            let password = credentials.require("password")?;
            let encoded = STANDARD.encode(format!("{user}:{password}"));
            request.headers.insert(
                AUTHORIZATION,
                secret_header(&AUTHORIZATION, &format!("Basic {encoded}"))?,
            );
        }
        Auth::Oauth2(_) => {
            let token = credentials.require("access_token")?;
            request.headers.insert(
                AUTHORIZATION,
                secret_header(&AUTHORIZATION, &format!("Bearer {token}"))?,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::connector::fixtures::*;
    use crate::connector::prepare_http;
    use crate::manifest::{Grant, OAuth2};
    use crate::messages::ErrorClass;
    fn authorized(auth: Auth, fields: Value) -> Result<PreparedRequest, NodeError> {
        let mut request = prepare_http(&json!({"url": "https://x.test/p?a=1"})).expect("valid");
        authorize(&mut request, &auth, &credentials(fields))?;
        Ok(request)
    }

    #[test]
    fn each_auth_type_puts_its_credential_where_it_belongs() {
        let header_key = authorized(
            Auth::ApiKey {
                location: KeyLocation::Header,
                name: "X-Api-Key".into(),
                prefix: Some("Token ".into()),
            },
            json!({"api_key": "k-123"}),
        )
        .expect("api key");
        assert_eq!(header(&header_key, "x-api-key"), Some("Token k-123"));
        assert!(header_key.headers["x-api-key"].is_sensitive());

        let query_key = authorized(
            Auth::ApiKey {
                location: KeyLocation::Query,
                name: "key".into(),
                prefix: None,
            },
            json!({"api_key": "k 1"}),
        )
        .expect("api key");
        assert_eq!(query_key.url.as_str(), "https://x.test/p?a=1&key=k+1");

        let bearer = authorized(Auth::Bearer, json!({"token": "t-1"})).expect("bearer");
        assert_eq!(header(&bearer, "authorization"), Some("Bearer t-1"));

        let basic =
            authorized(Auth::Basic, json!({"username": "ada", "password": "pw"})).expect("basic");
        assert_eq!(
            header(&basic, "authorization"),
            Some("Basic YWRhOnB3"),
            "base64 of ada:pw"
        );

        let oauth = Auth::Oauth2(OAuth2 {
            grant: Grant::AuthorizationCode,
            authorize_url: None,
            token_url: "https://x.test/token".into(),
            scopes: vec![],
            scope_separator: " ".into(),
            authorize_params: BTreeMap::new(),
        });
        let bearer = authorized(oauth.clone(), json!({"access_token": "at-1"})).expect("oauth");
        assert_eq!(header(&bearer, "authorization"), Some("Bearer at-1"));

        let error = authorized(oauth, json!({"client_id": "c"})).expect_err("no token");
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(
            error.message.contains("`access_token`"),
            "{}",
            error.message
        );
        let error = authorized(
            Auth::ApiKey {
                location: KeyLocation::Header,
                name: "X-Api-Key".into(),
                prefix: None,
            },
            json!({"api_key": "k-1\r\nX-Admin: yes"}),
        )
        .expect_err("a line break");
        assert_eq!(
            error.message,
            "a credential of the connection is not a valid value for the `x-api-key` header (line breaks or control characters): update the connection"
        );
        let none = authorized(Auth::None, json!({})).expect("none");
        assert!(none.headers.is_empty());
    }
}
