//! The version of an object's state that `restate state edit` sends back with its change, so a
//! concurrent change in between makes the edit a no-op instead of silently overwriting it.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The version of a key's whole state: base64url (no padding) of a SHA-256 over the entries
/// sorted by key, each framed as its 8-byte big-endian position, `0x01`, key, `0x02`, value,
/// `0x03`. The same computation as the `restate` CLI's.
pub fn state_version<K: AsRef<[u8]>, V: AsRef<[u8]>>(entries: &[(K, V)]) -> String {
    let mut sorted: Vec<(&[u8], &[u8])> = entries.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (position, (key, value)) in sorted.into_iter().enumerate() {
        hasher.update((position as u64).to_be_bytes());
        hasher.update([0x01]);
        hasher.update(key);
        hasher.update([0x02]);
        hasher.update(value);
        hasher.update([0x03]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_ignores_entry_order_and_sees_every_byte() {
        let a = state_version(&[(b"b".to_vec(), b"2".to_vec()), (b"a".to_vec(), b"1".to_vec())]);
        let b = state_version(&[(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
        assert_eq!(a, b);
        assert_ne!(
            a,
            state_version(&[(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"3".to_vec())])
        );
        // Framing keeps ("ab", "") and ("a", "b") apart.
        assert_ne!(
            state_version(&[(b"ab".to_vec(), b"".to_vec())]),
            state_version(&[(b"a".to_vec(), b"b".to_vec())])
        );
        assert_eq!(state_version::<&[u8], &[u8]>(&[]).len(), 43);
    }
}
