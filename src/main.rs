//! The `layerfs` executable: the mount-helper calling convention, logging,
//! then [`layerfs::cli`].

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use layerfs::cli::Cli;

fn main() -> ExitCode {
    // As a mount helper (`mount -t fuse.layerfs none MNT -o br=...` runs
    // `layerfs none MNT -o br=...` through fuse3's mount.fuse3), or as
    // containers-storage's mount program (`layerfs -o lowerdir=...,upperdir=...
    // MNT`). Only when the first argument is no subcommand or flag of ours
    // (`-o` is none).
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.into_string().unwrap_or_default())
        .collect();
    let helper = argv.get(1).is_some_and(|a| {
        a == "-o" || (!a.starts_with('-') && Cli::command().find_subcommand(a).is_none())
    });
    let root = layerfs::sys::euid() == 0;
    let cli = match argv
        .get(1..)
        .filter(|_| helper)
        .and_then(|a| layerfs::mount::options::helper_args(a, root))
    {
        Some(args) => Cli::parse_from(std::iter::once(argv[0].clone()).chain(args)),
        None => Cli::parse(),
    };
    init_tracing(cli.verbose);
    layerfs::cli::run(cli)
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // rustls-platform-verifier logs every refused certificate as an
    // error; the refusal is reported once, as the command's error.
    let default = if verbose < 2 {
        format!("{default},rustls_platform_verifier=off")
    } else {
        default.to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colors only on a terminal: a mount daemon's log is a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
