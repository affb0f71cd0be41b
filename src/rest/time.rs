//! RFC 3339 timestamps for the JSON facades: parsing what clients send
//! (`2026-12-01T10:00:00Z`, `...T10:00:00.5+02:00`, or a bare date
//! `2026-12-01`, read as midnight UTC) and formatting what keyward returns
//! (UTC, `Z`).

use std::time::{Duration, UNIX_EPOCH};

use prost_types::Timestamp;

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads exactly `n` ASCII digits at `s[at..]`.
fn digits(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = s.get(at..at + n)?;
    part.iter().try_fold(0i64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Parses an RFC 3339 date-time, or a full date, to a timestamp. `None` if
/// it is not one (out-of-range fields included).
pub fn parse(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() > 40 {
        return None;
    }
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(Timestamp {
            seconds: days * 86_400,
            nanos: 0,
        });
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (hour, minute) = (digits(b, 11, 2)?, digits(b, 14, 2)?);
    if b.get(16) != Some(&b':') {
        return None;
    }
    let second = digits(b, 17, 2)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        let n = at - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if at + 6 == b.len() && b[at + 3] == b':' => {
            let (oh, om) = (digits(b, at + 1, 2)?, digits(b, at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    Some(Timestamp {
        seconds: days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos: i32::try_from(nanos).ok()?,
    })
}

fn system_time(t: &Timestamp) -> std::time::SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0).min(999_999_999);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// `2026-11-26T10:00:00.123Z` (UTC, milliseconds).
pub fn format_millis(t: &Timestamp) -> String {
    humantime::format_rfc3339_millis(system_time(t)).to_string()
}

/// `2026-11-26T10:00:00.123000Z` (UTC, microseconds, MailerSend's style).
pub fn format_micros(t: &Timestamp) -> String {
    humantime::format_rfc3339_micros(system_time(t)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<i64> {
        parse(s).map(|t| t.seconds)
    }

    #[test]
    fn parses_rfc3339_and_dates() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(secs("1970-01-01"), Some(0));
        assert_eq!(secs("2026-11-26T10:00:00Z"), Some(1_795_687_200));
        assert_eq!(secs("2026-11-26T12:00:00+02:00"), Some(1_795_687_200));
        assert_eq!(secs("2026-11-26 08:30:00-01:30"), Some(1_795_687_200));
        assert_eq!(secs("2000-02-29T00:00:00z"), Some(951_782_400));
        let t = parse("2026-11-26T10:00:00.123456789Z").expect("parses");
        assert_eq!(t.nanos, 123_456_789);
        assert_eq!(
            parse("2026-11-26T10:00:00.5Z").map(|t| t.nanos),
            Some(500_000_000)
        );
        assert_eq!(
            parse("2026-11-26T10:00:00.1234567891Z").map(|t| t.nanos),
            Some(123_456_789)
        );
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-11-26T24:00:00Z",
            "2026-11-26T10:60:00Z",
            "2026-11-26T10:00:60Z",
            "2026-11-26T10:00:00",
            "2026-11-26T10:00:00.Z",
            "2026-11-26T10:00:00+2:00",
            "2026-11-26T10:00:00+02:00x",
            "2026-11-26X10:00:00Z",
            "２０２６-11-26",
            "-026-11-26",
            "tomorrow",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_utc() {
        let t = Timestamp {
            seconds: 1_795_687_200,
            nanos: 123_000_000,
        };
        assert_eq!(format_millis(&t), "2026-11-26T10:00:00.123Z");
        assert_eq!(format_micros(&t), "2026-11-26T10:00:00.123000Z");
        assert_eq!(parse(&format_millis(&t)), Some(t));
    }
}
