//! Target `rest_time`: the JSON facades' RFC 3339 parser and formatters.

/// The JSON facades' RFC 3339 parser: what it accepts formats back (UTC,
/// milliseconds and microseconds) to a string it reads as the same instant
/// at that precision.
///
/// Known (fuzz/README.md): `parse` accepts years 0000 to 1969, which the
/// formatters cannot show (they print the epoch), so the round trip is
/// checked from 1970 on.
pub fn rest_time(data: &[u8]) {
    use keyward::rest::time;
    let s = String::from_utf8_lossy(data);
    let Some(t) = time::parse(&s) else { return };
    assert!((0..1_000_000_000).contains(&t.nanos), "{s:?} -> {t:?}");
    if t.seconds < 0 {
        return;
    }
    let ms = time::format_millis(&t);
    let back = time::parse(&ms).unwrap_or_else(|| panic!("{ms:?} (from {s:?}) does not parse"));
    assert_eq!(back.seconds, t.seconds, "{s:?} -> {ms:?}");
    assert_eq!(
        back.nanos,
        t.nanos / 1_000_000 * 1_000_000,
        "{s:?} -> {ms:?}"
    );
    let us = time::format_micros(&t);
    let back = time::parse(&us).unwrap_or_else(|| panic!("{us:?} (from {s:?}) does not parse"));
    assert_eq!(back.seconds, t.seconds, "{s:?} -> {us:?}");
    assert_eq!(back.nanos, t.nanos / 1000 * 1000, "{s:?} -> {us:?}");
}
