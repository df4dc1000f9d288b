//! Integration tests: the real daemon on an ephemeral port, real HTTP
//! requests, a real SQLite file. One binary for all of them (one link step).

mod support;

mod admin;
mod answers;
mod authoring;
mod backtest;
mod browser;
mod cluster;
mod delivery;
mod docs;
mod durability;
mod editor;
mod hardening;
mod layers;
mod operations;
mod readiness;
mod reload;
mod retention;
mod steps;
mod verification;
