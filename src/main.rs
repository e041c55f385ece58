//! The `pollhook` binary: parse the command line and hand over to the library.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pollhook::cli::main(pollhook::cli::Cli::parse()).await
}
