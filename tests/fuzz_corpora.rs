//! The fuzz corpora on stable: every file under `fuzz/corpus/<target>/`
//! goes through the same entry point its `cargo fuzz` target calls
//! (`layers_gateway::fuzzing`), so CI keeps every seed and every finding
//! without a nightly toolchain. Then a bounded, seeded random run mutates
//! the seeds (bit flips, inserted and deleted bytes, splices) through the
//! same entry points: `FUZZ_ITERS` sets the count per target (default
//! 2000), `FUZZ_SEED` the seed.

use layers_gateway::fuzzing::TARGETS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn every_target_has_a_corpus_and_a_cargo_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(!corpus(name).is_empty(), "fuzz/corpus/{name} is empty");
        let target = std::fs::read_to_string(root.join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        assert!(
            target.contains(&format!("fuzzing::{name}(")),
            "{name}.rs calls another entry"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} not in fuzz/Cargo.toml"
        );
    }
}

/// One target at a time, in one test: the JWT entry sets its own
/// environment variable once, and nothing else runs meanwhile.
#[test]
fn every_corpus_file_and_random_mutations_of_them_pass_the_entry_points() {
    let iters: usize = std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    for (name, entry) in TARGETS {
        let seeds = corpus(name);
        for s in &seeds {
            entry(s);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..iters {
            let input = mutate(&mut rng, &seeds);
            let run = std::panic::catch_unwind(|| entry(&input));
            assert!(
                run.is_ok(),
                "fuzzing::{name} panicked on {:?} (add it to fuzz/corpus/{name}/ once fixed)",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..5) {
        let len = v.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=len);
                let b = *[
                    b'.', b'%', b'/', b'\\', b'"', b'{', b'}', b'=', b',', b'_', 0, 0xff,
                ]
                .get(rng.random_range(0..12))
                .unwrap();
                v.insert(i, b);
            }
            2 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(16));
                v.drain(i..i + n);
            }
            3 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let a = rng.random_range(0..other.len());
                    let b = rng.random_range(a..=other.len());
                    let at = rng.random_range(0..=len);
                    v.splice(at..at, other[a..b].iter().copied());
                }
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = rng.random();
            }
            _ => v.truncate(rng.random_range(0..=len)),
        }
    }
    v
}
