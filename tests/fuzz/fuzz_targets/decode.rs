//! Body decoding for every content type. Input: the `Content-Type` header
//! value up to the first newline (a first line that is exactly `-` means no
//! header; not UTF-8 means none either), then the body. A few field names are
//! always listed as `json_fields`. Decoding may fail with a message, never panic.
#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use hookwire::decode::decode;
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
});

static JSON_FIELDS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ["payload", "data", "json", "a"]
        .into_iter()
        .map(str::to_owned)
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = match std::str::from_utf8(line) {
        Ok("-") | Err(_) => None,
        Ok(ct) => Some(ct.strip_suffix('\r').unwrap_or(ct)),
    };
    let body = Bytes::copy_from_slice(body);
    let result = RUNTIME.block_on(decode(content_type, body, &JSON_FIELDS));
    match result {
        Ok(d) => {
            let _ = serde_json::to_string(&d.payload);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
