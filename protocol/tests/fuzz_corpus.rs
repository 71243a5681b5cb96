//! The fuzz corpus kept in `protocol/fuzz/corpus` (what the fuzzers found
//! worth keeping, crashes fixed since included) replays through every
//! target on the stable toolchain; the seeds are written from
//! `fuzzing::seeds` by the ignored test.

use std::path::PathBuf;

use passerelle_protocol::fuzzing::{TARGETS, seeds};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn the_fuzz_corpus_replays() {
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = corpus().join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            target(&bytes);
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "the corpus has inputs for every target");
}

#[test]
#[ignore = "writes the seed corpus into protocol/fuzz/corpus"]
fn write_the_seed_corpus() {
    use sha2::Digest;
    for (target, bytes) in seeds() {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        // Only inputs the corpus lacks, named by their content.
        let held = std::fs::read_dir(&dir).unwrap().any(|e| std::fs::read(e.unwrap().path()).unwrap() == bytes);
        if !held {
            let name = format!("seed-{}", hex::encode(&sha2::Sha256::digest(&bytes)[..10]));
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
