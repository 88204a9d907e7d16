//! The `weft-scheduler` binary refuses a malformed secret setting in one line naming it,
//! without ever printing the secret.

use weft_testkit::startup::{SecretFile, marker, run};

const SCHEDULER: &str = env!("CARGO_BIN_EXE_weft-scheduler");

#[test]
fn a_malformed_database_url_is_refused_without_its_password() {
    let secret = marker();
    for url in [
        format!("postgres://weft:{secret}@postgres:notaport/weft"),
        format!("postgres://weft:{secret}@postgres:5432/weft?sslmode=sometimes"),
        format!("postgres://weft@postgres:5432/weft?password={secret}&bogus=1"),
        format!("host=postgres password={secret} port=notaport"),
        format!("host=postgres password {secret}"),
    ] {
        run(SCHEDULER, &[], &[("WEFT_DATABASE_URL", &url)])
            .assert_refused("WEFT_DATABASE_URL", &secret);
        let file = SecretFile::new(&format!("{url}\n"));
        run(SCHEDULER, &[], &[("WEFT_DATABASE_URL_FILE", file.path())])
            .assert_refused("WEFT_DATABASE_URL", &secret);
    }
}

#[test]
fn a_malformed_broker_url_is_refused_without_its_password() {
    let secret = marker();
    let url = format!("amqp://weft:{secret}@rabbitmq:notaport/%2f");
    run(SCHEDULER, &[], &[("WEFT_AMQP_URL", &url)]).assert_refused("WEFT_AMQP_URL", &secret);
    let file = SecretFile::new(&url);
    run(SCHEDULER, &[], &[("WEFT_AMQP_URL_FILE", file.path())])
        .assert_refused("WEFT_AMQP_URL", &secret);
}
