//! The `weft-gateway` binary refuses a malformed secret setting in one line naming it,
//! without ever printing the secret.

use weft_testkit::startup::{SecretFile, marker, run};

const GATEWAY: &str = env!("CARGO_BIN_EXE_weft-gateway");
const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// Starts the gateway with valid master keys and `setting` set to `value`, then with
/// `setting`_FILE naming a file that holds it, and checks both are refused.
fn assert_refused_both_ways(setting: &str, value: &str, secret: &str) {
    run(
        GATEWAY,
        &[],
        &[("WEFT_MASTER_KEYS", KEYS), (setting, value)],
    )
    .assert_refused(setting, secret);
    let file = SecretFile::new(&format!("{value}\n"));
    let file_setting = format!("{setting}_FILE");
    run(
        GATEWAY,
        &[],
        &[("WEFT_MASTER_KEYS", KEYS), (&file_setting, file.path())],
    )
    .assert_refused(setting, secret);
}

#[test]
fn malformed_master_keys_are_refused_without_echoing_them() {
    let secret = marker();
    for keys in [format!("k1:{secret}"), secret.clone()] {
        run(GATEWAY, &[], &[("WEFT_MASTER_KEYS", &keys)])
            .assert_refused("WEFT_MASTER_KEYS", &secret);
        let file = SecretFile::new(&keys);
        run(GATEWAY, &[], &[("WEFT_MASTER_KEYS_FILE", file.path())])
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
        assert_refused_both_ways("WEFT_ADMIN_TOKEN", &token, shown);
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
        assert_refused_both_ways("WEFT_DATABASE_URL", &url, &secret);
    }
}

#[test]
fn a_malformed_broker_url_is_refused_without_its_password() {
    let secret = marker();
    for url in [
        format!("amqp://weft:{secret}@rabbitmq:notaport/%2f"),
        format!("amqps://weft:{secret}@rabbitmq:5671/%2f?auth_mechanism=magic"),
    ] {
        assert_refused_both_ways("WEFT_AMQP_URL", &url, &secret);
    }
}

#[test]
fn an_otlp_protocol_other_than_http_protobuf_is_refused_in_one_line() {
    let exited = run(
        GATEWAY,
        &[],
        &[
            ("WEFT_MASTER_KEYS", KEYS),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ],
    );
    exited.assert_refused("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", KEYS);
    assert!(exited.stderr.contains("`http/protobuf`"), "{exited:#?}");
}

/// Where the tests' PostgreSQL listens.
fn database_address() -> (String, u16) {
    let url = std::env::var("WEFT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let config: tokio_postgres::Config = url.parse().expect("WEFT_TEST_DATABASE_URL parses");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

#[test]
fn every_secret_can_come_from_a_file() {
    let secret = marker();
    // A role that does not exist: the server's refusal naming it shows the URL was read
    // from the file, parsed, and used, and no migration runs.
    let role = format!("weft_file_probe_{}", &secret[6..14]);
    let (host, port) = database_address();
    let database = SecretFile::new(&format!(
        "postgres://{role}:{secret}@{host}:{port}/postgres\n"
    ));
    let broker = SecretFile::new(&format!("amqp://weft:{secret}@127.0.0.1:1/%2f\n"));
    let keys = SecretFile::new(&format!("{KEYS}\n"));
    let token = SecretFile::new(&format!("{secret}\n"));
    let exited = run(
        GATEWAY,
        &["migrate"],
        &[
            ("WEFT_DATABASE_URL_FILE", database.path()),
            ("WEFT_AMQP_URL_FILE", broker.path()),
            ("WEFT_MASTER_KEYS_FILE", keys.path()),
            ("WEFT_ADMIN_TOKEN_FILE", token.path()),
        ],
    );
    assert_eq!(exited.code, Some(1), "past the configuration: {exited:#?}");
    assert!(
        exited
            .stderr
            .contains(&format!("role \"{role}\" does not exist")),
        "{exited:#?}"
    );
    assert!(!exited.stderr.contains(&secret), "{exited:#?}");
}

#[test]
fn a_malformed_smtp_url_or_oidc_secret_is_refused_without_echoing_it() {
    let secret = marker();
    assert_refused_both_ways(
        "WEFT_SMTP_URL",
        &format!("mailto://weft:{secret}@mail.example.com"),
        &secret,
    );
    assert_refused_both_ways(
        "WEFT_OIDC_CLIENT_SECRET",
        &format!("{secret}\u{7}"),
        &secret,
    );
}
