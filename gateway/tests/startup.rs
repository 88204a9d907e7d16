//! The `weft-gateway` binary refuses a malformed secret setting in one line naming it,
//! without ever printing the secret.

use weft_testkit::startup::{marker, run};

const GATEWAY: &str = env!("CARGO_BIN_EXE_weft-gateway");
const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// Starts the gateway with valid master keys and `setting` set to `value`, and checks it
/// is refused.
fn assert_refused(setting: &str, value: &str, secret: &str) {
    run(
        GATEWAY,
        &[],
        &[("WEFT_MASTER_KEYS", KEYS), (setting, value)],
    )
    .assert_refused(setting, secret);
}

#[test]
fn malformed_master_keys_are_refused_without_echoing_them() {
    let secret = marker();
    for keys in [format!("k1:{secret}"), secret.clone()] {
        run(GATEWAY, &[], &[("WEFT_MASTER_KEYS", &keys)])
            .assert_refused("WEFT_MASTER_KEYS", &secret);
    }
}

#[test]
fn a_malformed_admin_token_is_refused_without_echoing_it() {
    let secret = marker();
    for token in [
        format!("{secret} {secret}"),
        secret[..12].to_owned(),
        "REPLACE-ME".to_owned(),
    ] {
        let shown = if token.contains(' ') {
            secret.as_str()
        } else {
            token.as_str()
        };
        assert_refused("WEFT_ADMIN_TOKEN", &token, shown);
    }
}

#[test]
fn a_malformed_database_url_is_refused_without_its_password() {
    let secret = marker();
    for url in [
        format!("postgres://weft:{secret}@postgres:notaport/weft"),
        format!("postgres://weft:{secret}@postgres:5432/weft?bogus=1"),
        format!("host=postgres password={secret} port=notaport"),
    ] {
        assert_refused("WEFT_DATABASE_URL", &url, &secret);
    }
}

#[test]
fn a_malformed_broker_url_is_refused_without_its_password() {
    let secret = marker();
    for url in [
        format!("amqp://weft:{secret}@rabbitmq:notaport/%2f"),
        format!("amqps://weft:{secret}@rabbitmq:5671/%2f?auth_mechanism=magic"),
    ] {
        assert_refused("WEFT_AMQP_URL", &url, &secret);
    }
}
