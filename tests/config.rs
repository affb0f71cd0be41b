//! Bad configuration: the binary exits 64 with a message naming the flag
//! (and, for a routes file, the place), before serving anything.

use std::process::Command;

fn keyward(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run keyward");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_flags_exit_64_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too short\n").unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        "[[routes]]\npath = \"/a/{x}\"\nresource = \"planet\"\nid = \"x\"\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.secret");
    let long_name = "n".repeat(65);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--follow", "127.0.0.1:1"],
            "--follow needs --replication-secret-file",
        ),
        (
            vec!["--replication-secret-file", short.to_str().unwrap()],
            "at least 32 visible ASCII characters",
        ),
        (
            vec!["--replication-secret-file", missing.to_str().unwrap()],
            "--replication-secret-file",
        ),
        (
            vec!["--stale-after", "0s"],
            "--stale-after must be positive",
        ),
        (vec!["--routes", routes.to_str().unwrap()], "routes.toml:3:"),
        (
            vec!["--use-report-interval", "0s"],
            "--use-report-interval must be positive",
        ),
        (vec!["--node-name", "a b"], "--node-name `a b` will not do"),
        (vec!["--node-name", ""], "--node-name `` will not do"),
        (
            vec!["--node-name", &long_name],
            "1 to 64 of A-Z a-z 0-9 . _ -",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = keyward(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // --stale-mode takes only its two values (clap's own usage error).
    let (code, stderr) = keyward(&["--stale-mode", "maybe"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--stale-mode"), "{stderr}");
}

/// `--store`: only PostgreSQL URLs, not with `--follow`, sane pool sizes; a
/// database that cannot be reached refuses the start (exit 1) without
/// repeating the connection string, whose password must never be printed.
#[test]
fn store_flags_are_checked_and_the_password_never_printed() {
    let url = "postgres://keyward:s3cr3t-pw@127.0.0.1:1/keyward";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--store", "mysql://u:s3cr3t-pw@h/db"],
            "only postgres://",
        ),
        (
            vec!["--store", url, "--follow", "127.0.0.1:1"],
            "exclude each other",
        ),
        (
            vec!["--store", url, "--pg-pool-size", "1"],
            "--pg-pool-size",
        ),
        (
            vec!["--store", url, "--pg-retain-changes", "0"],
            "--pg-retain-changes",
        ),
        (
            vec!["--store", "postgres://u:s3cr3t-pw@h:notaport/db"],
            "not a valid postgres:// URL",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = keyward(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("s3cr3t-pw"), "{args:?}: {stderr}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-ca.pem");
    let (code, stderr) = keyward(&["--store", url, "--pg-ca-file", missing.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--pg-ca-file"), "{stderr}");
    // A CA file with no certificate in it is refused before connecting.
    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let tls_url = format!("{url}?sslmode=require");
    let (code, stderr) = keyward(&["--store", &tls_url, "--pg-ca-file", empty.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-pw"), "{stderr}");
    // Nothing listens on port 1: a clear refusal, exit 1, no password.
    let (code, stderr) = keyward(&["--store", url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-pw"), "{stderr}");
}

/// The TLS flags come in pairs: a certificate without its key (or the
/// reverse), or client CAs without a certificate to serve, exit 64 naming
/// the flag, before any file is read.
#[test]
fn tls_flags_come_in_pairs() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", "/nonexistent/cert.pem"],
            "--tls-cert needs --tls-key",
        ),
        (
            vec!["--tls-key", "/nonexistent/key.pem"],
            "--tls-key needs --tls-cert",
        ),
        (
            vec!["--tls-client-ca", "/nonexistent/ca.pem"],
            "--tls-client-ca needs --tls-cert",
        ),
        // The CA a follower verifies its primary with means nothing (and a
        // plaintext --follow would send the secret in clear) without https.
        (
            vec!["--tls-ca", "/nonexistent/ca.pem"],
            "--tls-ca is the CA a follower verifies its primary with",
        ),
        (
            vec![
                "--tls-ca",
                "/nonexistent/ca.pem",
                "--follow",
                "primary:50051",
                "--replication-secret-file",
                "/nonexistent/secret",
            ],
            "it needs --follow https://host:port",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = keyward(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// Bad TLS files refuse the start with exit 64 and a message naming the
/// flag and the file: a missing certificate, a key that is not the
/// certificate's, a certificate file with no certificate in it. A key file
/// readable by others is warned about, naming it (that start then fails on
/// a digest key file that is a directory, exit 1, after the TLS files were
/// loaded).
#[test]
fn tls_files_are_checked_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_file = write("server.crt", &cert.pem());
    let key_file = write("server.key", &key.serialize_pem());
    let other_key = write(
        "other.key",
        &rcgen::KeyPair::generate().unwrap().serialize_pem(),
    );
    let missing = dir.path().join("missing.crt");
    let missing = missing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", missing, "--tls-key", &key_file],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", &cert_file, "--tls-key", &other_key],
            "does not match the certificate",
        ),
        (
            vec!["--tls-cert", &key_file, "--tls-key", &key_file],
            "no PEM CERTIFICATE",
        ),
        (
            vec![
                "--tls-cert",
                &cert_file,
                "--tls-key",
                &key_file,
                "--tls-client-ca",
                &key_file,
            ],
            "--tls-client-ca",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = keyward(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        // The file named is one of the arguments.
        assert!(
            args.iter().any(|a| a.contains('/') && stderr.contains(a)),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("PRIVATE KEY-----"), "{stderr}");
    }

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key_dir = dir.path().to_str().unwrap();
    let (code, stderr) = keyward(&[
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
        "--digest-key-file",
        key_dir,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("readable by others") && stderr.contains(&key_file),
        "{stderr}"
    );
    // Group read is how a non-root keyward reads a Kubernetes Secret
    // (0440 with the pod's fsGroup): no warning.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o440)).unwrap();
    let (code, stderr) = keyward(&[
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
        "--digest-key-file",
        key_dir,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("readable by"), "{stderr}");
}

/// The node name and the report interval are in --help with their
/// environment variables and defaults.
#[test]
fn help_shows_the_node_name_and_the_report_interval() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--help")
        .output()
        .expect("run keyward");
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--node-name",
        "KEYWARD_NODE_NAME",
        "default: the host name",
        "--use-report-interval",
        "KEYWARD_USE_REPORT_INTERVAL",
        "[default: 15s]",
    ] {
        assert!(help.contains(want), "{want} missing from --help:\n{help}");
    }
}
