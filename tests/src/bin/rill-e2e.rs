//! The `rill` command, built inside this package so that its end-to-end tests can spawn
//! it (`CARGO_BIN_EXE_rill-e2e`): the same entry point as the stock binary, the way an
//! application links `rill` and calls its CLI.

fn main() {
    std::process::exit(rill::cli::main(std::env::args_os()));
}
