//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) and the seeds through each
//! target, so an input that once crashed a decoder fails an ordinary `cargo test`.
//! `SHOAL_WRITE_SEEDS=1 cargo test -p shoal-fuzzing` (re)writes the seeds into the corpus.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_seed_runs_through_its_target_without_a_panic() {
    let write = std::env::var_os("SHOAL_WRITE_SEEDS").is_some();
    for (target, name, input) in shoal_fuzzing::seeds() {
        let (_, run) = shoal_fuzzing::TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("no target {target}"));
        run(&input);
        if write {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(dir.join(format!("seed-{name}")), &input).expect("write seed");
        }
    }
}

#[test]
fn the_checked_in_corpus_replays_without_a_panic() {
    let mut replayed = 0;
    for (target, run) in shoal_fuzzing::TARGETS {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let input = std::fs::read(&path).expect("corpus file");
            eprintln!("{target}: {}", path.display());
            run(&input);
            replayed += 1;
        }
    }
    assert!(
        replayed >= 20,
        "only {replayed} corpus inputs: is fuzz/corpus checked in?"
    );
}
