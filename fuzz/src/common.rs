//! Helpers every check shares: the fixed "now", the prost decode/encode
//! round trip, and the rule that refused input is INVALID_ARGUMENT naming a
//! field (never INTERNAL).

use keyward::error::Error;
use prost::Message;
use tonic::Code;

/// "Now" for the expiry rules (2023-11-14).
pub const NOW_MS: i64 = 1_700_000_000_000;

/// Decodes `body` as `M` the way tonic's prost codec does, and checks that
/// encoding the result and decoding it again gives the same message.
pub fn decode_round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<M> {
    let m = M::decode(body).ok()?;
    let bytes = m.encode_to_vec();
    assert_eq!(bytes.len(), m.encoded_len());
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, m, "decode(encode(m)) != m");
    Some(m)
}

/// Invalid input is INVALID_ARGUMENT on the wire, naming a field under
/// `prefix`, and never INTERNAL.
fn assert_invalid(err: Error, prefix: &str) {
    match &err {
        Error::InvalidArgument(fields) => {
            assert!(!fields.is_empty());
            for (field, why) in fields {
                assert!(
                    field.starts_with(prefix),
                    "field {field:?} is not under {prefix:?}"
                );
                assert!(!why.is_empty());
            }
        }
        other => panic!("bad input gave {other:?}, not INVALID_ARGUMENT"),
    }
    assert_eq!(tonic::Status::from(err).code(), Code::InvalidArgument);
}

/// `Ok(v)` must match `expected`; `Err` must be INVALID_ARGUMENT.
pub(crate) fn agree<T>(
    result: Result<T, Error>,
    expected: bool,
    prefix: &str,
    what: &str,
) -> Option<T> {
    match result {
        Ok(v) => {
            assert!(expected, "{what}: accepted, the reference rule refuses it");
            Some(v)
        }
        Err(e) => {
            assert!(
                !expected,
                "{what}: refused ({e}), the reference rule accepts it"
            );
            assert_invalid(e, prefix);
            None
        }
    }
}

pub(crate) fn ok<T>(r: Result<T, Error>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("building the world: {what}: {e}"))
}
