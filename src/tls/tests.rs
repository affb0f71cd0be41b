//! Loading TLS files: what is refused, and that errors name the file
//! without quoting it.

use super::*;

/// A self-signed certificate for localhost and its key, as PEM.
fn cert_and_key() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (cert.pem(), key.serialize_pem())
}

/// Writes the pair into a new directory under `dir`.
fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    let dir = tempfile::tempdir_in(dir).expect("tempdir").keep();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).expect("write");
    std::fs::write(&k, key).expect("write");
    TlsFiles {
        cert: c,
        key: k,
        client_ca: None,
    }
}

#[test]
fn a_matching_pair_loads_with_each_ports_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cert_and_key();
    let configs = load(&files(dir.path(), &cert, &key)).expect("loads");
    assert_eq!(configs.grpc.alpn_protocols, vec![b"h2".to_vec()]);
    assert_eq!(configs.http.alpn_protocols, vec![b"http/1.1".to_vec()]);
}

#[test]
fn bad_files_are_refused_naming_the_flag_and_file_never_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cert_and_key();
    let (_, other_key) = cert_and_key();
    let key_body: String = key.lines().nth(1).expect("a base64 line").into();
    let broken_key = key.replace("-----END PRIVATE KEY-----", "");
    let cases: Vec<(TlsFiles, &str, &str)> = vec![
        (
            files(dir.path(), &cert, &other_key),
            "--tls-key",
            "does not match the certificate",
        ),
        (
            files(dir.path(), &key, &key),
            "--tls-cert",
            "no PEM CERTIFICATE",
        ),
        (
            files(dir.path(), &cert, &cert),
            "--tls-key",
            "no PEM PRIVATE KEY",
        ),
        (
            files(dir.path(), &cert, &broken_key),
            "--tls-key",
            "no END line",
        ),
        (
            TlsFiles {
                cert: dir.path().join("missing.pem"),
                ..files(dir.path(), &cert, &key)
            },
            "--tls-cert",
            "missing.pem",
        ),
        (
            {
                let f = files(dir.path(), &cert, &key);
                TlsFiles {
                    client_ca: Some(f.key.clone()),
                    ..f
                }
            },
            "--tls-client-ca",
            "no PEM CERTIFICATE",
        ),
    ];
    for (files, flag, want) in cases {
        let Err(e) = load(&files) else {
            panic!("{files:?} loaded")
        };
        let msg = e.to_string();
        assert_eq!(e.flag, flag, "{msg}");
        assert!(msg.starts_with(flag) && msg.contains(want), "{msg}");
        assert!(!msg.contains(&key_body[..20]), "{msg}");
    }
}

#[test]
fn a_refused_reload_keeps_the_config_in_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cert_and_key();
    let tls = Tls::start(files(dir.path(), &cert, &key)).expect("starts");
    let before = tls.grpc_config();
    assert!(tls.reload_if_changed().is_none(), "nothing changed");
    let (_, other_key) = cert_and_key();
    std::fs::write(&tls.files().key, other_key).expect("write");
    // Just written: perhaps half a rotation (the certificate comes next),
    // so not refused yet; once it has settled, it is.
    assert!(tls.reload_if_changed().is_none(), "settling");
    let settled = std::time::SystemTime::now() - 2 * SETTLE;
    for (_, path) in tls.files().each() {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(settled))
            .expect("set mtime");
    }
    assert!(matches!(tls.reload_if_changed(), Some(Err(_))));
    assert!(
        Arc::ptr_eq(&before, &tls.grpc_config()),
        "the old config stays"
    );
    assert!(tls.reload_if_changed().is_none(), "warned once per change");
    std::fs::write(&tls.files().key, key).expect("write");
    assert!(matches!(tls.reload_if_changed(), Some(Ok(()))));
    assert!(!Arc::ptr_eq(&before, &tls.grpc_config()), "a new config");
}
