//! Unit tests of replication's pure parts.

use super::follow::endpoint;
use super::follows_over_tls;

#[test]
fn the_scheme_decides_tls() {
    for tls in ["https://primary:50051", "HTTPS://10.0.0.5:50051"] {
        assert!(follows_over_tls(tls), "{tls}");
        assert_eq!(endpoint(tls), tls);
    }
    for plain in ["primary:50051", "http://primary:50051", "https:/x", ""] {
        assert!(!follows_over_tls(plain), "{plain}");
    }
    assert_eq!(endpoint("primary:50051"), "http://primary:50051");
    assert_eq!(endpoint("HTTP://primary:1"), "HTTP://primary:1");
}
