//! The content cache of cacheable results: output by key (kind and payload hash), and
//! an age index to prune it oldest first.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use super::error::StoreError;
use super::Bytes;

/// cache key (kind and payload hash) -> output.
pub(super) const CACHE: Bytes = TableDefinition::new("v1/cache");
/// (stored_at_ms, cache key) for pruning the cache oldest first; empty values.
pub(super) const CACHE_AGE: Bytes = TableDefinition::new("v1/cache_age");

type Table<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// An index key: `at_ms` big-endian, then `rest`.
pub(super) fn age_key(at_ms: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + rest.len());
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// Split an index key back into `at_ms` and the rest; `None` for a short (corrupt) key.
fn split_age_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (at, rest) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), rest))
}

/// Drop cache entries beyond `keep` (oldest first) and any stored before `cutoff`.
pub(super) fn prune(
    cache: &mut Table<'_>,
    cache_age: &mut Table<'_>,
    keep: usize,
    cutoff: u64,
) -> Result<(), StoreError> {
    let excess = (cache_age.len()? as usize).saturating_sub(keep);
    for key in oldest(cache_age, excess, cutoff)? {
        cache_age.remove(key.as_slice())?;
        if let Some((_, cache_key)) = split_age_key(&key) {
            cache.remove(cache_key)?;
        }
    }
    Ok(())
}

/// The index keys to prune: the `excess` oldest, then any older than `cutoff`. A key too
/// short to hold a time (never written by us) is pruned too, so it cannot stick.
fn oldest(index: &Table<'_>, mut excess: usize, cutoff: u64) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut doomed = Vec::new();
    for row in index.iter()? {
        let (k, _) = row?;
        let key = k.value();
        let at = split_age_key(key).map_or(0, |(at, _)| at);
        if excess == 0 && at >= cutoff {
            break;
        }
        excess = excess.saturating_sub(1);
        doomed.push(key.to_vec());
    }
    Ok(doomed)
}
