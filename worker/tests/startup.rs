//! The `weft-worker` binary refuses a malformed secret setting in one line naming it,
//! without ever printing the secret.

use weft_testkit::startup::{SecretFile, marker, run};

const WORKER: &str = env!("CARGO_BIN_EXE_weft-worker");
const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[test]
fn malformed_master_keys_are_refused_without_echoing_them() {
    let secret = marker();
    for keys in [
        format!("k1:{secret}"),
        secret.clone(),
        format!("{KEYS},k2:{secret}AAAA"),
    ] {
        run(WORKER, &[], &[("WEFT_MASTER_KEYS", &keys)])
            .assert_refused("WEFT_MASTER_KEYS", &secret);
        let file = SecretFile::new(&format!("{keys}\n"));
        run(WORKER, &[], &[("WEFT_MASTER_KEYS_FILE", file.path())])
            .assert_refused("WEFT_MASTER_KEYS", &secret);
    }
}

#[test]
fn a_malformed_broker_url_is_refused_without_its_password() {
    let secret = marker();
    for url in [
        format!("amqp://weft:{secret}@rabbitmq:notaport/%2f"),
        format!("http://weft:{secret}@rabbitmq:5672/%2f"),
        format!("amqp://weft:{secret}@rabbitmq:5672/%2f?heartbeat=often"),
        format!("weft:{secret}@rabbitmq:5672"),
    ] {
        run(
            WORKER,
            &[],
            &[("WEFT_MASTER_KEYS", KEYS), ("WEFT_AMQP_URL", &url)],
        )
        .assert_refused("WEFT_AMQP_URL", &secret);
        let file = SecretFile::new(&format!("{url}\n"));
        run(
            WORKER,
            &[],
            &[
                ("WEFT_MASTER_KEYS", KEYS),
                ("WEFT_AMQP_URL_FILE", file.path()),
            ],
        )
        .assert_refused("WEFT_AMQP_URL", &secret);
    }
}
