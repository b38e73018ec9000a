//! A multiset of `f64` with order statistics: insert, remove one copy of a
//! value, and the `k`-th smallest, each in O(log n) expected time. A treap
//! (a binary search tree kept balanced by random heap priorities) in one
//! arena: 24 bytes per value, no allocation once it has held its most
//! values. Used by the rolling median of `median_mad`.

/// No node.
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    value: f64,
    left: u32,
    right: u32,
    /// Nodes in this subtree.
    size: u32,
    /// Heap priority: a parent's is at least its children's.
    priority: u32,
}

/// The multiset.
#[derive(Clone, Debug)]
pub struct OrderTree {
    nodes: Vec<Node>,
    /// Arena slots of removed values, reused first.
    free: Vec<u32>,
    root: u32,
    /// xorshift32 state for priorities.
    rng: u32,
}

impl Default for OrderTree {
    fn default() -> Self {
        OrderTree {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            rng: 0x9e37_79b9,
        }
    }
}

impl OrderTree {
    /// An empty multiset with room for `capacity` values.
    pub fn with_capacity(capacity: usize) -> Self {
        OrderTree {
            nodes: Vec::with_capacity(capacity),
            ..OrderTree::default()
        }
    }

    /// Values held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>() + self.free.capacity() * 4
    }

    fn size(&self, node: u32) -> u32 {
        if node == NIL {
            0
        } else {
            self.nodes[node as usize].size
        }
    }

    fn update(&mut self, node: u32) {
        let n = self.nodes[node as usize];
        self.nodes[node as usize].size = 1 + self.size(n.left) + self.size(n.right);
    }

    /// Adds one copy of `value` (finite).
    pub fn insert(&mut self, value: f64) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let node = Node {
            value,
            left: NIL,
            right: NIL,
            size: 1,
            priority: self.rng,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 values")
            }
        };
        let (below, rest) = self.split(self.root, value);
        let joined = self.merge(below, id);
        self.root = self.merge(joined, rest);
    }

    /// Removes one copy of `value`; returns whether there was one.
    pub fn remove(&mut self, value: f64) -> bool {
        let (root, removed) = self.remove_from(self.root, value);
        self.root = root;
        removed
    }

    fn remove_from(&mut self, node: u32, value: f64) -> (u32, bool) {
        if node == NIL {
            return (NIL, false);
        }
        let n = self.nodes[node as usize];
        if value == n.value {
            self.free.push(node);
            return (self.merge(n.left, n.right), true);
        }
        let removed = if value < n.value {
            let (left, removed) = self.remove_from(n.left, value);
            self.nodes[node as usize].left = left;
            removed
        } else {
            let (right, removed) = self.remove_from(n.right, value);
            self.nodes[node as usize].right = right;
            removed
        };
        if removed {
            self.update(node);
        }
        (node, removed)
    }

    /// Splits the subtree at `node` into the values below `value` and the
    /// rest.
    fn split(&mut self, node: u32, value: f64) -> (u32, u32) {
        if node == NIL {
            return (NIL, NIL);
        }
        let n = self.nodes[node as usize];
        if n.value < value {
            let (mid, right) = self.split(n.right, value);
            self.nodes[node as usize].right = mid;
            self.update(node);
            (node, right)
        } else {
            let (left, mid) = self.split(n.left, value);
            self.nodes[node as usize].left = mid;
            self.update(node);
            (left, node)
        }
    }

    /// Joins two subtrees, every value of `low` at most every value of
    /// `high`.
    fn merge(&mut self, low: u32, high: u32) -> u32 {
        if low == NIL {
            return high;
        }
        if high == NIL {
            return low;
        }
        if self.nodes[low as usize].priority >= self.nodes[high as usize].priority {
            let right = self.nodes[low as usize].right;
            let merged = self.merge(right, high);
            self.nodes[low as usize].right = merged;
            self.update(low);
            low
        } else {
            let left = self.nodes[high as usize].left;
            let merged = self.merge(low, left);
            self.nodes[high as usize].left = merged;
            self.update(high);
            high
        }
    }

    /// The `k`-th smallest value (0-based); `k` must be below `len()`.
    pub fn select(&self, mut k: u32) -> f64 {
        let mut node = self.root;
        loop {
            let n = &self.nodes[node as usize];
            let left = self.size(n.left);
            if k < left {
                node = n.left;
            } else if k == left {
                return n.value;
            } else {
                k -= left + 1;
                node = n.right;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_a_sorted_vec(
            ops in prop::collection::vec((any::<bool>(), 0u8..20), 0..400),
        ) {
            let mut tree = OrderTree::default();
            let mut sorted: Vec<f64> = Vec::new();
            for (insert, v) in ops {
                let value = f64::from(v) * 0.5;
                if insert {
                    tree.insert(value);
                    let at = sorted.partition_point(|&x| x < value);
                    sorted.insert(at, value);
                } else {
                    let had = sorted.iter().position(|&x| x == value);
                    prop_assert_eq!(tree.remove(value), had.is_some());
                    if let Some(at) = had {
                        sorted.remove(at);
                    }
                }
                prop_assert_eq!(tree.len(), sorted.len());
                for (k, &want) in sorted.iter().enumerate() {
                    prop_assert_eq!(tree.select(k as u32), want);
                }
            }
        }
    }

    #[test]
    fn stays_shallow_on_sorted_input() {
        // A plain BST would degenerate into a list here; the treap keeps
        // the recursion shallow (this would overflow the stack otherwise).
        let mut tree = OrderTree::with_capacity(200_000);
        for i in 0..200_000 {
            tree.insert(f64::from(i));
        }
        assert_eq!(tree.select(123_456), 123_456.0);
        for i in 0..100_000 {
            assert!(tree.remove(f64::from(i)));
        }
        assert_eq!((tree.len(), tree.select(0)), (100_000, 100_000.0));
    }
}
