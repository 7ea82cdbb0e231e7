//! Sharing rows out among rayon's threads for the fused blocks: a number of parts that is a
//! multiple of the thread count, of sizes that differ by at most one unit (a row, or a whole
//! sequence), so no thread is left with a short last chunk while another works.

/// `data` cut into `parts` runs of whole units of `unit` elements, as even as can be, each with
/// the index of its first unit.
pub fn even_parts(data: &mut [f32], unit: usize, parts: usize) -> Vec<(usize, &mut [f32])> {
    let units = data.len() / unit.max(1);
    let parts = parts.clamp(1, units.max(1));
    let mut rest = data;
    let mut first = 0;
    (0..parts)
        .map(|part| {
            let count = units / parts + usize::from(part < units % parts);
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(count * unit);
            rest = tail;
            first += count;
            (first - count, head)
        })
        .collect()
}

/// How many parts to cut `units` into for chunks of about `per_part` units: a multiple of the
/// thread count.
pub fn part_count(units: usize, per_part: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    threads * units.div_ceil(threads * per_part.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_whole_units_of_even_size_covering_everything() {
        let mut data: Vec<f32> = (0..32 * 3).map(|i| i as f32).collect();
        let parts = even_parts(&mut data, 3, 12);
        let sizes: Vec<usize> = parts.iter().map(|(_, p)| p.len() / 3).collect();
        assert_eq!(sizes, [3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2]);
        let firsts: Vec<usize> = parts.iter().map(|(first, _)| *first).collect();
        assert_eq!(firsts, [0, 3, 6, 9, 12, 15, 18, 21, 24, 26, 28, 30]);
        for (first, part) in &parts {
            assert_eq!(part[0], (first * 3) as f32);
        }
        assert_eq!(even_parts(&mut data, 3, 100).len(), 32);
        assert_eq!(even_parts(&mut [], 3, 4).len(), 1);
    }
}
