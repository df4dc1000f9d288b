//! What the decode tests share: the fixtures, shortcuts to [`decode`] and a
//! small deterministic generator of random bodies.

use bytes::Bytes;

use super::{DecodeError, Decoded, decode};

// The fixtures are the repository's copies of the shared webhook payloads
// (github/ and peer/), byte for byte.
pub(super) const PUSH: &[u8] = include_bytes!("../../examples/payloads/push-branch.json");
pub(super) const SENDGRID: &[u8] = include_bytes!("../../tests/fixtures/sendgrid-array.json");
pub(super) const BITBUCKET: &[u8] = include_bytes!("../../tests/fixtures/bitbucket-form.txt");
pub(super) const APP_XML: &[u8] = include_bytes!("../../tests/fixtures/app.xml");
pub(super) const PLEX: &[u8] = include_bytes!("../../tests/fixtures/plex-multipart.txt");

pub(super) const FORM: &str = "application/x-www-form-urlencoded";

pub(super) async fn run(
    ct: Option<&str>,
    body: &[u8],
    json_fields: &[&str],
) -> Result<Decoded, DecodeError> {
    let json_fields: Vec<String> = json_fields.iter().map(|s| (*s).to_owned()).collect();
    decode(ct, Bytes::copy_from_slice(body), &json_fields).await
}

pub(super) async fn ok(ct: &str, body: &[u8]) -> Decoded {
    run(Some(ct), body, &[]).await.unwrap()
}

pub(super) async fn err(ct: &str, body: &[u8]) -> String {
    run(Some(ct), body, &[]).await.unwrap_err().to_string()
}

/// The Plex fixture as real clients send it: CRLF line endings.
pub(super) fn plex_crlf() -> Vec<u8> {
    String::from_utf8(PLEX.to_vec())
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

/// xorshift64: the same "random" bodies on every run.
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Up to `max_len` bytes, half of the time from `alphabet` (so the
    /// decoders get past their first byte), otherwise any byte.
    pub(super) fn bytes(&mut self, alphabet: &[u8], max_len: u64) -> Vec<u8> {
        let len = self.next() % (max_len + 1);
        let any = self.next().is_multiple_of(2);
        (0..len)
            .map(|_| {
                let r = self.next();
                if any {
                    r.to_le_bytes()[3]
                } else {
                    alphabet[(r % alphabet.len() as u64) as usize]
                }
            })
            .collect()
    }
}
