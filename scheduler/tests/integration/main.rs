//! The scheduler's integration tests, one binary: each module is one area of its work,
//! run against an in-process fleet (`weft_testkit::Fleet`) on the real PostgreSQL and
//! RabbitMQ. The fault-injection test is a binary of its own: it restarts the services it
//! runs against, so it runs alone, against private ones (`deploy/local/faults.sh`).

mod connectors;
mod engine;
mod items;
mod nul;
mod outputs;
mod polls;
mod run_cache;
mod runs;
mod schedules;
mod secrets;
mod startup;
