//! Keys: the master key from configuration and the per-call data keys it wraps.

use std::sync::atomic::{AtomicI32, Ordering};
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
#[derive(Clone, PartialEq, Eq)]
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

    fn wrapping_key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32 bytes"))
    }

    /// A fixed text sealed under this key: the keyring keeps one per master key, so a start
    /// with another key fails at once rather than on the first read, and a start with two keys
    /// learns which is which.
    pub fn seal_check(&self) -> Vec<u8> {
        seal_with(
            &SystemRandom::new(),
            &self.wrapping_key(),
            CHECK_AAD,
            CHECK_TEXT,
        )
    }

    pub fn opens_check(&self, sealed: &[u8]) -> bool {
        open_with(&self.wrapping_key(), CHECK_AAD, sealed).is_ok_and(|t| t == CHECK_TEXT)
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

/// Authenticated encryption failed: tampered data, or a key other than the one that sealed it.
#[derive(Debug, thiserror::Error)]
#[error("authenticated decryption failed")]
pub struct OpenFailed;

/// A master key as the keyring numbers it: `version` is its row in `keyring.master_key`.
struct Master {
    version: i32,
    wrap: LessSafeKey,
    /// The blind-index key derived from it (see [`INDEX_KEY_INFO`]).
    index: hmac::Key,
}

impl Master {
    fn new(version: i32, key: &MasterKey) -> Self {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &key.0);
        Self {
            version,
            wrap: key.wrapping_key(),
            index: hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&mac, INDEX_KEY_INFO).as_ref()),
        }
    }
}

/// The cryptography of the service: master keys, index keys, randomness. Cheap to clone.
///
/// Outside a master-key rotation it holds one master key. During one it holds two, the new and
/// the previous: a key row is unwrapped by the key of its version, and new rows are wrapped by
/// whichever of the two the keyring calls current (it changes when `rotate-master-key` runs).
#[derive(Clone)]
pub struct Privacy {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configured master key first, then the previous one if any.
    masters: Vec<Master>,
    /// The version that wraps new key rows (one of `masters`).
    writing: AtomicI32,
    rng: SystemRandom,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Privacy(..)")
    }
}

/// The info string that derives the blind-index key from the master key: the index key is a
/// separate key (an index value reveals nothing about the data keys), yet needs no extra secret.
/// A leaked master key therefore leaks the index key too: a rotation recomputes the indexes.
const INDEX_KEY_INFO: &[u8] = b"callingest blind index key v1";

/// A master key version this process does not hold.
#[derive(Debug, thiserror::Error)]
#[error("master key version {0} is not configured")]
pub struct VersionNotHeld(pub i32);

impl Privacy {
    /// One master key, as version 1: a database never rotated, and tools that seal nothing.
    pub fn new(master: &MasterKey) -> Self {
        Self::with_versions((1, master), None)
    }

    /// The configured key and, during a rotation, the previous one, with the versions the
    /// keyring gave them. New rows are wrapped by `current` until told otherwise.
    pub fn with_versions(current: (i32, &MasterKey), previous: Option<(i32, &MasterKey)>) -> Self {
        let mut masters = vec![Master::new(current.0, current.1)];
        masters.extend(previous.map(|(v, k)| Master::new(v, k)));
        Self {
            inner: Arc::new(Inner {
                masters,
                writing: AtomicI32::new(current.0),
                rng: SystemRandom::new(),
            }),
        }
    }

    /// The version of the configured master key.
    pub fn current_version(&self) -> i32 {
        self.inner.masters[0].version
    }

    /// The version of the previous master key, when one is configured (during a rotation).
    pub fn previous_version(&self) -> Option<i32> {
        self.inner.masters.get(1).map(|m| m.version)
    }

    /// The version new key rows are wrapped with.
    pub fn writing_version(&self) -> i32 {
        self.inner.writing.load(Ordering::Relaxed)
    }

    /// Wrap new key rows with `version` from now on (when this process holds it).
    pub fn set_writing_version(&self, version: i32) -> Result<(), VersionNotHeld> {
        self.master(version)?;
        self.inner.writing.store(version, Ordering::Relaxed);
        Ok(())
    }

    fn master(&self, version: i32) -> Result<&Master, VersionNotHeld> {
        self.inner
            .masters
            .iter()
            .find(|m| m.version == version)
            .ok_or(VersionNotHeld(version))
    }

    fn writing(&self) -> &Master {
        self.master(self.writing_version())
            .expect("the writing version is always one held")
    }

    /// Two fresh data keys for a new call, and their wrapped forms for the keyring, under the
    /// writing master key.
    pub fn new_call_keys(&self, aggregate_id: &str) -> (CallKeys, WrappedKeys) {
        let mut bytes = [0u8; 64];
        self.fill(&mut bytes);
        let (call, agent) = bytes.split_at(32);
        let keys = CallKeys {
            call: DataKey::from_bytes(call),
            agent: DataKey::from_bytes(agent),
        };
        let master = self.writing();
        let wrapped = WrappedKeys {
            master_key_version: master.version,
            call: self.seal_with(&master.wrap, &key_aad(aggregate_id, Part::Call), call),
            agent: self.seal_with(&master.wrap, &key_aad(aggregate_id, Part::Agent), agent),
        };
        (keys, wrapped)
    }

    /// A data key back from its wrapped form, by the master key of `version`.
    pub fn unwrap(
        &self,
        aggregate_id: &str,
        part: Part,
        version: i32,
        wrapped: &[u8],
    ) -> Result<DataKey, OpenFailed> {
        let master = self.master(version).map_err(|_| OpenFailed)?;
        let bytes = open_with(&master.wrap, &key_aad(aggregate_id, part), wrapped)?;
        DataKey::from_bytes(&bytes).ok_or(OpenFailed)
    }

    /// A wrapped data key unwrapped by the master key of `from` and wrapped again by that of
    /// `to`: the data key itself, and so every sealed field, stays the same.
    pub fn rewrap(
        &self,
        aggregate_id: &str,
        part: Part,
        from: i32,
        wrapped: &[u8],
        to: i32,
    ) -> Result<Vec<u8>, OpenFailed> {
        let aad = key_aad(aggregate_id, part);
        let from = self.master(from).map_err(|_| OpenFailed)?;
        let to = self.master(to).map_err(|_| OpenFailed)?;
        let bytes = open_with(&from.wrap, &aad, wrapped)?;
        Ok(self.seal_with(&to.wrap, &aad, &bytes))
    }

    /// `nonce || ciphertext || tag` of `plain` under a data key.
    pub fn seal(&self, key: &DataKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        self.seal_with(&key.0, aad, plain)
    }

    pub fn open(&self, key: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenFailed> {
        open_with(&key.0, aad, sealed)
    }

    /// HMAC-SHA256 under the index key of master key `version`.
    pub(crate) fn mac(&self, version: i32, parts: &[&[u8]]) -> Result<Vec<u8>, VersionNotHeld> {
        Ok(mac_with(&self.master(version)?.index, parts))
    }

    /// The versions of every master key held, the configured one first.
    pub(crate) fn versions(&self) -> impl Iterator<Item = i32> + '_ {
        self.inner.masters.iter().map(|m| m.version)
    }

    fn seal_with(&self, key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        seal_with(&self.inner.rng, key, aad, plain)
    }

    fn fill(&self, bytes: &mut [u8]) {
        self.inner
            .rng
            .fill(bytes)
            .expect("the system random source works");
    }
}

/// A new call's data keys wrapped by a master key, and that key's version.
#[derive(Debug, Clone)]
pub struct WrappedKeys {
    pub master_key_version: i32,
    pub call: Vec<u8>,
    pub agent: Vec<u8>,
}

fn mac_with(key: &hmac::Key, parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        ctx.update(&(p.len() as u32).to_be_bytes());
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

fn seal_with(rng: &SystemRandom, key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .expect("the system random source works");
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let mut body = out.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .expect("AES-GCM seals any length a call holds");
    out.extend_from_slice(&body);
    out
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

    fn key() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate_base64()).unwrap()
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_call_and_part_under_its_master_key() {
        let p = privacy();
        let (keys, wrapped) = p.new_call_keys("p:c1");
        assert_eq!(wrapped.master_key_version, 1);
        let key = p.unwrap("p:c1", Part::Call, 1, &wrapped.call).unwrap();
        let sealed = p.seal(keys.call.as_ref().unwrap(), b"aad", b"+441234");
        assert_eq!(p.open(&key, b"aad", &sealed).unwrap(), b"+441234");
        assert!(p.open(&key, b"other aad", &sealed).is_err());
        assert!(p.unwrap("p:c2", Part::Call, 1, &wrapped.call).is_err());
        assert!(p.unwrap("p:c1", Part::Agent, 1, &wrapped.call).is_err());
        assert!(p.unwrap("p:c1", Part::Call, 2, &wrapped.call).is_err());
        assert!(privacy()
            .unwrap("p:c1", Part::Call, 1, &wrapped.call)
            .is_err());
    }

    #[test]
    fn a_rewrapped_key_is_the_same_data_key_under_the_new_master_key_only() {
        let (old, new) = (key(), key());
        let before = Privacy::new(&old);
        let (keys, wrapped) = before.new_call_keys("p:c1");
        let sealed = before.seal(keys.call.as_ref().unwrap(), b"aad", b"+441234");

        let rotating = Privacy::with_versions((2, &new), Some((1, &old)));
        let rewrapped = rotating
            .rewrap("p:c1", Part::Call, 1, &wrapped.call, 2)
            .unwrap();
        let after = Privacy::with_versions((2, &new), None);
        let key = after.unwrap("p:c1", Part::Call, 2, &rewrapped).unwrap();
        assert_eq!(after.open(&key, b"aad", &sealed).unwrap(), b"+441234");
        assert!(before.unwrap("p:c1", Part::Call, 1, &rewrapped).is_err());
        assert!(rotating
            .rewrap("p:c2", Part::Call, 1, &wrapped.call, 2)
            .is_err());
    }

    #[test]
    fn new_rows_are_wrapped_by_the_writing_version() {
        let (old, new) = (key(), key());
        let rotating = Privacy::with_versions((2, &new), Some((1, &old)));
        assert_eq!(rotating.new_call_keys("p:c").1.master_key_version, 2);
        rotating.set_writing_version(1).unwrap();
        let (_, wrapped) = rotating.new_call_keys("p:c");
        assert_eq!(wrapped.master_key_version, 1);
        assert!(Privacy::new(&old)
            .unwrap("p:c", Part::Call, 1, &wrapped.call)
            .is_ok());
        assert!(rotating.set_writing_version(3).is_err());
    }

    #[test]
    fn the_check_opens_only_under_the_master_key_that_sealed_it() {
        let k = key();
        let check = k.seal_check();
        assert!(k.opens_check(&check));
        assert!(!key().opens_check(&check));
    }
}
