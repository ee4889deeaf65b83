//! The `rill` command. All logic lives in the library ([`rill::cli`]) so that applications
//! with their own operators can link `rill` and call the same entry point.

fn main() {
    std::process::exit(rill::cli::main(std::env::args_os()));
}
