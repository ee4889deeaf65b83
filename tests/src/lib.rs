//! rill end-to-end tests: `tests/` starts real `rill` processes (the `rill-e2e` binary
//! of this package, which is the `rill` CLI entry point) on 127.0.0.1 and drives them
//! through the CLI and the `rill::admin` library. Shared helpers live in
//! `tests/support/mod.rs`.
