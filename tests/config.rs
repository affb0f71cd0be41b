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
