//! Prefixed, time-sortable identifiers (`evt_…`, `dlv_…`, `att_…`, `req_…`). Each kind
//! is its own type so an event id can never be passed where a delivery id is
//! expected, and each reads well in logs.

use std::fmt;

/// ULIDs made in the same millisecond are ordered only if they come from one
/// generator, which then increments the random part instead of redrawing it.
fn next_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut g = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    // Overflow of the random part within one millisecond is practically impossible; fall back to a fresh ULID.
    g.get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id; ids created later sort after ids created earlier.
            pub fn new() -> Self {
                Self(format!("{}{}", $prefix, next_ulid().to_string().to_lowercase()))
            }

            /// Accepts a string that has this id's prefix.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                (rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A stored event (one accepted webhook request).
    EventId,
    "evt_"
);
prefixed_id!(
    /// One action to run for one event.
    DeliveryId,
    "dlv_"
);
prefixed_id!(
    /// One try at running a delivery.
    AttemptId,
    "att_"
);
prefixed_id!(
    /// One running hookwire process: the owner of the leases it claims.
    /// New at every start, in the start-up log line, `/api/rules` and
    /// `/metrics`.
    InstanceId,
    "ins_"
);
prefixed_id!(
    /// One operator request that changes deliveries (a manual retry, a
    /// replay): answered in `X-Request-Id` and recorded on what it started.
    RequestId,
    "req_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn ids_carry_their_prefix_and_round_trip() {
        let e = EventId::new();
        assert!(e.as_str().starts_with("evt_"));
        assert_eq!(EventId::parse(e.as_str()), Some(e.clone()));
        assert_eq!(DeliveryId::parse(e.as_str()), None);
        assert_eq!(EventId::parse("evt_../../etc/passwd"), None);
    }
}
