//! The providers' published examples (and a few computed the same way),
//! shared by the verify and sign tests.

pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub const GITHUB_BODY: &str = "Hello, World!";
pub const GITHUB_SIG: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

pub const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const SLACK_TS: u64 = 1531420618;
pub const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
pub const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

/// (secret, id, timestamp, body, signature)
pub const STANDARD: [(&str, &str, u64, &str, &str); 2] = [
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        r#"{"test": 2432232314}"#,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    (
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1649367553,
        r#"{"email":"test@example.com","username":"test_user"}"#,
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ),
];

/// A 32-byte key, whose base64 ends in `=`, for the secret forms the
/// reference libraries accept (with and without `whsec_`, padded or not).
/// No library publishes such a vector; the signature is python's
/// `base64.b64encode(hmac.new(bytes(range(32)), b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}", hashlib.sha256).digest())`.
pub const STANDARD_PADDED: (&str, &str, u64, &str, &str) = (
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "msg_p5jXN8AQM9LWM0D4loKWxJek",
    1614265330,
    r#"{"test": 2432232314}"#,
    "v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI=",
);

/// Stripe's own fixture: stripe/stripe-dotnet,
/// src/StripeTests/Services/Events/EventUtilityTest.cs (header, secret,
/// timestamp) and src/StripeTests/Resources/event_test_signature.json
/// (the body, with its final newline). Computed by Stripe with
/// `openssl sha256 -hmac`, not by us; the header also carries a `v0`.
pub const STRIPE_SECRET: &str = "webhook_secret";
pub const STRIPE_TS: u64 = 1533204620;
pub const STRIPE_V1: &str = "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";
pub const STRIPE_HEADER: &str = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";
pub const STRIPE_BODY: &str = r#"{
  "id": "evt_123",
  "object": "event",
  "account": "acct_123",
  "api_version": "2017-05-25",
  "created": 1533204620,
  "data": {
    "object": {
      "id": "cus_123",
      "object": "customer",
      "created": 123456789,
      "email": "test@stripe.com",
      "livemode": false,
      "metadata": {}
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": "req_123",
    "idempotency_key": "idempotency-key-123"
  },
  "type": "customer.created"
}
"#;

pub const SHOPIFY_SECRET: &str = "test_secret_key";
pub const SHOPIFY_BODY: &str = r#"{"foo": "bar"}"#;
pub const SHOPIFY_SIG: &str = "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=";
