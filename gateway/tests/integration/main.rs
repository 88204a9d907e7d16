//! The gateway's integration tests, one binary: each module is one area of the API,
//! run against an in-process fleet (`weft_testkit::Fleet`) on the real PostgreSQL and
//! RabbitMQ. The tracing test is a binary of its own: it installs a process-wide tracer.

mod access;
mod api;
mod audit;
mod connections;
mod connectors;
mod http_layers;
mod limits;
mod metrics;
mod oauth;
mod people;
mod responses;
mod sso;
mod startup;
mod webhooks;
