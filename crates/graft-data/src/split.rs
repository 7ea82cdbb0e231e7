//! Seeded train/validation splits.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Splits `0..n` into (train, valid) indices with `fraction` of them (at least one) held out,
/// shuffled with `seed`. Both lists come back sorted so file order is kept. With fewer than two
/// examples nothing is left to train on; callers refuse that first.
pub fn train_valid_split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let n_valid = ((n as f64 * fraction).round() as usize)
        .clamp(1, n.saturating_sub(1).max(1))
        .min(n);
    let mut valid = order[..n_valid].to_vec();
    let mut train = order[n_valid..].to_vec();
    valid.sort_unstable();
    train.sort_unstable();
    (train, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (train, valid) = train_valid_split(100, 0.1, 42);
        assert_eq!((train.len(), valid.len()), (90, 10));
        assert_eq!(
            train_valid_split(100, 0.1, 42),
            (train.clone(), valid.clone())
        );
        assert_ne!(train_valid_split(100, 0.1, 7).1, valid);
        let mut all: Vec<usize> = train.into_iter().chain(valid).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn tiny_sets_do_not_panic() {
        assert_eq!(train_valid_split(1, 0.1, 1), (vec![], vec![0]));
        assert_eq!(train_valid_split(0, 0.1, 1), (vec![], vec![]));
        assert_eq!(train_valid_split(2, 0.1, 1).1.len(), 1);
    }
}
