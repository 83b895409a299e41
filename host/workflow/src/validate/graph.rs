//! Graph checks: the steps in an order where dependencies come first, or the cycle that prevents one, and dependencies renumbered to that order.

use std::collections::{BTreeSet, HashMap};

use super::super::model::Step;
use super::super::source::Diagnostic;
use super::Validator;

impl Validator<'_> {
    /// The steps in dependency order, their `deps` and `when_deps` as
    /// positions in it; a cycle ends validation with its path.
    pub(super) fn ordered(&mut self, steps: &[Step]) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let order = match topological_order(steps) {
            Ok(order) => order,
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
                self.err(
                    format!("steps[{}]", steps[cycle[0]].index),
                    format!(
                        "steps form a cycle: {} (a step can only read steps upstream of it)",
                        names.join(" → ")
                    ),
                );
                return Err(std::mem::take(&mut self.diags));
            }
        };
        Ok(renumbered(steps, &order))
    }
}

/// `steps` in `order`, dependencies renumbered to positions in it.
fn renumbered(steps: &[Step], order: &[usize]) -> Vec<Step> {
    let position: HashMap<usize, usize> =
        order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
    let mut ordered: Vec<Step> = order.iter().map(|&i| steps[i].clone()).collect();
    let by_id: HashMap<String, usize> = ordered
        .iter()
        .enumerate()
        .map(|(pos, s)| (s.id.clone(), pos))
        .collect();
    for s in &mut ordered {
        s.deps = s.deps.iter().map(|d| position[d]).collect();
        s.deps.sort_unstable();
        s.when_deps = s
            .when
            .iter()
            .flat_map(|c| c.steps())
            .map(|id| by_id[id])
            .collect();
    }
    ordered
}

/// Steps in an order where dependencies come first, or a cycle.
fn topological_order(steps: &[Step]) -> Result<Vec<usize>, Vec<usize>> {
    let n = steps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in steps.iter().enumerate() {
        for &d in &s.deps {
            indegree[i] += 1;
            dependents[d].push(i);
        }
    }
    // Ready steps are taken in file order, so the order is stable.
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk dependencies among the leftovers until a step repeats.
    let left: BTreeSet<usize> = (0..n).filter(|i| !order.contains(i)).collect();
    let mut path = vec![*left.first().unwrap()];
    loop {
        let last = *path.last().unwrap();
        let next = steps[last]
            .deps
            .iter()
            .copied()
            .find(|d| left.contains(d))
            .unwrap();
        if let Some(pos) = path.iter().position(|&p| p == next) {
            // In data-flow order (producer → consumer), from the step first in the file.
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap();
            cycle.rotate_left(first);
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        path.push(next);
    }
}
