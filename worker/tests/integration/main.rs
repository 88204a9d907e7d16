//! The worker's integration tests, one binary: each module is one area of its work,
//! run against an in-process fleet (`weft_testkit::Fleet`) on the real PostgreSQL and
//! RabbitMQ, with third-party APIs stood in for by local servers.

mod builtin_manifests;
mod connectors;
mod redelivery;
mod replies;
mod startup;
