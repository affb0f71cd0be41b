//! `Options::from_config`: the flags as `run` receives them.

use clap::Parser;

use super::*;

fn config(args: &[&str]) -> Config {
    Config::try_parse_from(std::iter::once("keyward").chain(args.iter().copied()))
        .expect("flags parse")
}

/// `--stale-mode` reaches a PostgreSQL node and a follower as
/// `serve_stale`; the default is to fail closed.
#[test]
fn stale_mode_reaches_both_modes() {
    let pg = |args: &[&str]| {
        let mut all = vec!["--store", "postgres://u:p@127.0.0.1:5432/db"];
        all.extend_from_slice(args);
        Options::from_config(&config(&all))
            .expect("options")
            .postgres
            .expect("postgres mode")
    };
    assert!(!pg(&[]).serve_stale);
    assert!(pg(&["--stale-mode", "serve"]).serve_stale);
    assert!(!pg(&["--stale-mode", "closed"]).serve_stale);

    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret");
    let secret = "s".repeat(40);
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
    let file = secret_file.to_str().expect("utf-8 path");
    let opts = Options::from_config(&config(&[
        "--follow",
        "127.0.0.1:50051",
        "--replication-secret-file",
        file,
        "--stale-mode",
        "serve",
    ]))
    .expect("options");
    let follow = opts.follow.expect("follower mode");
    assert!(follow.serve_stale);
    assert_eq!(&*follow.secret, secret);
    assert_eq!(opts.replication_secret.as_deref(), Some(&*secret));
    assert!(opts.postgres.is_none());
}

/// A secret file that will not do is refused with the flag's message (the
/// binary exits 64 with it).
#[test]
fn a_short_secret_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "short\n").expect("write secret");
    let file = secret_file.to_str().expect("utf-8 path");
    let Err(msg) = Options::from_config(&config(&["--replication-secret-file", file])) else {
        panic!("a short secret was accepted");
    };
    assert!(msg.starts_with("--replication-secret-file"), "{msg}");
}

/// `--stale-mode` takes `closed` and `serve` only.
#[test]
fn stale_mode_takes_two_values() {
    let err = Config::try_parse_from(["keyward", "--stale-mode", "maybe"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
}
