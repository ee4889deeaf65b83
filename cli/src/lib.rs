//! rill: command-line entry point and admin library.
