//! The `weft-worker` binary refuses a malformed secret setting in one line naming it,
//! without ever printing the secret.

use weft_testkit::startup::{SecretFile, first_log_line, marker, run};

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

#[test]
fn an_otlp_protocol_other_than_http_protobuf_is_refused_naming_the_supported_one() {
    let exited = run(
        WORKER,
        &[],
        &[
            ("WEFT_MASTER_KEYS", KEYS),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    exited.assert_refused("OTEL_EXPORTER_OTLP_PROTOCOL", KEYS);
    assert!(exited.stderr.contains("`http/protobuf`"), "{exited:#?}");
}

#[test]
fn an_otlp_endpoint_on_the_grpc_port_is_warned_about_in_one_log_line() {
    let warning = first_log_line(
        WORKER,
        &[
            // The broker is out of reach: the worker keeps trying while the test reads its logs.
            ("WEFT_MASTER_KEYS", KEYS),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        ],
        |line| line.contains("4317"),
    )
    .expect("a log line about port 4317");
    let line: serde_json::Value = serde_json::from_str(&warning).expect("a JSON log line");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["variable"], "OTEL_EXPORTER_OTLP_ENDPOINT", "{line}");
    let message = line["message"].as_str().expect("a message");
    assert!(
        message.contains("only OTLP over HTTP/protobuf is supported, on port 4318"),
        "{message}"
    );
}

#[test]
fn a_malformed_otlp_endpoint_is_refused_without_its_password() {
    let secret = marker();
    for variable in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        let endpoint = format!("http://weft:{secret}@collector:4318/a path");
        run(
            WORKER,
            &[],
            &[("WEFT_MASTER_KEYS", KEYS), (variable, &endpoint)],
        )
        .assert_refused("OTEL_EXPORTER_OTLP_", &secret);
    }
}
