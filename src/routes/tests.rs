//! Unit tests of the routes file: parsing and its errors, matching, and
//! the strict path rules.

use super::*;

const FILE: &str = r#"
unmatched = "deny"

[[routes]]
methods = ["GET"]
path = "/api/accounts/{account_id}/projects/{project_id}/**"
resource = "project"
id = "project_id"
account = "account_id"

[[routes]]
path = "/api/send/{domain}"
resource = "domain"
id = "domain"
scope = "email"
level = "admin"

[[routes]]
path = "/api/accounts/{account_id}"
resource = "account"
id = "account_id"
"#;

#[test]
fn first_matching_route_decides() {
    let r = parse("routes.toml", FILE).expect("valid");
    assert_eq!(r.len(), 3);
    let Match::Route(n) = r.find("GET", "/api/accounts/1/projects/p1/messages/9?x=1") else {
        panic!("no match")
    };
    assert_eq!(
        (n.kind, &*n.id, n.level, n.account.as_deref()),
        (Kind::Project, "p1", Level::Viewer, Some("1"))
    );
    // ** matches an empty rest too.
    assert!(matches!(
        r.find("GET", "/api/accounts/1/projects/p1"),
        Match::Route(_)
    ));
    // Method filter: POST falls through to no route.
    assert_eq!(
        r.find("POST", "/api/accounts/1/projects/p1"),
        Match::Unmatched
    );
    let Match::Route(n) = r.find("POST", "/api/send/example.com") else {
        panic!()
    };
    assert_eq!(
        (n.kind, &*n.id, n.level, n.scope),
        (Kind::Domain, "example.com", Level::Admin, "email")
    );
    // Level by method when the route does not fix it.
    let Match::Route(n) = r.find("DELETE", "/api/accounts/7") else {
        panic!()
    };
    assert_eq!(n.level, Level::Admin);
    let Match::Route(n) = r.find("HEAD", "/api/accounts/7") else {
        panic!()
    };
    assert_eq!(n.level, Level::Viewer);
    assert_eq!(r.find("GET", "/api/accounts/7/other"), Match::Unmatched);
    assert_eq!(r.find("GET", "/"), Match::Unmatched);
}

#[test]
fn unsafe_paths_are_never_matched() {
    let r = parse("routes.toml", FILE).expect("valid");
    for (p, why) in [
        ("/api/accounts/1/projects/p1/../p2", Unsafe::DotSegment),
        ("/api/accounts/1/projects/./p1", Unsafe::DotSegment),
        ("/api/send/..", Unsafe::DotSegment),
        ("/api/send/./", Unsafe::DotSegment),
        ("/api/send//example.com", Unsafe::EmptySegment),
        ("//api/send/example.com", Unsafe::EmptySegment),
        ("/api/send/example.com//", Unsafe::EmptySegment),
        ("/api/send/example.com%2F..", Unsafe::Encoding),
        ("/api/send/%2e%2e", Unsafe::DotSegment),
        ("/api/send/.%2E", Unsafe::DotSegment),
        ("/api/send/%2e/x", Unsafe::DotSegment),
        ("/api/send/%252e%252e", Unsafe::Encoding),
        ("/api/send/a%5Cb", Unsafe::Encoding),
        ("/api/send/a%3Bb", Unsafe::Encoding),
        ("/api/send/a%00", Unsafe::Encoding),
        ("/api/send/a%20b", Unsafe::Encoding),
        ("/api/send/%C3%A9", Unsafe::Encoding),
        ("/api/send/a%", Unsafe::Encoding),
        ("/api/send/a%4", Unsafe::Encoding),
        ("/api/send/a%zz", Unsafe::Encoding),
        ("/api/send/a%+1", Unsafe::Encoding),
        ("/api/send/a\\b", Unsafe::Backslash),
        ("/api/send/example.com;x", Unsafe::Semicolon),
        (
            "/api/accounts/1/projects/p1/..;/..;/users",
            Unsafe::Semicolon,
        ),
        ("/api/send/example.com#x", Unsafe::Fragment),
        ("/api/send/example.com?q=1#x", Unsafe::Fragment),
        ("api/send/x", Unsafe::NotAbsolute),
        ("", Unsafe::NotAbsolute),
    ] {
        assert_eq!(r.find("POST", p), Match::Unsafe(why), "{p}");
    }
    let long = format!("/api/send/{}", "a".repeat(PATH_MAX));
    assert_eq!(r.find("POST", &long), Match::Unsafe(Unsafe::TooLong));
    // A parameter longer than any resource id matches nothing.
    let long_id = format!("/api/send/{}", "a".repeat(101));
    assert_eq!(r.find("POST", &long_id), Match::Unmatched);
    // The query string is not judged.
    assert!(matches!(
        r.find("POST", "/api/send/example.com?a=..;%25\\//"),
        Match::Route(_)
    ));
}

#[test]
fn methods_are_upper_case_tokens() {
    let r = parse("routes.toml", FILE).expect("valid");
    for m in [
        "post", "Post", "", "PO ST", "POST ", "GET\n", "M-SEARCH", "GÉT",
    ] {
        assert_eq!(
            r.find(m, "/api/send/example.com"),
            Match::Unsafe(Unsafe::Method),
            "{m:?}"
        );
    }
    // An upper-case method no route names is unmatched, not unsafe.
    assert_eq!(r.find("PROPFIND", "/api/accounts/1/x"), Match::Unmatched);
    // Route methods are stored upper-case whatever the file says.
    let r = parse(
        "r.toml",
        "[[routes]]\nmethods = [\"post\"]\npath = \"/a/{x}\"\nresource = \"domain\"\nid = \"x\"\n",
    )
    .expect("valid");
    assert!(matches!(r.find("POST", "/a/b"), Match::Route(_)));
    assert_eq!(r.find("post", "/a/b"), Match::Unsafe(Unsafe::Method));
}

#[test]
fn a_trailing_slash_matches_as_without_it() {
    let r = parse("routes.toml", FILE).expect("valid");
    for p in [
        "/api/send/example.com",
        "/api/send/example.com/",
        "/api/send/example.com/?x=1",
    ] {
        let Match::Route(n) = r.find("POST", p) else {
            panic!("{p}: no match")
        };
        assert_eq!((n.kind, &*n.id), (Kind::Domain, "example.com"), "{p}");
    }
    let Match::Route(n) = r.find("GET", "/api/accounts/1/projects/p1/") else {
        panic!("no match")
    };
    assert_eq!(&*n.id, "p1");
    assert_eq!(r.find("GET", "/"), Match::Unmatched);
    assert_eq!(r.find("GET", "/?x"), Match::Unmatched);
}

#[test]
fn literals_match_any_case_and_ids_keep_theirs() {
    let r = parse("routes.toml", FILE).expect("valid");
    let Match::Route(n) = r.find("POST", "/API/Send/Example.COM") else {
        panic!("no match")
    };
    assert_eq!((n.kind, &*n.id), (Kind::Domain, "Example.COM"));
    let Match::Route(n) = r.find("GET", "/api/ACCOUNTS/1/projectS/P1/x") else {
        panic!("no match")
    };
    assert_eq!((&*n.id, n.account.as_deref()), ("P1", Some("1")));
}

#[test]
fn unreserved_percent_encoding_is_decoded_and_borrowed_otherwise() {
    let r = parse("routes.toml", FILE).expect("valid");
    let Match::Route(n) = r.find("POST", "/api/%73%65nd/ex%61mple%2Ecom") else {
        panic!("no match")
    };
    assert_eq!(&*n.id, "example.com");
    assert!(matches!(n.id, Cow::Owned(_)));
    let Match::Route(n) = r.find("GET", "/api/accounts/%31/projects/p%2D1%5F%7e/x") else {
        panic!("no match")
    };
    assert_eq!((&*n.id, n.account.as_deref()), ("p-1_~", Some("1")));
    // No `%`: the ids are slices of the request's path.
    let path = "/api/accounts/1/projects/p1/x";
    let Match::Route(n) = r.find("GET", path) else {
        panic!("no match")
    };
    assert!(matches!(n.id, Cow::Borrowed(_)));
    assert!(matches!(n.account, Some(Cow::Borrowed(_))));
    assert_eq!(normalise("/a/b/?q"), Ok(Cow::Borrowed("a/b")));
    assert_eq!(normalise("/a/%62c"), Ok(Cow::Owned("a/bc".into())));
    assert_eq!(normalise("/é/%41"), Ok(Cow::Owned("é/A".into())));
}

#[test]
fn errors_point_to_the_line() {
    let cases = [
        ("[[routes]]\npath = \"/a/{x}\"\nresource = \"planet\"\nid = \"x\"\n", 3, "resource must be"),
        ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"y\"\n", 4, "no parameter {y}"),
        ("[[routes]]\npath = \"a\"\nresource = \"project\"\nid = \"x\"\n", 2, "must start with /"),
        ("[[routes]]\npath = \"/a/**/b\"\nresource = \"project\"\nid = \"x\"\n", 2, "last segment"),
        ("[[routes]]\npath = \"/a%2Fb/{x}\"\nresource = \"project\"\nid = \"x\"\n", 2, "cannot hold"),
        ("[[routes]]\npath = \"/a;b/{x}\"\nresource = \"project\"\nid = \"x\"\n", 2, "cannot hold"),
        ("[[routes]]\npath = \"/a/{x}/{x}\"\nresource = \"project\"\nid = \"x\"\n", 2, "twice"),
        ("\n\n[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\nlevel = \"owner\"\n", 7, "level must be"),
        ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\nscope = \"fax\"\n", 5, "unknown scope"),
        ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\nmethods = [\"FETCH\"]\n", 5, "unknown HTTP method"),
        ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\ncolour = 1\n", 5, "unknown field"),
        ("unmatched = \"maybe\"\n", 1, "unmatched must be"),
        ("[[routes]]\npath = \"/a/{x}\"\n", 1, "missing field"),
        ("[[routes\n", 1, ""),
    ];
    for (text, line, want) in cases {
        let e = parse("r.toml", text).expect_err(text);
        assert_eq!(e.line, line, "{text}: {e}");
        assert!(e.to_string().contains(want), "{text}: {e}");
        assert!(e.to_string().starts_with(&format!("r.toml:{line}:")), "{e}");
    }
}

#[test]
fn an_empty_file_denies_everything() {
    let r = parse("r.toml", "").expect("valid");
    assert!(r.is_empty());
    assert_eq!(r.unmatched, Unmatched::Deny);
    assert!(r.strip_credential);
    assert!(r.dynamic_metadata);
    assert_eq!(r.find("GET", "/x"), Match::Unmatched);
    let r = parse("r.toml", "dynamic_metadata = false").expect("valid");
    assert!(!r.dynamic_metadata);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..Default::default() })]

    /// Any text: a routes file or an error that points inside it.
    #[test]
    fn parse_never_panics(text in r#"(\[\[routes\]\]\n|path = "[/a-z{}*]{0,12}"\n|resource = "[a-z]{0,8}"\n|id = "[a-z{}]{0,4}"\n|level = "[a-z]{0,6}"\n|methods = \["[A-Z]{0,6}"\]\n|unmatched = "[a-z]{0,5}"\n|\PC{0,8}\n){0,12}"#) {
        match parse("f.toml", &text) {
            Ok(r) => { let _ = r.find("GET", "/a/b"); }
            Err(e) => {
                proptest::prop_assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
                proptest::prop_assert!(e.column >= 1);
            }
        }
    }

    /// Any request: a route whose id is one of the path's segments, or
    /// no route, never a panic.
    #[test]
    fn find_never_panics(method in "[A-Z]{0,7}", path in r"(/[a-z0-9.%{}\\]{0,6}){0,8}(\?\PC{0,6})?") {
        let r = parse("routes.toml", FILE).expect("valid");
        if let Match::Route(n) = r.find(&method, &path) {
            let with_query = format!("{}?", n.id);
            let found = path.split('/').any(|s| s == n.id || s.starts_with(&with_query));
            proptest::prop_assert!(found || path.contains('%'), "id {} not in {}", n.id, path);
        }
    }
}
