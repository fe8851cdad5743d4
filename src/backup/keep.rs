//! Retention: which backups a policy's `keep` rules keep. Pure.
//!
//! Backups of one policy and database, newest first: the newest `last`; the
//! newest of each of the last `daily` days that have one; likewise per ISO
//! week (`weekly`) and per month (`monthly`); and always the newest verified
//! backup. Everything else is pruned.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};

use crate::model::Keep;

/// Indices (into `backups`, which are (finished, verified)) to keep.
pub fn keep(backups: &[(DateTime<Utc>, bool)], rules: &Keep) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by(|a, b| backups[*b].0.cmp(&backups[*a].0));
    let mut kept = BTreeSet::new();
    kept.extend(order.iter().take(rules.last.unwrap_or(0) as usize));
    let mut by = |n: Option<u32>, key: &dyn Fn(&DateTime<Utc>) -> (i32, u32)| {
        let mut seen = BTreeSet::new();
        for &i in &order {
            if seen.len() >= n.unwrap_or(0) as usize {
                break;
            }
            if seen.insert(key(&backups[i].0)) {
                kept.insert(i);
            }
        }
    };
    by(rules.daily, &|t| (t.year(), t.ordinal()));
    by(rules.weekly, &|t| (t.iso_week().year(), t.iso_week().week()));
    by(rules.monthly, &|t| (t.year(), t.month()));
    if let Some(&i) = order.iter().find(|&&i| backups[i].1) {
        kept.insert(i);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap()
    }

    #[test]
    fn last_daily_weekly_monthly_and_the_newest_verified() {
        // Two backups a day from March 1 to March 20 (a Sunday is March 1).
        let backups: Vec<(DateTime<Utc>, bool)> =
            (1..=20).flat_map(|d| [(at(d, 3), d == 2), (at(d, 15), false)]).collect();
        let idx = |d: u32, h: u32| backups.iter().position(|b| b.0 == at(d, h)).unwrap();

        let k = keep(&backups, &Keep { last: Some(3), ..Default::default() });
        assert_eq!(k, BTreeSet::from([idx(20, 15), idx(20, 3), idx(19, 15), idx(2, 3)]), "3 newest + newest verified");

        let k = keep(&backups, &Keep { daily: Some(2), ..Default::default() });
        assert_eq!(k, BTreeSet::from([idx(20, 15), idx(19, 15), idx(2, 3)]), "newest of each of the last 2 days");

        let k = keep(&backups, &Keep { weekly: Some(2), ..Default::default() });
        // ISO weeks: Mar 16-22 and Mar 9-15.
        assert_eq!(k, BTreeSet::from([idx(20, 15), idx(15, 15), idx(2, 3)]));

        let k = keep(&backups, &Keep { monthly: Some(6), ..Default::default() });
        assert_eq!(k, BTreeSet::from([idx(20, 15), idx(2, 3)]), "one month has backups");

        let k = keep(&backups, &Keep::default());
        assert_eq!(k, BTreeSet::from([idx(2, 3)]), "never the newest verified backup");
    }
}
