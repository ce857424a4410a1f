//! Callback signatures per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>): `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the partner's `whsec_` secret.
//!
//! `examples/verify-callback.py` is the partner's side of the same scheme; a test below keeps
//! the two in agreement.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// Header carrying the message id: one per call outcome, the same on every retry.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header carrying the Unix time (seconds) of this attempt.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying one or more space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

const PREFIX: &str = "whsec_";
/// Key sizes the specification recommends (192 to 512 bits).
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
/// Size of a secret made by [`SigningSecret::generate`].
const GENERATED_KEY_BYTES: usize = 32;

/// Partners' tooling writes the base64 with or without `=` padding; accept both.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// Why a signing secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("a signing secret starts with \"whsec_\"")]
    MissingPrefix,
    #[error("the part of the signing secret after \"whsec_\" is not valid base64")]
    InvalidBase64,
    #[error("a signing secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {len}")]
    InvalidLength { len: usize },
}

/// The HMAC key of a partner's callbacks, parsed from its `whsec_<base64>` text.
///
/// `Debug` does not print the key.
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl SigningSecret {
    /// Parses `whsec_<base64>`; the key is the decoded bytes after the prefix, 24 to 64 bytes
    /// as the specification recommends. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::MissingPrefix)?;
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| SignatureError::InvalidBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SignatureError::InvalidLength { len: key.len() });
        }
        Ok(Self { key })
    }

    /// A new random 256-bit secret.
    pub fn generate() -> Self {
        let mut key = vec![0; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    /// The `whsec_<base64>` text to hand to the partner (or to store). Named so that every
    /// place that reveals the secret is easy to find.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key size");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The `webhook-signature` value for one delivery attempt: `v1,<base64 HMAC-SHA256>` of
/// `"{msg_id}.{timestamp}.{body}"`.
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(secret.mac(msg_id, timestamp, body))
    )
}

/// Whether any `v1,…` entry of the space-separated `signature_header` matches, compared in
/// constant time. Entries of other versions are ignored. The timestamp's freshness is the
/// caller's concern.
pub fn verify(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    signature_header: &str,
) -> bool {
    let expected = secret.mac(msg_id, timestamp, body);
    signature_header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        // Not `any`: every entry is checked, so the time taken does not tell which one matched.
        .fold(false, |matched, candidate| {
            matched | bool::from(candidate.as_slice().ct_eq(&expected))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write as _;
    use std::path::Path;
    use std::process::{Command, Stdio};

    // The reference vector of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> SigningSecret {
        SigningSecret::parse(SECRET).unwrap()
    }

    #[test]
    fn signing_the_reference_vector_gives_the_reference_signature() {
        assert_eq!(sign(&secret(), MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn the_reference_signature_verifies() {
        assert!(verify(&secret(), MSG_ID, TIMESTAMP, BODY, SIGNATURE));
    }

    #[test]
    fn a_tampered_body_fails() {
        let body = br#"{"test": 2432232315}"#;
        assert!(!verify(&secret(), MSG_ID, TIMESTAMP, body, SIGNATURE));
    }

    #[test]
    fn a_wrong_message_id_fails() {
        assert!(!verify(
            &secret(),
            "msg_p5jXN8AQM9LWM0D4loKWxJeK",
            TIMESTAMP,
            BODY,
            SIGNATURE
        ));
    }

    #[test]
    fn a_wrong_timestamp_fails() {
        assert!(!verify(&secret(), MSG_ID, TIMESTAMP + 1, BODY, SIGNATURE));
    }

    #[test]
    fn a_wrong_secret_fails() {
        let other = SigningSecret::generate();
        assert!(!verify(&other, MSG_ID, TIMESTAMP, BODY, SIGNATURE));
    }

    #[test]
    fn any_matching_v1_entry_among_several_verifies() {
        let header = format!("v1,bm90IGl0 v1a,whatever {SIGNATURE} v2,abc");
        assert!(verify(&secret(), MSG_ID, TIMESTAMP, BODY, &header));
    }

    #[test]
    fn malformed_or_foreign_entries_do_not_verify() {
        let bare = SIGNATURE.trim_start_matches("v1,");
        for header in [
            "",
            " ",
            bare,
            &format!("v2,{bare}"),
            "v1,not base64!",
            "v1,",
            &SIGNATURE[..SIGNATURE.len() - 4],
        ] {
            assert!(
                !verify(&secret(), MSG_ID, TIMESTAMP, BODY, header),
                "{header:?} should not verify"
            );
        }
    }

    #[test]
    fn secrets_without_the_prefix_or_with_bad_base64_are_refused() {
        assert_eq!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SignatureError::MissingPrefix
        );
        assert_eq!(
            SigningSecret::parse("whsec_not*base64").unwrap_err(),
            SignatureError::InvalidBase64
        );
        assert_eq!(
            SigningSecret::parse("whsec_").unwrap_err(),
            SignatureError::InvalidLength { len: 0 }
        );
        assert_eq!(
            SigningSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SignatureError::InvalidLength { len: 5 }
        );
    }

    #[test]
    fn padded_and_unpadded_base64_give_the_same_key() {
        // 32 bytes encode to 43 characters plus one `=`.
        let padded = SigningSecret::generate().reveal();
        assert!(padded.ends_with('='));
        let unpadded = SigningSecret::parse(padded.trim_end_matches('=')).unwrap();
        let padded = SigningSecret::parse(&padded).unwrap();
        assert_eq!(
            sign(&padded, MSG_ID, TIMESTAMP, BODY),
            sign(&unpadded, MSG_ID, TIMESTAMP, BODY)
        );
    }

    #[test]
    fn a_generated_secret_round_trips_through_its_text() {
        let secret = SigningSecret::generate();
        let parsed = SigningSecret::parse(&secret.reveal()).unwrap();
        let signature = sign(&secret, MSG_ID, TIMESTAMP, BODY);
        assert!(verify(&parsed, MSG_ID, TIMESTAMP, BODY, &signature));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let printed = format!("{:?}", secret());
        assert!(!printed.contains("MfKQ9r8G"), "{printed}");
        assert!(
            !printed.contains(&format!("{:?}", secret().key)),
            "{printed}"
        );
    }

    /// Runs `examples/verify-callback.py` as a partner would; `None` when python3 is missing.
    fn run_partner_script(
        secret: &str,
        msg_id: &str,
        timestamp: i64,
        signature: &str,
        body: &[u8],
    ) -> Option<(bool, String)> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verify-callback.py");
        let mut child = match Command::new("python3")
            .arg(&script)
            .args([secret, msg_id, &timestamp.to_string(), signature])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => panic!("could not run python3: {error}"),
        };
        child.stdin.take().unwrap().write_all(body).unwrap();
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Some((output.status.success(), text))
    }

    #[test]
    fn the_partner_example_script_accepts_our_signature_and_rejects_tampering() {
        let secret = SigningSecret::generate();
        let msg_id = "msg_2x5gYw1rJ9k0";
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"call_id":"call123","status":"completed","error":null}"#;
        let signature = sign(&secret, msg_id, now, body);

        let Some((ok, output)) =
            run_partner_script(&secret.reveal(), msg_id, now, &signature, body)
        else {
            eprintln!("SKIPPED: python3 is not installed, the partner example script was not run");
            return;
        };
        assert!(ok, "the script should accept the signature: {output}");
        assert_eq!(output.trim(), "valid");

        let tampered = br#"{"call_id":"call123","status":"failed","error":null}"#;
        let (ok, output) =
            run_partner_script(&secret.reveal(), msg_id, now, &signature, tampered).unwrap();
        assert!(!ok, "the script should reject a tampered body: {output}");
        assert!(output.contains("invalid"), "{output}");

        let stale = now - 3600;
        let stale_signature = sign(&secret, msg_id, stale, body);
        let (ok, output) =
            run_partner_script(&secret.reveal(), msg_id, stale, &stale_signature, body).unwrap();
        assert!(!ok, "the script should reject an old timestamp: {output}");
        assert!(output.contains("timestamp"), "{output}");
    }

    #[test]
    fn the_partner_example_script_accepts_the_reference_vector_apart_from_its_age() {
        // The reference timestamp is from 2021, so only the signature check can be shown by
        // widening the tolerance; run the script's function directly for that.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verify-callback.py");
        let program = format!(
            "import importlib.util, sys\n\
             spec = importlib.util.spec_from_file_location('vc', {script:?})\n\
             vc = importlib.util.module_from_spec(spec); spec.loader.exec_module(vc)\n\
             headers = {{'webhook-id': {MSG_ID:?}, 'webhook-timestamp': '{TIMESTAMP}', \
             'webhook-signature': {SIGNATURE:?}}}\n\
             vc.verify({SECRET:?}, headers, sys.stdin.buffer.read(), tolerance_seconds=10**10)\n\
             print('valid')\n"
        );
        let mut child = match Command::new("python3")
            .args(["-c", &program])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "SKIPPED: python3 is not installed, the partner example script was not run"
                );
                return;
            }
            Err(error) => panic!("could not run python3: {error}"),
        };
        child.stdin.take().unwrap().write_all(BODY).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "valid");
    }
}
