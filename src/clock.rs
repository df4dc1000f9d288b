//! Wall-clock time as hookwire stores and shows it: milliseconds since the
//! Unix epoch, written out in RFC 3339. At the bottom of the crate: it
//! imports nothing from it.

use std::time::{Duration, SystemTime};

/// Milliseconds since the Unix epoch, now.
///
/// A debug build (the one the tests run) reads `HOOKWIRE_CLOCK_OFFSET_MS`
/// once and adds it: a test restarts the daemon two days ahead to see a
/// `delay: 2d` come due, without waiting two days. A release build ignores
/// the variable.
pub fn now_ms() -> i64 {
    ms(SystemTime::now()).saturating_add(offset_ms())
}

#[cfg(debug_assertions)]
fn offset_ms() -> i64 {
    static OFFSET: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
        std::env::var("HOOKWIRE_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    *OFFSET
}

#[cfg(not(debug_assertions))]
fn offset_ms() -> i64 {
    0
}

/// A point in time as stored: milliseconds since the Unix epoch.
pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch (as stored) in RFC 3339.
pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// A point in time in RFC 3339.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_times_read_as_rfc3339() {
        assert_eq!(crate::clock::rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(crate::clock::rfc3339_ms(1_500), "1970-01-01T00:00:01.5Z");
        assert!(super::now_ms() > 1_700_000_000_000);
    }
}
