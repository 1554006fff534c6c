//! The learned cost model: gradient-boosted regression trees (squared loss)
//! over schedule + workload features, refitted after every measured batch.
//! Small data (tens to a few thousand trials) makes exact split search cheap.

/// One regression tree, nodes in a flat array (index 0 is the root).
#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<TreeNode>,
}

#[derive(Debug, Clone)]
enum TreeNode {
    Leaf(f64),
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
}

impl Tree {
    fn predict(&self, x: &[f64]) -> f64 {
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                TreeNode::Leaf(v) => return *v,
                TreeNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => i = if x[*feature] <= *threshold { *left } else { *right },
            }
        }
    }
}

/// Boosting settings.
#[derive(Debug, Clone, Copy)]
pub struct GbrtParams {
    pub rounds: usize,
    pub max_depth: usize,
    pub learning_rate: f64,
    pub min_leaf: usize,
}

impl Default for GbrtParams {
    fn default() -> Self {
        GbrtParams {
            rounds: 60,
            max_depth: 4,
            learning_rate: 0.15,
            min_leaf: 2,
        }
    }
}

/// A fitted ensemble: `base + lr * sum(tree(x))`.
#[derive(Debug, Clone, Default)]
pub struct Gbrt {
    base: f64,
    learning_rate: f64,
    trees: Vec<Tree>,
}

impl Gbrt {
    /// Fits `y ≈ f(x)`. Rows of `x` must all have the same length.
    pub fn fit(x: &[Vec<f64>], y: &[f64], p: GbrtParams) -> Gbrt {
        let n = y.len().min(x.len());
        if n == 0 {
            return Gbrt::default();
        }
        let base = y[..n].iter().sum::<f64>() / n as f64;
        let mut pred = vec![base; n];
        let mut trees = Vec::with_capacity(p.rounds);
        for _ in 0..p.rounds {
            let resid: Vec<f64> = (0..n).map(|i| y[i] - pred[i]).collect();
            let mut nodes = Vec::new();
            let idx: Vec<usize> = (0..n).collect();
            grow(x, &resid, idx, 0, p, &mut nodes);
            let tree = Tree { nodes };
            for (i, pi) in pred.iter_mut().enumerate() {
                *pi += p.learning_rate * tree.predict(&x[i]);
            }
            trees.push(tree);
        }
        Gbrt {
            base,
            learning_rate: p.learning_rate,
            trees,
        }
    }

    pub fn predict(&self, x: &[f64]) -> f64 {
        self.base + self.learning_rate * self.trees.iter().map(|t| t.predict(x)).sum::<f64>()
    }

    pub fn is_fitted(&self) -> bool {
        !self.trees.is_empty()
    }
}

/// Grows a subtree over rows `idx`, returns its node index.
fn grow(x: &[Vec<f64>], r: &[f64], idx: Vec<usize>, depth: usize, p: GbrtParams, nodes: &mut Vec<TreeNode>) -> usize {
    let mean = idx.iter().map(|&i| r[i]).sum::<f64>() / idx.len().max(1) as f64;
    let me = nodes.len();
    nodes.push(TreeNode::Leaf(mean));
    if depth >= p.max_depth || idx.len() < 2 * p.min_leaf {
        return me;
    }
    let Some((feature, threshold)) = best_split(x, r, &idx, p.min_leaf) else {
        return me;
    };
    let (l, rr): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| x[i][feature] <= threshold);
    let left = grow(x, r, l, depth + 1, p, nodes);
    let right = grow(x, r, rr, depth + 1, p, nodes);
    nodes[me] = TreeNode::Split {
        feature,
        threshold,
        left,
        right,
    };
    me
}

/// The split with the largest reduction of squared error, if any reduces it.
// `f` indexes the columns of row-major `x`, which no iterator over `x` gives.
#[allow(clippy::needless_range_loop)]
fn best_split(x: &[Vec<f64>], r: &[f64], idx: &[usize], min_leaf: usize) -> Option<(usize, f64)> {
    let n = idx.len();
    let total: f64 = idx.iter().map(|&i| r[i]).sum();
    let nf = x[idx[0]].len();
    let mut best: Option<(f64, usize, f64)> = None;
    let mut order = idx.to_vec();
    for f in 0..nf {
        order.sort_by(|&a, &b| x[a][f].partial_cmp(&x[b][f]).unwrap_or(std::cmp::Ordering::Equal));
        let mut left_sum = 0.0;
        for k in 0..n - 1 {
            left_sum += r[order[k]];
            let (lo, hi) = (x[order[k]][f], x[order[k + 1]][f]);
            if lo == hi || k + 1 < min_leaf || n - k - 1 < min_leaf {
                continue;
            }
            let nl = (k + 1) as f64;
            let nr = (n - k - 1) as f64;
            let right_sum = total - left_sum;
            // SSE reduction = sum_l^2/n_l + sum_r^2/n_r - total^2/n.
            let gain = left_sum * left_sum / nl + right_sum * right_sum / nr - total * total / n as f64;
            if gain > 1e-12 && best.is_none_or(|(g, _, _)| gain > g) {
                best = Some((gain, f, 0.5 * (lo + hi)));
            }
        }
    }
    best.map(|(_, f, t)| (f, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn fits_a_synthetic_function_and_generalizes() {
        // y = 3*[x0 > 0.5] + x1^2 - x2 (x3 is noise the model must ignore).
        let f = |x: &[f64]| 3.0 * f64::from(u8::from(x[0] > 0.5)) + x[1] * x[1] - x[2];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut sample = |n: usize| -> (Vec<Vec<f64>>, Vec<f64>) {
            let xs: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..4).map(|_| rng.gen_range(0.0..1.0)).collect())
                .collect();
            let ys = xs.iter().map(|x| f(x)).collect();
            (xs, ys)
        };
        let (xt, yt) = sample(400);
        let (xv, yv) = sample(200);
        let model = Gbrt::fit(&xt, &yt, GbrtParams::default());
        let mse = |xs: &[Vec<f64>], ys: &[f64]| {
            xs.iter()
                .zip(ys)
                .map(|(x, y)| (model.predict(x) - y).powi(2))
                .sum::<f64>()
                / ys.len() as f64
        };
        let mean = yv.iter().sum::<f64>() / yv.len() as f64;
        let var = yv.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / yv.len() as f64;
        let held_out = mse(&xv, &yv);
        assert!(held_out < 0.05 * var, "held-out mse {held_out} vs variance {var}");
        // Ranking matters more than values: the model orders held-out pairs mostly right.
        let mut agree = 0;
        let mut pairs = 0;
        for i in 0..xv.len() {
            for j in i + 1..xv.len() {
                if (yv[i] - yv[j]).abs() > 0.1 {
                    pairs += 1;
                    agree += usize::from((model.predict(&xv[i]) < model.predict(&xv[j])) == (yv[i] < yv[j]));
                }
            }
        }
        assert!(
            agree as f64 > 0.9 * pairs as f64,
            "{agree} of {pairs} pairs ordered right"
        );
    }

    #[test]
    fn empty_and_constant_data() {
        let m = Gbrt::fit(&[], &[], GbrtParams::default());
        assert!(!m.is_fitted());
        assert_eq!(m.predict(&[1.0]), 0.0);
        let x = vec![vec![1.0], vec![2.0], vec![3.0]];
        let m = Gbrt::fit(&x, &[5.0, 5.0, 5.0], GbrtParams::default());
        assert!((m.predict(&[10.0]) - 5.0).abs() < 1e-9);
    }
}
