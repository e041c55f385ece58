//! Which sources this instance polls: `--sources` glob patterns and `shard = "N/M"` (pure).
//!
//! Several instances can share one configuration file, each with its own state file, and poll
//! disjoint sets of sources. A source belongs to shard `1 + h mod M`, where `h` is the first eight
//! bytes (big-endian) of the SHA-256 of its name: the assignment depends on the name alone, so it
//! is the same on every machine, in every release, and does not move when other sources are
//! added or removed.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::Config;

/// One shard of `count`: `index` is 1-based (`"2/3"` is the second of three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This instance's shard, 1..=count.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `"N/M"` with 1 <= N <= M; the message says what is wrong and shows a valid example.
    fn from_str(s: &str) -> Result<Shard, String> {
        let example = "write \"N/M\": this instance's number N from 1 to M and the number of instances M, e.g. \"1/3\", \"2/3\" and \"3/3\" for three instances";
        let Some((n, m)) = s.trim().split_once('/') else {
            return Err(format!("`{s}` is not a shard; {example}"));
        };
        let (Ok(index), Ok(count)) = (n.trim().parse::<u32>(), m.trim().parse::<u32>()) else {
            return Err(format!("`{s}` is not a shard; {example}"));
        };
        if count == 0 || index == 0 || index > count {
            return Err(format!(
                "`{s}`: N must be between 1 and M (and M at least 1); {example}"
            ));
        }
        Ok(Shard { index, count })
    }
}

/// The shard (1..=count) a source belongs to.
pub fn shard_of(source: &str, count: u32) -> u32 {
    let digest = Sha256::digest(source.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32 + 1
}

/// What the command line asks for: patterns (any of them selects a source) and a shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Shell-style patterns (`*`, `?`, `[a-z]`) matched against source names; empty: all.
    pub patterns: Vec<String>,
    /// A shard given on the command line; it overrides the configuration's `shard`.
    pub shard: Option<Shard>,
}

/// Why a selection cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A pattern is not a valid glob.
    #[error(
        "--sources: `{pattern}` is not a valid pattern ({reason}); use shell-style patterns such as 'hotel-*' or 'hotel-[a-m]*'"
    )]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A pattern matches no configured source (a typo would otherwise poll nothing).
    #[error("--sources: `{pattern}` matches no configured source; configured: {configured}")]
    NoMatch {
        /// The pattern.
        pattern: String,
        /// Every configured source name.
        configured: String,
    },
    /// The patterns and the shard together leave nothing to poll.
    #[error(
        "{what} selects no source, so this instance would poll nothing; the sources fall into these shards: {assignment}"
    )]
    Empty {
        /// Which selection, e.g. "shard 2/3" or "--sources 'x*' with shard 1/2".
        what: String,
        /// Each candidate source and its shard.
        assignment: String,
    },
}

impl Selection {
    /// Whether any narrowing is asked for (by the command line or by `shard`).
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty() && self.shard.is_none()
    }

    /// The names among `names` that this selection keeps, with `config_shard` used when the
    /// command line gives no shard. Every pattern must match at least one name, and the result
    /// must not be empty.
    pub fn choose<'a>(
        &self,
        names: &[&'a str],
        config_shard: Option<Shard>,
    ) -> Result<Vec<&'a str>, SelectError> {
        let mut patterns = Vec::new();
        for p in &self.patterns {
            let pattern = glob::Pattern::new(p).map_err(|e| SelectError::BadPattern {
                pattern: p.clone(),
                reason: e.msg.to_string(),
            })?;
            if !names.iter().any(|n| pattern.matches(n)) {
                return Err(SelectError::NoMatch {
                    pattern: p.clone(),
                    configured: names.join(", "),
                });
            }
            patterns.push(pattern);
        }
        let by_pattern: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| patterns.is_empty() || patterns.iter().any(|p| p.matches(n)))
            .collect();
        let shard = self.shard.or(config_shard);
        let chosen: Vec<&str> = by_pattern
            .iter()
            .copied()
            .filter(|n| shard.is_none_or(|s| shard_of(n, s.count) == s.index))
            .collect();
        if chosen.is_empty() {
            let shard = shard.unwrap_or(Shard { index: 1, count: 1 });
            let what = if patterns.is_empty() {
                format!("shard {shard}")
            } else {
                format!(
                    "--sources {} with shard {shard}",
                    self.patterns
                        .iter()
                        .map(|p| format!("'{p}'"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            };
            let assignment = by_pattern
                .iter()
                .map(|n| format!("{n} -> {}/{}", shard_of(n, shard.count), shard.count))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SelectError::Empty { what, assignment });
        }
        Ok(chosen)
    }
}

impl Config {
    /// Keeps only the sources this instance polls: those matching `selection`'s patterns (all
    /// when there are none) and in its shard (the command line's, else `shard` from the file).
    /// Endpoints are kept whole: they deliver what this instance's sources detect.
    pub fn select(mut self, selection: &Selection) -> Result<Config, SelectError> {
        if selection.shard.is_some() {
            self.shard = selection.shard;
        }
        if selection.patterns.is_empty() && self.shard.is_none() {
            return Ok(self);
        }
        let names: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
        let keep: Vec<String> = selection
            .choose(&names, self.shard)?
            .into_iter()
            .map(str::to_string)
            .collect();
        self.sources.retain(|s| keep.contains(&s.name));
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_bad_ones_say_what_is_valid() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(" 1 / 1 ".parse(), Ok(Shard { index: 1, count: 1 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "", "1/2/3", "-1/2"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("\"1/3\""), "{bad}: {e}");
        }
    }

    #[test]
    fn shard_assignment_is_stable_and_covers_every_shard() {
        // Fixed values: the assignment is part of the on-disk contract of a sharded
        // deployment (each instance's state file holds its sources), so it must never change.
        assert_eq!(shard_of("hotel", 1), 1);
        let seen: Vec<u32> = ["hotel-a", "hotel-b", "hotel-c", "hotel-d"]
            .iter()
            .map(|n| shard_of(n, 3))
            .collect();
        // 1 + (first 8 bytes of SHA-256, big-endian) mod 3, as computed independently with
        // Python's hashlib.
        assert_eq!(seen, [1, 3, 3, 1]);
        // Every name lands in 1..=M, and over many names every shard gets some.
        let mut counts = [0u32; 4];
        for i in 0..400 {
            let s = shard_of(&format!("property-{i}"), 4);
            assert!((1..=4).contains(&s));
            counts[(s - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 60), "{counts:?}");
    }

    #[test]
    fn patterns_and_shards_select_disjoint_sets_that_cover_everything() {
        let names = ["hotel-a", "hotel-b", "hostel-a", "camp"];
        let all = Selection::default();
        assert_eq!(all.choose(&names, None).unwrap(), names);
        let hotels = Selection {
            patterns: vec!["hotel-*".into()],
            shard: None,
        };
        assert_eq!(hotels.choose(&names, None).unwrap(), ["hotel-a", "hotel-b"]);
        let two = Selection {
            patterns: vec!["camp".into(), "hos*".into()],
            shard: None,
        };
        assert_eq!(two.choose(&names, None).unwrap(), ["hostel-a", "camp"]);
        // Shards partition the names.
        let count = 2;
        let mut union = Vec::new();
        for index in 1..=count {
            let s = Shard { index, count };
            let sel = Selection {
                patterns: vec![],
                shard: Some(s),
            };
            match sel.choose(&names, None) {
                Ok(chosen) => union.extend(chosen),
                Err(SelectError::Empty { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        union.sort();
        let mut expected = names.to_vec();
        expected.sort();
        assert_eq!(union, expected, "every source in exactly one shard");
        // The command line's shard wins over the file's.
        let cli = Selection {
            patterns: vec![],
            shard: Some(Shard { index: 1, count: 1 }),
        };
        assert_eq!(
            cli.choose(&names, Some(Shard { index: 2, count: 9 }))
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn patterns_that_match_nothing_and_empty_shards_are_errors() {
        let names = ["hotel-a", "hotel-b"];
        let typo = Selection {
            patterns: vec!["hotle-*".into()],
            shard: None,
        };
        let e = typo.choose(&names, None).unwrap_err().to_string();
        assert!(
            e.contains("--sources") && e.contains("hotle-*") && e.contains("hotel-a, hotel-b"),
            "{e}"
        );
        let bad = Selection {
            patterns: vec!["[".into()],
            shard: None,
        };
        assert!(matches!(
            bad.choose(&names, None),
            Err(SelectError::BadPattern { .. })
        ));
        // With more shards than sources some shard is empty: say where each source went.
        let empty = (1..=8)
            .map(|index| Selection {
                patterns: vec![],
                shard: Some(Shard { index, count: 8 }),
            })
            .find_map(|s| s.choose(&names, None).err())
            .expect("some shard of 8 is empty with 2 sources");
        let e = empty.to_string();
        assert!(
            e.contains("selects no source") && e.contains("hotel-a -> "),
            "{e}"
        );
    }
}
