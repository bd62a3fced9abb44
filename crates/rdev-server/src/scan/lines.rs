//! Which bytes of a changed file are new: the parts of its new contents push protection
//! scans, and for a hit, the first new line it touches. A new file, a binary file or one
//! that changed kind is new as a whole. For a text file changed in place, a line is new
//! when the previous version has no line like it: content the remote already holds in
//! this file is not a new leak, wherever it moved to. Each run of new lines is scanned
//! with one line of context on either side, so a key block whose first and last lines
//! did not change is still seen whole; a hit counts only if it touches a new line.

use std::{collections::HashSet, ops::Range};

/// Git's test for a binary file: a NUL byte in the first 8000 bytes.
const BINARY_PROBE: usize = 8000;

/// Lines of unchanged context scanned on each side of a run of new lines.
const CONTEXT: usize = 1;

/// Whether `bytes` looks binary, as git decides it.
pub(super) fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(BINARY_PROBE)].contains(&0)
}

/// The new parts of one file's contents.
#[derive(Debug)]
pub(super) enum NewParts {
    /// All of it.
    Whole,
    /// Only some lines: `starts[i]` is where line `i` begins, `added[i]` whether it is new.
    Lines {
        starts: Vec<usize>,
        added: Vec<bool>,
    },
}

impl NewParts {
    /// What of `new` is new, given the previous version `old` (when the file was changed in
    /// place and both versions are text).
    pub(super) fn of(old: Option<&[u8]>, new: &[u8]) -> Self {
        let Some(old) = old else {
            return Self::Whole;
        };
        if is_binary(old) || is_binary(new) {
            return Self::Whole;
        }
        let known: HashSet<&[u8]> = split_lines(old).map(|(_, line)| line).collect();
        let (mut starts, mut added) = (Vec::new(), Vec::new());
        for (start, line) in split_lines(new) {
            starts.push(start);
            added.push(!known.contains(line));
        }
        Self::Lines { starts, added }
    }

    /// The byte ranges of `new` to scan: everything, or each run of new lines with
    /// [`CONTEXT`] lines around it, merged where they meet.
    pub(super) fn regions(&self, len: usize) -> Vec<Range<usize>> {
        let (starts, added) = match self {
            Self::Whole => return (len > 0).then_some(0..len).into_iter().collect(),
            Self::Lines { starts, added } => (starts, added),
        };
        let end_of = |line: usize| starts.get(line + 1).copied().unwrap_or(len);
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut line = 0;
        while line < added.len() {
            if !added[line] {
                line += 1;
                continue;
            }
            let first = line;
            while line < added.len() && added[line] {
                line += 1;
            }
            let from = starts[first.saturating_sub(CONTEXT)];
            let to = end_of((line - 1 + CONTEXT).min(added.len() - 1));
            match out.last_mut() {
                Some(last) if last.end >= from => last.end = last.end.max(to),
                _ => out.push(from..to),
            }
        }
        out
    }

    /// The 1-based number of the first new line that `range` of `new` touches, or `None`
    /// when it touches only unchanged lines (context).
    pub(super) fn first_new_line(&self, new: &[u8], range: &Range<usize>) -> Option<u64> {
        match self {
            Self::Whole => {
                Some(1 + new[..range.start].iter().filter(|b| **b == b'\n').count() as u64)
            }
            Self::Lines { starts, added } => {
                let line_of = |at: usize| starts.partition_point(|s| *s <= at).saturating_sub(1);
                let last = range.end.saturating_sub(1).max(range.start);
                (line_of(range.start)..=line_of(last))
                    .find(|i| added.get(*i).copied().unwrap_or(false))
                    .map(|i| i as u64 + 1)
            }
        }
    }
}

/// `(start, line without its newline)` for every line of `bytes`.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        let end = bytes[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |p| at + p);
        at = end + 1;
        Some((start, &bytes[start..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(new: &[u8], ranges: &[Range<usize>]) -> Vec<String> {
        ranges
            .iter()
            .map(|r| String::from_utf8_lossy(&new[r.clone()]).into_owned())
            .collect()
    }

    #[test]
    fn new_files_binary_files_and_kind_changes_are_new_as_a_whole() {
        let new = b"a\nb\n";
        for parts in [
            NewParts::of(None, new),
            NewParts::of(Some(b"a\x00b"), new),
            NewParts::of(Some(b"a\n"), b"a\n\x00"),
        ] {
            assert!(matches!(parts, NewParts::Whole));
        }
        let whole = NewParts::Whole;
        assert_eq!(whole.regions(4), vec![0..4]);
        assert!(whole.regions(0).is_empty());
        assert_eq!(whole.first_new_line(new, &(2..3)), Some(2));
    }

    #[test]
    fn only_new_lines_are_scanned_with_one_line_of_context() {
        let old = b"one\ntwo\nthree\nfour\nfive\nsix\nseven\n";
        let new = b"one\ntwo\nNEW\nfour\nfive\nsix\nseven\nLAST";
        let parts = NewParts::of(Some(old), new);
        let regions = parts.regions(new.len());
        assert_eq!(
            text_of(new, &regions),
            vec!["two\nNEW\nfour\n".to_owned(), "seven\nLAST".to_owned()]
        );
        let at = |needle: &str| {
            let start = new
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap();
            start..start + needle.len()
        };
        assert_eq!(parts.first_new_line(new, &at("NEW")), Some(3));
        assert_eq!(parts.first_new_line(new, &at("two\nNEW")), Some(3));
        assert_eq!(parts.first_new_line(new, &at("two")), None, "context only");
        assert_eq!(parts.first_new_line(new, &at("LAST")), Some(8));
    }

    #[test]
    fn a_moved_line_is_not_new_and_runs_that_meet_are_merged() {
        let old = b"a\nb\nc\nd\n";
        let moved = NewParts::of(Some(old), b"d\nc\nb\na\n");
        assert!(moved.regions(8).is_empty(), "{moved:?}");
        let new = b"a\nX\nb\nY\nc\n";
        let parts = NewParts::of(Some(old), new);
        assert_eq!(
            text_of(new, &parts.regions(new.len())),
            vec!["a\nX\nb\nY\nc\n"]
        );
    }
}
