//! The pieces every signature scheme shares: HMACs keyed once at load,
//! signatures decoded into fixed stack buffers (no allocation per request, no
//! panic on any input), and constant-time comparison. Nothing here knows a
//! provider's header layout.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use subtle::{Choice, ConstantTimeEq};

use super::{Encoding, HmacAlgorithm};

/// The longest MAC any scheme produces (HMAC-SHA512).
const MAX_TAG: usize = 64;

/// Room for a decoded signature. A little more than [`MAX_TAG`] so a padded
/// SHA-512 tag in base64 (88 characters, whose length estimate is 66 bytes)
/// always fits; anything longer could not match and is refused as malformed.
const SIG_CAPACITY: usize = MAX_TAG + 8;

/// An HMAC whose key was absorbed at load: both key pads are hashed once, so
/// a request clones the prepared state instead of re-deriving it.
#[derive(Clone)]
pub(super) enum Key {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl Key {
    /// `None` cannot happen: HMAC takes keys of any length. Returning an
    /// option keeps that promise out of a panic path.
    pub(super) fn new(algorithm: HmacAlgorithm, secret: &[u8]) -> Option<Self> {
        match algorithm {
            HmacAlgorithm::Sha1 => Hmac::new_from_slice(secret).ok().map(Key::Sha1),
            HmacAlgorithm::Sha256 => Hmac::new_from_slice(secret).ok().map(Key::Sha256),
            HmacAlgorithm::Sha512 => Hmac::new_from_slice(secret).ok().map(Key::Sha512),
        }
    }

    /// The MAC of the concatenation of `parts` (passed in pieces so that
    /// `"{t}.{body}"` is never built in memory).
    pub(super) fn tag(&self, parts: &[&[u8]]) -> Tag {
        fn run<M: Mac + Clone>(prepared: &M, parts: &[&[u8]]) -> Tag {
            let mut mac = prepared.clone();
            for part in parts {
                mac.update(part);
            }
            let out = mac.finalize().into_bytes();
            let len = out.len().min(MAX_TAG);
            let mut tag = Tag {
                buf: [0; MAX_TAG],
                len,
            };
            tag.buf[..len].copy_from_slice(&out[..len]);
            tag
        }
        match self {
            Key::Sha1(m) => run(m, parts),
            Key::Sha256(m) => run(m, parts),
            Key::Sha512(m) => run(m, parts),
        }
    }
}

/// A computed MAC.
pub(super) struct Tag {
    buf: [u8; MAX_TAG],
    len: usize,
}

impl Tag {
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Constant time in the contents; only the (public) lengths may end it early.
    fn matches(&self, sig: &Sig) -> Choice {
        self.as_slice().ct_eq(sig.as_slice())
    }
}

/// A signature taken from a request, decoded.
#[derive(Clone, Copy)]
pub(super) struct Sig {
    buf: [u8; SIG_CAPACITY],
    len: usize,
}

impl Sig {
    pub(super) fn decode(encoding: Encoding, text: &[u8]) -> Option<Self> {
        match encoding {
            Encoding::Hex => Self::hex(text),
            Encoding::Base64 => Self::base64(text),
        }
    }

    /// Upper- or lowercase hex; `None` for empty, odd-length, oversized or non-hex text.
    pub(super) fn hex(text: &[u8]) -> Option<Self> {
        let len = text.len() / 2;
        if text.is_empty() || !text.len().is_multiple_of(2) || len > SIG_CAPACITY {
            return None;
        }
        let mut sig = Sig {
            buf: [0; SIG_CAPACITY],
            len,
        };
        hex::decode_to_slice(text, &mut sig.buf[..len]).ok()?;
        Some(sig)
    }

    /// Standard, padded base64; `None` for empty, oversized or invalid text.
    pub(super) fn base64(text: &[u8]) -> Option<Self> {
        if text.is_empty() {
            return None;
        }
        let mut sig = Sig {
            buf: [0; SIG_CAPACITY],
            len: 0,
        };
        sig.len = B64.decode_slice(text, &mut sig.buf).ok()?;
        Some(sig)
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Whether any key signed `parts` with any of the candidate signatures.
/// `candidates` is called once per key so a header's signature list is parsed
/// in place rather than collected.
pub(super) fn signed_by_any<I>(keys: &[Key], parts: &[&[u8]], candidates: impl Fn() -> I) -> bool
where
    I: Iterator<Item = Sig>,
{
    keys.iter().any(|key| {
        let tag = key.tag(parts);
        let mut hit = Choice::from(0);
        for sig in candidates() {
            hit |= tag.matches(&sig);
        }
        bool::from(hit)
    })
}

/// Whether `given` equals any of `expected`, comparing every entry in constant time.
pub(super) fn equals_any(expected: &[Box<[u8]>], given: &[u8]) -> bool {
    let mut hit = Choice::from(0);
    for e in expected {
        hit |= e.as_ref().ct_eq(given);
    }
    bool::from(hit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_signatures_decode_only_when_well_formed() {
        assert_eq!(Sig::hex(b"00ff").map(|s| s.len), Some(2));
        assert_eq!(Sig::hex(b"00FF").map(|s| s.len), Some(2));
        for bad in [&b""[..], b"0", b"zz", b"0g", "é1".as_bytes(), &[b'a'; 1000]] {
            assert!(Sig::hex(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn base64_signatures_decode_only_when_well_formed() {
        let sha512 = B64.encode([7u8; 64]);
        assert_eq!(Sig::base64(sha512.as_bytes()).map(|s| s.len), Some(64));
        let too_long = B64.encode([7u8; 200]);
        for bad in [
            &b""[..],
            b"!!!!",
            b"abc",
            too_long.as_bytes(),
            &[0xff, 0xfe],
        ] {
            assert!(Sig::base64(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn equals_any_needs_exact_bytes() {
        let expected: Vec<Box<[u8]>> = vec![b"one".as_slice().into(), b"two".as_slice().into()];
        assert!(equals_any(&expected, b"two"));
        assert!(!equals_any(&expected, b"tw"));
        assert!(!equals_any(&expected, b"twoo"));
        assert!(!equals_any(&expected, b""));
        assert!(!equals_any(&[], b"one"));
    }

    #[test]
    fn keyed_state_is_reused_not_consumed() {
        let key = Key::new(HmacAlgorithm::Sha256, b"k").unwrap();
        assert_eq!(
            key.tag(&[b"ab"]).as_slice(),
            key.tag(&[b"a", b"b"]).as_slice()
        );
    }
}
