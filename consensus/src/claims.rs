//! The check of a history of coordinator answers (docs/protocol.md, "Why
//! two nodes never answer"), shared by the in-process tests, the daemon tests and the Jepsen-style
//! run: every node is asked all along who is coordinator, each answer is
//! kept with the instants it was asked and answered (one clock), and the
//! whole history must show
//! - no two nodes claiming one epoch;
//! - no claim asked after an answer naming a newer epoch was complete
//!   (anywhere): the real-time order of claims agrees with the epochs;
//! - no node naming an epoch lower than one it named before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// One answer to "who is coordinator", as a client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The node asked.
    pub node: String,
    pub invoked: Instant,
    pub completed: Instant,
    /// Whom it named (`None`: none known).
    pub holder: Option<String>,
    pub epoch: Option<u64>,
    /// It answered that it is coordinator itself.
    pub is_self: bool,
}

/// What a history showed, when it passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub answers: usize,
    pub claims: usize,
    /// Epoch -> the node that claimed it.
    pub claimants: BTreeMap<u64, String>,
}

/// Checks the whole history; the error names the first violation found.
pub fn check(answers: &[Answer]) -> Result<Summary, String> {
    let mut claimants: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for a in answers.iter().filter(|a| a.is_self) {
        let epoch = a
            .epoch
            .ok_or_else(|| format!("{} claimed the role without an epoch", a.node))?;
        claimants.entry(epoch).or_default().insert(&a.node);
    }
    for (epoch, nodes) in &claimants {
        if nodes.len() > 1 {
            return Err(format!("epoch {epoch} was claimed by {nodes:?}"));
        }
    }

    let mut by_completion: Vec<&Answer> = answers.iter().filter(|a| a.epoch.is_some()).collect();
    by_completion.sort_by_key(|a| a.completed);
    let mut claims: Vec<&Answer> = answers.iter().filter(|a| a.is_self).collect();
    claims.sort_by_key(|a| a.invoked);
    let mut newest: Option<&Answer> = None;
    let mut next = 0;
    for claim in &claims {
        while next < by_completion.len() && by_completion[next].completed < claim.invoked {
            let a = by_completion[next];
            if newest.is_none_or(|n| a.epoch > n.epoch) {
                newest = Some(a);
            }
            next += 1;
        }
        if let Some(seen) = newest.filter(|seen| seen.epoch > claim.epoch) {
            return Err(format!(
                "{} claimed epoch {:?} {:?} after {} had named {:?} under epoch {:?}",
                claim.node,
                claim.epoch,
                claim.invoked.saturating_duration_since(seen.completed),
                seen.node,
                seen.holder,
                seen.epoch
            ));
        }
    }

    let mut in_order: Vec<&Answer> = answers.iter().collect();
    in_order.sort_by_key(|a| a.invoked);
    let mut highest: HashMap<&str, u64> = HashMap::new();
    for a in in_order {
        if let Some(epoch) = a.epoch {
            let before = highest.entry(&a.node).or_insert(0);
            if epoch < *before {
                return Err(format!(
                    "{} named epoch {epoch} after epoch {}",
                    a.node, *before
                ));
            }
            *before = epoch;
        }
    }
    Ok(Summary {
        answers: answers.len(),
        claims: claims.len(),
        claimants: claimants
            .into_iter()
            .filter_map(|(e, nodes)| nodes.first().map(|n| (e, n.to_string())))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(t0: Instant, node: &str, ms: u64, epoch: u64, is_self: bool) -> Answer {
        Answer {
            node: node.into(),
            invoked: t0 + Duration::from_millis(ms),
            completed: t0 + Duration::from_millis(ms + 1),
            holder: Some(if is_self { node.into() } else { "x".into() }),
            epoch: Some(epoch),
            is_self,
        }
    }

    #[test]
    fn a_clean_history_passes_with_its_claimants() {
        let t0 = Instant::now();
        let h = [
            answer(t0, "n1", 0, 1, true),
            answer(t0, "n2", 10, 2, true),
            answer(t0, "n3", 20, 2, false),
        ];
        let summary = check(&h).expect("clean");
        assert_eq!(summary.claims, 2);
        assert_eq!(summary.claimants.get(&2).map(String::as_str), Some("n2"));
    }

    #[test]
    fn two_claimants_of_one_epoch_fail() {
        let t0 = Instant::now();
        let h = [answer(t0, "n1", 0, 1, true), answer(t0, "n2", 10, 1, true)];
        assert!(check(&h).unwrap_err().contains("claimed by"));
    }

    #[test]
    fn a_claim_after_a_newer_epoch_was_named_fails() {
        let t0 = Instant::now();
        let h = [answer(t0, "n2", 0, 2, false), answer(t0, "n1", 10, 1, true)];
        assert!(check(&h).unwrap_err().contains("after n2"));
        // Overlapping in time is not "after": both may be true at once.
        let mut overlapping = h.clone();
        overlapping[1].invoked = overlapping[0].invoked;
        assert!(check(&overlapping).is_ok());
    }

    #[test]
    fn an_epoch_going_down_on_one_node_fails() {
        let t0 = Instant::now();
        let h = [
            answer(t0, "n3", 0, 2, false),
            answer(t0, "n3", 10, 1, false),
        ];
        assert!(check(&h).unwrap_err().contains("named epoch 1 after"));
    }
}
