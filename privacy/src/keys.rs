//! Keys: the master key from configuration and the per-call data keys it wraps.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Why a master key was refused.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("CALLINGEST_MASTER_KEY is not valid base64")]
    NotBase64,
    #[error("CALLINGEST_MASTER_KEY must decode to 32 bytes, not {0}")]
    WrongLength(usize),
}

/// The 32-byte key that wraps every data key. Never printed.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From its configuration form: 32 bytes in standard base64.
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| MasterKeyError::NotBase64)?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength(bytes.len()))?;
        Ok(Self(bytes))
    }

    /// A fresh random key in its configuration form (for `scripts/run` and tests).
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        STANDARD.encode(bytes)
    }
}

/// A call's data key, in clear (only ever in memory).
#[derive(Clone)]
pub struct DataKey(Arc<LessSafeKey>);

impl DataKey {
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        UnboundKey::new(&AES_256_GCM, bytes)
            .ok()
            .map(|k| Self(Arc::new(LessSafeKey::new(k))))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A call's data keys as far as they still exist: `None` once erased.
#[derive(Debug, Clone, Default)]
pub struct CallKeys {
    pub call: Option<DataKey>,
    pub agent: Option<DataKey>,
}

/// Which key of a call: part of the authenticated data, so a key or a ciphertext moved to
/// another call or part does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Call,
    Agent,
}

impl Part {
    fn label(self) -> &'static [u8] {
        match self {
            Part::Call => b"call",
            Part::Agent => b"agent",
        }
    }
}

/// Bytes a buffer given to [`Privacy::seal_buffer`] keeps in front of its plaintext.
pub const SEAL_PREFIX: usize = NONCE_LEN;

/// Authenticated encryption failed: tampered data, or a key other than the one that sealed it.
#[derive(Debug, thiserror::Error)]
#[error("authenticated decryption failed")]
pub struct OpenFailed;

/// The cryptography of the service: master key, index key, randomness. Cheap to clone.
#[derive(Clone)]
pub struct Privacy {
    inner: Arc<Inner>,
}

struct Inner {
    master: LessSafeKey,
    index: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Privacy(..)")
    }
}

/// The info string that derives the blind-index key from the master key: the index key is a
/// separate key (an index value reveals nothing about the data keys), yet needs no extra secret.
const INDEX_KEY_INFO: &[u8] = b"callingest blind index key v1";

impl Privacy {
    pub fn new(master: &MasterKey) -> Self {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &master.0);
        let index = hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&mac, INDEX_KEY_INFO).as_ref());
        Self {
            inner: Arc::new(Inner {
                master: LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, &master.0).expect("32 bytes"),
                ),
                index,
                rng: SystemRandom::new(),
            }),
        }
    }

    /// Two fresh data keys for a new call, and their wrapped forms for the keyring
    /// (`(keys, wrapped call key, wrapped agent key)`).
    pub fn new_call_keys(&self, aggregate_id: &str) -> (CallKeys, Vec<u8>, Vec<u8>) {
        // One draw from the system for both keys and both wrapping nonces: each draw is a
        // system call, and a batch makes a key pair for every call.
        let mut bytes = [0u8; 64 + 2 * NONCE_LEN];
        self.fill(&mut bytes);
        let (call, rest) = bytes.split_at(32);
        let (agent, nonces) = rest.split_at(32);
        let (call_nonce, agent_nonce) = nonces.split_at(NONCE_LEN);
        let keys = CallKeys {
            call: DataKey::from_bytes(call),
            agent: DataKey::from_bytes(agent),
        };
        let wrap = |part, key: &[u8], nonce: &[u8]| {
            let mut buf = Vec::with_capacity(NONCE_LEN + key.len() + AES_256_GCM.tag_len());
            buf.extend_from_slice(nonce);
            buf.extend_from_slice(key);
            seal_buffer_with(&self.inner.master, &key_aad(aggregate_id, part), &mut buf);
            buf
        };
        let wrapped_call = wrap(Part::Call, call, call_nonce);
        let wrapped_agent = wrap(Part::Agent, agent, agent_nonce);
        (keys, wrapped_call, wrapped_agent)
    }

    /// A data key back from its wrapped form.
    pub fn unwrap(
        &self,
        aggregate_id: &str,
        part: Part,
        wrapped: &[u8],
    ) -> Result<DataKey, OpenFailed> {
        let bytes = open_with(&self.inner.master, &key_aad(aggregate_id, part), wrapped)?;
        DataKey::from_bytes(&bytes).ok_or(OpenFailed)
    }

    /// `nonce || ciphertext || tag` of `plain` under a data key.
    pub fn seal(&self, key: &DataKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        self.seal_with(&key.0, aad, plain)
    }

    /// Seals in place: `buf` holds [`SEAL_PREFIX`] bytes of room for the nonce, then the
    /// plaintext (serialised straight into it), and becomes `nonce || ciphertext || tag`.
    pub fn seal_buffer(&self, key: &DataKey, aad: &[u8], buf: &mut Vec<u8>) {
        self.fill(&mut buf[..NONCE_LEN]);
        seal_buffer_with(&key.0, aad, buf)
    }

    pub fn open(&self, key: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenFailed> {
        open_with(&key.0, aad, sealed)
    }

    /// Seals a fixed text under the master key: the keyring keeps one, so that a service
    /// started with another master key fails at start rather than on the first read.
    pub fn seal_check(&self) -> Vec<u8> {
        self.seal_with(&self.inner.master, CHECK_AAD, CHECK_TEXT)
    }

    pub fn opens_check(&self, sealed: &[u8]) -> bool {
        open_with(&self.inner.master, CHECK_AAD, sealed).is_ok_and(|t| t == CHECK_TEXT)
    }

    /// HMAC-SHA256 under the index key.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.inner.index);
        for p in parts {
            // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
            ctx.update(&(p.len() as u32).to_be_bytes());
            ctx.update(p);
        }
        ctx.sign().as_ref().to_vec()
    }

    fn seal_with(&self, key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        buf.extend_from_slice(&[0; NONCE_LEN]);
        buf.extend_from_slice(plain);
        self.fill(&mut buf[..NONCE_LEN]);
        seal_buffer_with(key, aad, &mut buf);
        buf
    }

    fn fill(&self, bytes: &mut [u8]) {
        self.inner
            .rng
            .fill(bytes)
            .expect("the system random source works");
    }
}

const CHECK_AAD: &[u8] = b"callingest master key check";
const CHECK_TEXT: &[u8] = b"the master key that sealed this keyring";

fn key_aad(aggregate_id: &str, part: Part) -> Vec<u8> {
    let mut aad = Vec::with_capacity(aggregate_id.len() + 10);
    aad.extend_from_slice(b"key\0");
    aad.extend_from_slice(part.label());
    aad.push(0);
    aad.extend_from_slice(aggregate_id.as_bytes());
    aad
}

/// The authenticated data of a sealed event field: the call, the event type and the part.
pub(crate) fn field_aad(aggregate_id: &str, event_type: &str, part: Part) -> Vec<u8> {
    let mut aad = Vec::with_capacity(aggregate_id.len() + event_type.len() + 10);
    aad.extend_from_slice(part.label());
    aad.push(0);
    aad.extend_from_slice(event_type.as_bytes());
    aad.push(0);
    aad.extend_from_slice(aggregate_id.as_bytes());
    aad
}

/// `buf` is a fresh nonce followed by the plaintext; it becomes `nonce || ciphertext || tag` in
/// place.
fn seal_buffer_with(key: &LessSafeKey, aad: &[u8], buf: &mut Vec<u8>) {
    let (nonce, plain) = buf.split_at_mut(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).expect("NONCE_LEN bytes");
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), plain)
        .expect("AES-GCM seals any length a call holds");
    buf.extend_from_slice(tag.as_ref());
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenFailed> {
    if sealed.len() < NONCE_LEN {
        return Err(OpenFailed);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenFailed)?;
    let mut body = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| OpenFailed)?
        .len();
    body.truncate(plain_len);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privacy() -> Privacy {
        Privacy::new(&MasterKey::from_base64(&MasterKey::generate_base64()).unwrap())
    }

    #[test]
    fn a_master_key_must_be_32_bytes_of_base64() {
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(MasterKeyError::NotBase64)
        ));
        assert!(matches!(
            MasterKey::from_base64(&STANDARD.encode([1u8; 16])),
            Err(MasterKeyError::WrongLength(16))
        ));
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_call_and_part_under_its_master_key() {
        let p = privacy();
        let (keys, wrapped, _) = p.new_call_keys("p:c1");
        let key = p.unwrap("p:c1", Part::Call, &wrapped).unwrap();
        let sealed = p.seal(keys.call.as_ref().unwrap(), b"aad", b"+441234");
        assert_eq!(p.open(&key, b"aad", &sealed).unwrap(), b"+441234");
        assert!(p.open(&key, b"other aad", &sealed).is_err());
        assert!(p.unwrap("p:c2", Part::Call, &wrapped).is_err());
        assert!(p.unwrap("p:c1", Part::Agent, &wrapped).is_err());
        assert!(privacy().unwrap("p:c1", Part::Call, &wrapped).is_err());
    }

    #[test]
    fn the_check_opens_only_under_the_master_key_that_sealed_it() {
        let p = privacy();
        let check = p.seal_check();
        assert!(p.opens_check(&check));
        assert!(!privacy().opens_check(&check));
    }
}
