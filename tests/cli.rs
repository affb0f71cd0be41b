//! The operator CLI over TLS, as a user runs it: a `keyward serve` with
//! TLS and client certificates required (certificates made here with
//! rcgen), and `keyward accounts ...` with `--server https://...`, `--ca`
//! and `--cert`/`--key`; refused without a client certificate, without the
//! CA, and in plaintext. The rest of the CLI runs against a release server
//! in tests/cli_walkthrough.sh.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA, and a leaf it signs (for 127.0.0.1 and localhost), as PEM files
/// `<name>.crt`, `<name>.key` in `dir`; the CA in `<ca>.crt`.
fn make_pki(dir: &Path, ca_name: &str, leaves: &[&str]) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join(format!("{ca_name}.crt")), issuer.pem()).expect("write CA");
    for name in leaves {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, *name);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write cert");
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `keyward serve` child, killed on drop.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keyward serve ARGS` and returns it with its root token (read
/// from its stdout: it is printed once the server is ready).
fn serve(dir: &Path, grpc: u16, args: &[&str]) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .args(["--data-dir", dir.join("data").to_str().expect("utf-8")])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keyward");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server { child };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read stdout");
    let Some(root) = line.strip_prefix("root token: ") else {
        panic!("no root token line: {line:?}");
    };
    let root = root.trim().to_string();
    (server, root)
}

/// Runs the CLI with `args`, the root token in KEYWARD_TOKEN (never on the
/// command line); (exit code, stdout, stderr).
fn cli(root: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("KEYWARD_TOKEN", root)
        .env_remove("KEYWARD_TOKEN_FILE")
        .env_remove("KEYWARD_SERVER")
        .env_remove("KEYWARD_TLS_CA")
        .env_remove("KEYWARD_TLS_CERT")
        .env_remove("KEYWARD_TLS_KEY")
        .output()
        .expect("run the CLI");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// With client certificates required, the CLI reaches the server with
/// `--ca` and `--cert`/`--key`; without the client certificate, without
/// the CA (system roots) or in plaintext it fails with exit 8 (the server
/// cannot be reached), saying so on stderr, never printing the token.
#[test]
fn the_cli_speaks_tls_and_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_pki(d, "server-ca", &["server"]);
    make_pki(d, "client-ca", &["client"]);
    let p = |name: &str| d.join(name).to_str().expect("utf-8").to_string();
    let grpc = free_port();
    let (_server, root) = serve(
        d,
        grpc,
        &[
            "--tls-cert",
            &p("server.crt"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("client-ca.crt"),
        ],
    );
    let url = format!("https://127.0.0.1:{grpc}");

    let (code, out, err) = cli(
        &root,
        &[
            "accounts",
            "create",
            "acme",
            "--json",
            "--server",
            &url,
            "--ca",
            &p("server-ca.crt"),
            "--cert",
            &p("client.crt"),
            "--key",
            &p("client.key"),
        ],
    );
    assert_eq!(code, 0, "stderr: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["account"]["name"], "acme");
    assert!(doc["admin_token"]["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("kw_")));

    let refusals: [(&str, Vec<String>); 4] = [
        (
            "no client certificate",
            vec![
                "--server".into(),
                url.clone(),
                "--ca".into(),
                p("server-ca.crt"),
            ],
        ),
        (
            "the system roots do not know the server's CA",
            vec![
                "--server".into(),
                url.clone(),
                "--cert".into(),
                p("client.crt"),
                "--key".into(),
                p("client.key"),
            ],
        ),
        (
            "a client certificate the server's client CA did not sign",
            vec![
                "--server".into(),
                url.clone(),
                "--ca".into(),
                p("server-ca.crt"),
                "--cert".into(),
                p("server.crt"),
                "--key".into(),
                p("server.key"),
            ],
        ),
        (
            "plaintext",
            vec!["--server".into(), format!("http://127.0.0.1:{grpc}")],
        ),
    ];
    for (what, extra) in refusals {
        let mut args = vec!["accounts", "list"];
        args.extend(extra.iter().map(String::as_str));
        let (code, out, err) = cli(&root, &args);
        assert_eq!(
            code, 8,
            "{what}: exit {code}, stdout {out:?}, stderr {err:?}"
        );
        assert!(
            err.starts_with("keyward: cannot reach the server: "),
            "{what}: {err}"
        );
        eprintln!("{what}: {}", err.trim_end());
        assert!(
            !err.contains(&root) && !out.contains(&root),
            "{what}: the token printed"
        );
    }

    // --ca on a plaintext server URL, and --cert without --key: usage (2).
    let (code, _, err) = cli(&root, &["accounts", "list", "--ca", &p("server-ca.crt")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--ca, --cert and --key are for an https:// --server"),
        "{err}"
    );
    let (code, _, err) = cli(
        &root,
        &[
            "accounts",
            "list",
            "--server",
            &url,
            "--cert",
            &p("client.crt"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cert and --key go together"), "{err}");
}
