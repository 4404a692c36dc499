//! imgpack: builds OCI images from static binaries with no daemon.
//!
//! This binary only parses flags and wires the crates together:
//! binaries are checked (imgpack-platform), packed into layers
//! (imgpack-layer), described by configs and manifests (imgpack-image) and
//! written by each requested sink (imgpack-layout, imgpack-docker-archive,
//! imgpack-registry).

mod build;
mod cache;
mod cli;
mod config;
mod confine;
mod git;
mod git_source;
mod outputs;
mod registry;
mod resolve;
mod secrets;
mod ship;
mod sign;
mod staging;
mod values;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // First, while this is the only thread: nothing started later inherits a secret.
    secrets::take_from_environment();
    staging::clean_up_on_signals();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Build(args) => build::run(*args),
        cli::Command::Push(args) => registry::run_push(args),
        cli::Command::Login(args) => registry::run_login(args),
        cli::Command::Resolve(args) => resolve::run(args),
        cli::Command::Keygen(args) => sign::run_keygen(args),
        cli::Command::Verify(args) => sign::run_verify(args),
        cli::Command::Completion(args) => ship::run_completion(args),
        cli::Command::Man(args) => ship::run_man(args),
        cli::Command::Cache(args) => cache::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first; no URL
            // keeps its credentials, whichever layer wrote it.
            let message = format!("{err:#}");
            eprintln!("error: {}", imgpack_redact::redact_urls(&message));
            ExitCode::FAILURE
        }
    }
}
