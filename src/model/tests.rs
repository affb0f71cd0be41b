//! Unit tests of the model: names, ids, DOMAIN canonicalisation, wire
//! decoding.

use std::borrow::Cow;

use super::domain::has_canonical_shape;
use super::*;

#[test]
fn names_are_bounded_and_printable() {
    assert!(validate_name("name", "ok name").is_ok());
    assert!(validate_name("name", "").is_err());
    assert!(validate_name("name", "   ").is_err());
    assert!(validate_name("name", &"é".repeat(100)).is_ok());
    assert!(validate_name("name", &"a".repeat(101)).is_err());
    assert!(validate_name("name", "a\nb").is_err());
}

#[test]
fn resource_ids_use_a_safe_alphabet() {
    assert!(validate_resource_id("id", "example.com").is_ok());
    assert!(validate_resource_id("id", "12345").is_ok());
    assert!(validate_resource_id("id", "a b").is_err());
    assert!(validate_resource_id("id", "").is_err());
    assert!(validate_resource_id("id", &"a".repeat(101)).is_err());
}

#[test]
fn resource_ids_compare_the_same_inline_or_not() {
    for s in [
        "",
        "p",
        "example.com",
        &"x".repeat(22),
        &"y".repeat(23),
        &"z".repeat(100),
    ] {
        let id = ResourceId::from(s);
        assert_eq!(id.as_str(), s);
        assert_eq!(id, ResourceId::from(s.to_string()));
        assert_eq!(format!("{id}"), s);
    }
    assert_ne!(ResourceId::from("a"), ResourceId::from("ab"));
    assert!(ResourceId::from("a") < ResourceId::from("b"));
}

/// The canonical spelling, or the error.
fn canon(id: &str) -> std::result::Result<String, NotHostName> {
    canonical_host(id).map(Cow::into_owned)
}

#[test]
fn domains_have_one_canonical_spelling() {
    for (id, want) in [
        ("example.com", "example.com"),
        ("EXAMPLE.com", "example.com"),
        ("Example.Com", "example.com"),
        ("example.com.", "example.com"),
        ("EXAMPLE.COM.", "example.com"),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"),
        ("example。com", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"), // non-transitional: ß stays ß
        ("é.com", "xn--9ca.com"),
        ("e\u{301}.com", "xn--9ca.com"), // NFC: é in two code points
        ("💩.la", "xn--ls8h.la"),
        ("localhost", "localhost"),
        ("r3---sn-abc.example", "r3---sn-abc.example"),
        ("1.2.3.4.example", "1.2.3.4.example"),
        ("a-b.c0", "a-b.c0"),
        (
            &format!("{}.com", "a".repeat(63)),
            &format!("{}.com", "a".repeat(63)),
        ),
    ] {
        assert_eq!(canon(id).as_deref(), Ok(want), "{id:?}");
    }
    for (id, why) in [
        ("", NotHostName::Empty),
        (".", NotHostName::Syntax),
        ("example.com:25", NotHostName::Port),
        ("[::1]", NotHostName::IpAddress),
        ("::1", NotHostName::IpAddress),
        ("127.0.0.1", NotHostName::IpAddress),
        ("127.0.0.1.", NotHostName::IpAddress),
        ("0x7f.0x1", NotHostName::IpAddress),
        ("example.123", NotHostName::IpAddress),
        ("example.com..", NotHostName::Syntax),
        (".example.com", NotHostName::Syntax),
        ("a..b", NotHostName::Syntax),
        ("exa mple.com", NotHostName::Syntax),
        ("exa_mple.com", NotHostName::Syntax),
        ("user@example.com", NotHostName::Syntax),
        ("-example.com", NotHostName::Syntax),
        ("example-.com", NotHostName::Syntax),
        ("xn--zz.example", NotHostName::Syntax),
        ("xn--.example", NotHostName::Syntax),
        ("xn--abc-.example", NotHostName::Syntax), // an A-label of only ASCII
        ("a\u{200d}b.com", NotHostName::Syntax),   // a joiner out of context
        ("exa\u{0}mple.com", NotHostName::Syntax),
        (&format!("{}.com", "a".repeat(64)), NotHostName::Syntax),
        (&"a.".repeat(51), NotHostName::TooLong),
        (&"a".repeat(101), NotHostName::TooLong),
        // 95 bytes of Unicode in, 118 bytes of A-labels out.
        (
            "漢字仮名交.中文域名測.日本語文字.한국어도메.漢字仮名交.中文域名測",
            NotHostName::TooLong,
        ),
    ] {
        assert_eq!(canon(id), Err(why), "{id:?}");
    }
}

#[test]
fn canonical_domains_are_borrowed_back() {
    for id in ["example.com", "xn--bcher-kva.example", "localhost"] {
        assert!(matches!(canonical_host(id), Ok(Cow::Borrowed(s)) if s == id));
    }
    assert!(matches!(canonical_host("EXAMPLE.com"), Ok(Cow::Owned(_))));
    // Authorize's key: canonical input (A-labels too) borrowed as is;
    // an invalid A-label is not looked up as anything registrable.
    for id in ["example.com", "xn--bcher-kva.example", "xn--zz.example"] {
        assert!(matches!(domain_lookup_key(id), Cow::Borrowed(s) if s == id));
    }
    assert!(canonical_host("xn--zz.example").is_err());
    assert_eq!(
        domain_lookup_key("Bücher.EXAMPLE."),
        "xn--bcher-kva.example"
    );
    assert_eq!(domain_lookup_key("example.com:25"), "");
}

#[test]
fn domain_ids_are_canonical_and_field_errors_name_the_field() {
    let wire = |kind: pb::ResourceType, id: &str| pb::ResourceRef {
        r#type: kind as i32,
        id: id.into(),
    };
    let key = resource_from_wire("r", Some(&wire(pb::ResourceType::Domain, "Example.COM.")));
    assert_eq!(key.unwrap(), ResourceKey::new(Kind::Domain, "example.com"));
    match resource_from_wire("r", Some(&wire(pb::ResourceType::Domain, "example.com:25"))) {
        Err(Error::InvalidArgument(v)) => {
            assert_eq!(v[0].0, "r.id");
            assert!(v[0].1.contains("port"), "{v:?}");
        }
        other => panic!("{other:?}"),
    }
    // Project and sandbox ids stay opaque: case and `_` are kept.
    let key = resource_from_wire("r", Some(&wire(pb::ResourceType::Project, "My_Proj")));
    assert_eq!(key.unwrap(), ResourceKey::new(Kind::Project, "My_Proj"));
}

proptest::proptest! {
    /// Canonical is a fixed point, and every ASCII case variant (with
    /// or without one trailing dot) of a domain is the same domain.
    #[test]
    fn canonical_domains_are_idempotent_and_case_blind(
        id in "[a-zA-Z0-9.:_-]{0,40}|[a-zA-Z0-9üßÄéß.。-]{1,30}|(xn--)?[a-z0-9-]{1,20}(\\.[a-zA-Z]{1,10}){0,3}\\.?",
        flips in proptest::collection::vec(proptest::bool::ANY, 40),
    ) {
        // Authorize's lookup key is the canonical spelling, or an id
        // that no domain can be registered under.
        let key = domain_lookup_key(&id);
        match canonical_host(&id) {
            Ok(c) => proptest::prop_assert_eq!(&key, &c),
            Err(_) => proptest::prop_assert!(key.is_empty() || canonical_host(&key).is_err()),
        }
        if let Ok(c) = canonical_host(&id) {
            proptest::prop_assert!(matches!(canonical_host(&c), Ok(Cow::Borrowed(s)) if s == &*c));
            proptest::prop_assert!(has_canonical_shape(c.as_bytes(), true));
            let flipped: String = id
                .chars()
                .zip(flips.iter().cycle())
                .map(|(ch, &up)| if up { ch.to_ascii_uppercase() } else { ch.to_ascii_lowercase() })
                .collect();
            proptest::prop_assert_eq!(canonical_host(&flipped), Ok(c.clone()), "{}", flipped);
            if !id.ends_with('.') && !id.ends_with('。') {
                let dotted = format!("{id}.");
                proptest::prop_assert_eq!(canonical_host(&dotted).ok(), (dotted.len() <= limits::RESOURCE_ID_MAX).then_some(c));
            }
        } else {
            let upper = id.to_ascii_uppercase();
            proptest::prop_assert!(canonical_host(&upper).is_err(), "{} ok, {} not", upper, id);
        }
    }
}

#[test]
fn levels_are_ordered_and_only_10_or_100() {
    assert!(Level::Viewer < Level::Admin);
    assert_eq!(Level::from_wire(0), None);
    assert_eq!(Level::from_wire(50), None);
    assert_eq!(Level::from_wire(100), Some(Level::Admin));
}

#[test]
fn a_tokens_last_4_is_kept_in_place() {
    assert_eq!(std::mem::size_of::<Last4>(), 4);
    for s in ["", "a", "ab9Z", "Ab_-", "\u{4}\u{10}\0\0", "\0"] {
        assert_eq!(Last4::from(s).as_str(), s);
    }
    // Longer text (keyward never writes it) keeps its last 4 bytes that
    // start a character.
    assert_eq!(Last4::from("abcdef").as_str(), "cdef");
    assert_eq!(Last4::from("xxxé").as_str(), "xxé");
    assert_eq!(Last4::from("€€").as_str(), "€");
    assert_eq!(Last4::from("ab9Z").to_string(), "ab9Z");
    assert_eq!(Last4::default().as_str(), "");
}
