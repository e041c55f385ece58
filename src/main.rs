//! The `pollhook` binary: parse the command line and hand over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // Before the runtime starts its threads.
    pollhook::memory::limit_arenas();
    let cli = pollhook::cli::Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(pollhook::cli::main(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
