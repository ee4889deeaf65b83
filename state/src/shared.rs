//! Reference counting of files shared by incremental checkpoints, and retention.
//!
//! An lsm checkpoint references a chain of files in `<job>/shared/`; consecutive
//! checkpoints share most of them. [`SharedStateRegistry`] counts, for every shared file,
//! the retained checkpoints that reference it: [`register`](SharedStateRegistry::register)
//! a completed checkpoint's files, [`release`](SharedStateRegistry::release) a discarded
//! checkpoint and get back the files nobody references any more (to delete).
//! [`CheckpointRetention`] decides which checkpoints to discard under
//! `state.checkpoints.num-retained`. Both are pure state: the checkpoint coordinator owns
//! them, feeds them completions and performs the deletions, and rebuilds them on recovery
//! by registering the retained checkpoints' handles again.
//!
//! Paths are compared after lexical normalization (`chk-3/../shared/x` and
//! `chk-4/../shared/x` are the same file), so callers may pass
//! [`StateFileRef::resolve`](crate::snapshot::StateFileRef::resolve)d paths as they are.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

/// Lexically normalizes a path: drops `.` components and resolves `..` against the
/// preceding component (no file-system access, no symlink resolution).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped =
                    matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped && !matches!(out.components().next_back(), Some(Component::RootDir)) {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Which retained checkpoints reference which shared files.
#[derive(Debug, Default, Clone)]
pub struct SharedStateRegistry {
    /// Per shared file: the checkpoints referencing it.
    refs: BTreeMap<PathBuf, BTreeSet<u64>>,
    /// Per checkpoint: its shared files.
    by_checkpoint: BTreeMap<u64, BTreeSet<PathBuf>>,
}

impl SharedStateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that retained checkpoint `checkpoint_id` references `files` (registering
    /// the same checkpoint again adds to its files).
    pub fn register(&mut self, checkpoint_id: u64, files: &[PathBuf]) {
        let mine = self.by_checkpoint.entry(checkpoint_id).or_default();
        for f in files {
            let f = normalize(f);
            self.refs
                .entry(f.clone())
                .or_default()
                .insert(checkpoint_id);
            mine.insert(f);
        }
    }

    /// Forgets checkpoint `checkpoint_id`; returns the files no retained checkpoint
    /// references any more (sorted), which the caller deletes. Unknown ids release
    /// nothing.
    pub fn release(&mut self, checkpoint_id: u64) -> Vec<PathBuf> {
        let Some(files) = self.by_checkpoint.remove(&checkpoint_id) else {
            return Vec::new();
        };
        let mut unreferenced = Vec::new();
        for f in files {
            if let Some(holders) = self.refs.get_mut(&f) {
                holders.remove(&checkpoint_id);
                if holders.is_empty() {
                    self.refs.remove(&f);
                    unreferenced.push(f);
                }
            }
        }
        unreferenced
    }

    /// How many retained checkpoints reference `file`.
    pub fn ref_count(&self, file: &Path) -> usize {
        self.refs.get(&normalize(file)).map_or(0, BTreeSet::len)
    }

    /// Every referenced shared file, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.refs.keys().cloned().collect()
    }

    /// The registered checkpoints, ascending.
    pub fn checkpoints(&self) -> Vec<u64> {
        self.by_checkpoint.keys().copied().collect()
    }
}

/// `state.checkpoints.num-retained`: keeps the newest N completed checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointRetention {
    num_retained: usize,
    retained: VecDeque<u64>,
}

impl CheckpointRetention {
    /// Retains `num_retained` checkpoints (at least 1: the latest completed checkpoint is
    /// what recovery needs).
    pub fn new(num_retained: usize) -> Self {
        Self {
            num_retained: num_retained.max(1),
            retained: VecDeque::new(),
        }
    }

    /// Records a newly completed checkpoint; returns the checkpoints to discard, oldest
    /// first. Completions arrive in ascending order; an id not newer than the latest
    /// retained one is discarded right away (it is subsumed).
    pub fn add_completed(&mut self, checkpoint_id: u64) -> Vec<u64> {
        if self
            .retained
            .back()
            .is_some_and(|&last| checkpoint_id <= last)
        {
            return if self.retained.contains(&checkpoint_id) {
                Vec::new()
            } else {
                vec![checkpoint_id]
            };
        }
        self.retained.push_back(checkpoint_id);
        let excess = self.retained.len().saturating_sub(self.num_retained);
        self.retained.drain(..excess).collect()
    }

    /// The retained checkpoints, ascending.
    pub fn retained(&self) -> Vec<u64> {
        self.retained.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn normalizes_parent_components() {
        assert_eq!(
            normalize(Path::new("/j/chk-3/../shared/x")),
            p("/j/shared/x")
        );
        assert_eq!(normalize(Path::new("a/./b/../c")), p("a/c"));
        assert_eq!(normalize(Path::new("../x")), p("../x"));
        assert_eq!(normalize(Path::new("/../x")), p("/x"));
    }

    #[test]
    fn shared_files_live_while_any_checkpoint_references_them() {
        let mut r = SharedStateRegistry::new();
        r.register(1, &[p("/j/chk-1/../shared/base")]);
        r.register(2, &[p("/j/chk-2/../shared/base"), p("/j/shared/d2")]);
        assert_eq!(r.ref_count(Path::new("/j/shared/base")), 2);
        assert!(r.release(1).is_empty());
        r.register(
            3,
            &[p("/j/shared/base"), p("/j/shared/d2"), p("/j/shared/d3")],
        );
        assert!(r.release(2).is_empty());
        r.register(4, &[p("/j/shared/full4")]);
        assert_eq!(
            r.release(3),
            vec![p("/j/shared/base"), p("/j/shared/d2"), p("/j/shared/d3")]
        );
        assert_eq!(r.files(), vec![p("/j/shared/full4")]);
        assert!(r.release(3).is_empty());
        assert_eq!(r.checkpoints(), vec![4]);
    }

    #[test]
    fn retention_keeps_the_newest_n() {
        let mut t = CheckpointRetention::new(2);
        assert!(t.add_completed(1).is_empty());
        assert!(t.add_completed(2).is_empty());
        assert_eq!(t.add_completed(3), vec![1]);
        assert_eq!(t.add_completed(5), vec![2]);
        assert_eq!(t.add_completed(4), vec![4]);
        assert!(t.add_completed(5).is_empty());
        assert_eq!(t.retained(), vec![3, 5]);
        let mut one = CheckpointRetention::new(0);
        assert!(one.add_completed(7).is_empty());
        assert_eq!(one.add_completed(8), vec![7]);
    }
}
