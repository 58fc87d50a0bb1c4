//! The keyring: the AES-GCM keys a node opens packets with, the first one (the primary) the
//! one it seals with. Keys are given as base64 of 16, 24 or 32 bytes (AES-128/192/256, as
//! `serf keygen` prints them); the keyring file is Serf's format, a JSON array of base64 keys,
//! primary first.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::consts::U12;
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

type Aes192Gcm = AesGcm<Aes192, U12>;

/// Most keys a ring holds (a rotation needs two; Serf sets no limit, this keeps the key-id
/// space of one byte unambiguous in practice).
pub const MAX_KEYS: usize = 16;

/// A key or keyring that cannot be used. Nothing changed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64.
    #[error("the key is not valid base64 ({0})")]
    Base64(String),
    /// A length AES has no variant for.
    #[error("the key is {0} bytes; AES needs 16, 24 or 32 (use `shoal keygen`)")]
    Length(usize),
    /// `--use` or `--remove` of a key the ring does not hold.
    #[error("the key is not installed")]
    NotInstalled,
    /// `--remove` of the primary key.
    #[error("the key is in use (primary); make another key primary with --use first")]
    RemovePrimary,
    /// The ring would hold more than [`MAX_KEYS`].
    #[error("the keyring already holds {MAX_KEYS} keys; remove one first")]
    Full,
    /// The keyring file is unreadable or not a JSON array of keys.
    #[error("keyring file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The cipher of one key, by key size.
#[derive(Clone)]
pub(crate) enum Cipher {
    /// AES-128-GCM.
    A128(Box<Aes128Gcm>),
    /// AES-192-GCM.
    A192(Box<Aes192Gcm>),
    /// AES-256-GCM.
    A256(Box<Aes256Gcm>),
}

/// One key: its bytes, the cipher and the one-byte id that names it in the envelope.
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    id: u8,
    pub(crate) cipher: Cipher,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id {}, {} bits)", self.id, self.bytes.len() * 8)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Key {
    /// Parses base64 of 16, 24 or 32 bytes (surrounding blanks ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        Self::from_bytes(bytes)
    }

    /// A key of 16, 24 or 32 raw bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, KeyError> {
        let cipher = match bytes.len() {
            16 => Aes128Gcm::new_from_slice(&bytes).map(|c| Cipher::A128(Box::new(c))),
            24 => Aes192Gcm::new_from_slice(&bytes).map(|c| Cipher::A192(Box::new(c))),
            32 => Aes256Gcm::new_from_slice(&bytes).map(|c| Cipher::A256(Box::new(c))),
            n => return Err(KeyError::Length(n)),
        }
        .map_err(|_| KeyError::Length(bytes.len()))?;
        let id = super::key_id(&cipher);
        Ok(Self { bytes, id, cipher })
    }

    /// The key as base64 (what `--list` shows and the keyring file holds).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.bytes)
    }

    /// The id that names this key in the envelope: 1 to 254, derived from the key (the first
    /// byte of its GCM tag over nothing, a key check value), so every holder computes the same.
    pub fn id(&self) -> u8 {
        self.id
    }
}

/// The keys a node holds; the first is the primary.
#[derive(Clone, Debug, PartialEq)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A ring holding only `primary`.
    pub fn new(primary: Key) -> Self {
        Self {
            keys: vec![primary],
        }
    }

    /// A ring of `keys`, the first primary; `None` when empty.
    pub fn from_keys(keys: Vec<Key>) -> Result<Option<Self>, KeyError> {
        if keys.len() > MAX_KEYS {
            return Err(KeyError::Full);
        }
        let mut ring: Vec<Key> = Vec::with_capacity(keys.len());
        for key in keys {
            if !ring.contains(&key) {
                ring.push(key);
            }
        }
        Ok((!ring.is_empty()).then_some(Self { keys: ring }))
    }

    /// The key packets are sealed with.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// Every key, primary first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The keys with envelope id `id` (almost always one; two keys may share an id).
    pub(crate) fn with_id(&self, id: u8) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| k.id == id)
    }

    /// Adds `key` (a no-op when it is there already). True when the ring changed.
    pub fn install(&mut self, key: Key) -> Result<bool, KeyError> {
        if self.keys.contains(&key) {
            return Ok(false);
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyError::Full);
        }
        self.keys.push(key);
        Ok(true)
    }

    /// Makes the installed `key` primary. True when the ring changed.
    pub fn use_key(&mut self, key: &Key) -> Result<bool, KeyError> {
        let at = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or(KeyError::NotInstalled)?;
        if at == 0 {
            return Ok(false);
        }
        let key = self.keys.remove(at);
        self.keys.insert(0, key);
        Ok(true)
    }

    /// Removes `key` (a no-op when it is not there); the primary is refused. True when the ring
    /// changed.
    pub fn remove(&mut self, key: &Key) -> Result<bool, KeyError> {
        if self.primary() == key {
            return Err(KeyError::RemovePrimary);
        }
        let before = self.keys.len();
        self.keys.retain(|k| k != key);
        Ok(self.keys.len() != before)
    }

    /// The ring as Serf's keyring file: a JSON array of base64 keys, primary first.
    pub fn to_json(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(Key::to_base64).collect();
        serde_json::to_string_pretty(&keys).expect("a list of strings always serializes") + "\n"
    }

    /// Parses Serf's keyring file format; `None` for an empty array.
    pub fn from_json(text: &str, path: &Path) -> Result<Option<Self>, KeyError> {
        let file_err = |message: String| KeyError::File {
            path: path.display().to_string(),
            message,
        };
        let texts: Vec<String> = serde_json::from_str(text)
            .map_err(|e| file_err(format!("not a JSON array of base64 keys: {e}")))?;
        let mut keys = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            keys.push(Key::parse(t).map_err(|e| file_err(format!("key {}: {e}", i + 1)))?);
        }
        Self::from_keys(keys).map_err(|e| file_err(e.to_string()))
    }

    /// Reads the keyring file at `path`; `Ok(None)` when it does not exist or is empty.
    pub fn load(path: &Path) -> Result<Option<Self>, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_json(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Writes the ring to `path` atomically (a temporary file renamed over it), mode 0600.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::fs::write_atomically(path, self.to_json().as_bytes())
    }
}

/// A new random key of 32 bytes, base64 (what `shoal keygen` prints).
pub fn generate() -> String {
    use rand::Rng;
    // StdRng is a CSPRNG (ChaCha12) seeded from the operating system.
    let mut rng = rand::make_rng::<rand::rngs::StdRng>();
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "HvY8ubRZMgafUOWvrOadwOckVa1wN3QWAo46FVKbVN8=";
    const K2: &str = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";
    const K16: &str = "cg8StVXbQJ0gPvMd9pJItg==";

    #[test]
    fn serf_keys_of_every_size_parse_and_bad_ones_say_why() {
        assert!(Key::parse(K1).is_ok());
        assert!(Key::parse(K16).is_ok());
        assert!(Key::parse(&STANDARD.encode([7u8; 24])).is_ok());
        assert_eq!(
            Key::parse("abc").err(),
            Some(KeyError::Base64("Invalid padding".into()))
        );
        assert_eq!(
            Key::parse(&STANDARD.encode([1u8; 20])).err(),
            Some(KeyError::Length(20))
        );
    }

    #[test]
    fn key_ids_are_stable_and_never_the_reserved_values() {
        let a = Key::parse(K1).expect("key");
        assert_eq!(a.id(), Key::parse(K1).expect("key").id());
        for i in 0..200u8 {
            let id = Key::from_bytes(vec![i; 16]).expect("key").id();
            assert!((1..=254).contains(&id), "{id}");
        }
    }

    #[test]
    fn rotation_keeps_one_primary_and_refuses_removing_it() {
        let (k1, k2) = (Key::parse(K1).expect("k1"), Key::parse(K2).expect("k2"));
        let mut ring = Keyring::new(k1.clone());
        assert_eq!(ring.install(k2.clone()), Ok(true));
        assert_eq!(ring.install(k2.clone()), Ok(false));
        assert_eq!(ring.remove(&k1), Err(KeyError::RemovePrimary));
        assert_eq!(ring.use_key(&k2), Ok(true));
        assert_eq!(ring.primary(), &k2);
        assert_eq!(ring.remove(&k1), Ok(true));
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.use_key(&k1), Err(KeyError::NotInstalled));
    }

    #[test]
    fn the_keyring_file_is_serfs_json_array_and_round_trips() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keyring");
        assert_eq!(Keyring::load(&path), Ok(None));
        let mut ring = Keyring::new(Key::parse(K1).expect("k1"));
        ring.install(Key::parse(K16).expect("k16"))
            .expect("install");
        ring.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        let parsed: Vec<String> = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed, vec![K1.to_string(), K16.to_string()]);
        assert_eq!(Keyring::load(&path), Ok(Some(ring)));
        std::fs::write(&path, "[\"nope\"]").expect("write");
        let err = Keyring::load(&path).expect_err("bad key").to_string();
        assert!(err.contains("keyring") && err.contains("key 1"), "{err}");
    }

    #[test]
    fn generated_keys_are_32_random_bytes() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a).expect("b64").len(), 32);
    }
}
