use std::collections::HashSet;

use rand::RngCore;

use crate::stream::permutation;
use crate::{doc_rng, Cursor, DocStream, StreamDoc};

fn take(s: &mut DocStream, n: usize) -> Vec<StreamDoc> {
    (0..n).map(|_| s.next_doc()).collect()
}

#[test]
fn ranks_are_disjoint_and_cover_floor_n_over_world_each_epoch() {
    let (n, world) = (103, 4);
    let per_rank = n / world;
    let mut streams: Vec<DocStream> = (0..world).map(|r| DocStream::new(n, 9, r, world).unwrap()).collect();
    for epoch in 0..3u64 {
        let mut seen = HashSet::new();
        for s in &mut streams {
            assert_eq!(s.docs_per_epoch(), per_rank);
            for d in take(s, per_rank) {
                assert_eq!(d.epoch, epoch);
                assert!(d.index < n);
                assert!(seen.insert(d.index), "doc {} given twice in epoch {epoch}", d.index);
            }
        }
        assert_eq!(seen.len(), per_rank * world);
    }
}

#[test]
fn each_epoch_is_a_new_permutation() {
    let n = 50;
    let mut s = DocStream::new(n, 1, 0, 1).unwrap();
    let e0: Vec<usize> = take(&mut s, n).iter().map(|d| d.index).collect();
    let e1: Vec<StreamDoc> = take(&mut s, n);
    assert!(e1.iter().all(|d| d.epoch == 1));
    let e1: Vec<usize> = e1.iter().map(|d| d.index).collect();
    for e in [&e0, &e1] {
        let mut sorted = e.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }
    assert_ne!(e0, e1);
    assert_ne!(e0, (0..n).collect::<Vec<_>>(), "epoch 0 is shuffled");
    // Another seed, another order.
    let other: Vec<usize> = take(&mut DocStream::new(n, 2, 0, 1).unwrap(), n).iter().map(|d| d.index).collect();
    assert_ne!(e0, other);
}

#[test]
fn resume_from_cursor_continues_exactly() {
    let (n, world) = (37, 3);
    for rank in 0..world {
        let mut whole = DocStream::new(n, 77, rank, world).unwrap();
        let uninterrupted = take(&mut whole, 100);
        // Stop points inside an epoch, at an epoch end (12 per epoch) and after several.
        for stop in [0, 1, 5, 11, 12, 13, 24, 50] {
            let mut first = DocStream::new(n, 77, rank, world).unwrap();
            let head = take(&mut first, stop);
            let cursor = first.cursor();
            // Cursors go through JSON in checkpoints.
            let cursor: Cursor = serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
            let mut resumed = DocStream::resume(n, 77, rank, world, cursor).unwrap();
            assert_eq!(resumed.cursor(), cursor);
            let tail = take(&mut resumed, 100 - stop);
            assert_eq!([head, tail].concat(), uninterrupted, "rank {rank}, stopped after {stop}");
        }
    }
}

#[test]
fn invalid_shapes_are_errors() {
    let msg = |r: anyhow::Result<DocStream>| match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    let e = msg(DocStream::new(3, 0, 0, 4));
    assert!(e.contains("3 documents") && e.contains("4 ranks"), "{e}");
    assert!(msg(DocStream::new(0, 0, 0, 1)).contains("0 documents"));
    assert!(msg(DocStream::new(10, 0, 0, 0)).contains("world size"));
    assert!(msg(DocStream::new(10, 0, 2, 2)).contains("rank 2"));
    let e = msg(DocStream::resume(10, 0, 0, 2, Cursor { epoch: 0, offset: 6 }));
    assert!(e.contains("offset 6"), "{e}");
    assert!(DocStream::resume(10, 0, 0, 2, Cursor { epoch: 3, offset: 5 }).is_ok());
    assert!(DocStream::new(4, 0, 3, 4).is_ok());
}

#[test]
fn doc_rng_is_reproducible_and_keyed_by_every_input() {
    let draw = |seed, epoch, doc, salt| {
        let mut r = doc_rng(seed, epoch, doc, salt);
        [r.next_u64(), r.next_u64()]
    };
    let base = draw(1, 2, 3, 4);
    assert_eq!(base, draw(1, 2, 3, 4));
    let others = [draw(9, 2, 3, 4), draw(1, 9, 3, 4), draw(1, 2, 9, 4), draw(1, 2, 3, 9)];
    assert!(others.iter().all(|o| *o != base));
    let d = StreamDoc { index: 3, epoch: 2 };
    assert_eq!(d.rng(1, 4).next_u64(), base[0]);
}

/// Pins the shuffle: a change here would make old checkpoints resume in a different order.
#[test]
fn permutation_is_pinned() {
    assert_eq!(permutation(10, 42, 0), PINNED_42_0);
    assert_eq!(permutation(0, 1, 1), Vec::<u32>::new());
    assert_eq!(permutation(1, 1, 1), vec![0]);
    assert_eq!(doc_rng(1, 2, 3, 4).next_u64(), 1223844302487303164);
}

const PINNED_42_0: [u32; 10] = [4, 6, 8, 9, 2, 3, 0, 5, 1, 7];
