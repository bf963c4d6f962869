//! A key/value cache with preallocated, growable buffers.
//!
//! Each layer's keys and values live in `[B, Hkv, capacity, D]` buffers; a forward pass writes its
//! new slots in place and attends over the filled prefix. Growing doubles the capacity, so a
//! decode loop of N steps copies O(N) elements in total instead of O(N²) with `cat`.
use tch::Tensor;

pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Slots filled by completed forward passes.
    len: i64,
    /// Slots to reserve when a layer's buffers are first allocated.
    initial_capacity: i64,
}

impl KvCache {
    pub fn new(num_layers: usize, initial_capacity: i64) -> KvCache {
        KvCache { layers: (0..num_layers).map(|_| None).collect(), len: 0, initial_capacity }
    }

    /// Slots already cached (the `past` of the next forward pass).
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes this forward pass's `k`, `v` (`[B, Hkv, T, D]`) for `layer` after the cached slots and
    /// returns views of all slots so far. The cache length advances in [`KvCache::advance`].
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let needed = self.len + t;
        let slot = &mut self.layers[layer];
        let capacity = slot.as_ref().map_or(0, |(kb, _)| kb.size()[2]);
        if needed > capacity {
            let new_capacity = needed.max(2 * capacity).max(self.initial_capacity);
            let grow = |old: Option<&Tensor>, new: &Tensor| {
                let mut shape = new.size();
                shape[2] = new_capacity;
                let buf = Tensor::zeros(&shape, (new.kind(), new.device()));
                if let Some(old) = old {
                    buf.narrow(2, 0, self.len).copy_(&old.narrow(2, 0, self.len));
                }
                buf
            };
            let (kb, vb) = match slot.as_ref() {
                Some((kb, vb)) => (grow(Some(kb), k), grow(Some(vb), v)),
                None => (grow(None, k), grow(None, v)),
            };
            *slot = Some((kb, vb));
        }
        let (kb, vb) = slot.as_ref().expect("allocated above");
        kb.narrow(2, self.len, t).copy_(k);
        vb.narrow(2, self.len, t).copy_(v);
        (kb.narrow(2, 0, needed), vb.narrow(2, 0, needed))
    }

    /// Called by the model once all layers have appended `t` slots.
    pub fn advance(&mut self, t: i64) {
        self.len += t;
    }

    /// Reorders or repeats batch rows, e.g. to share one prefilled context across G thoughts
    /// (`index = [0,0,..,1,1,..]`). `index` is an int64 tensor of row numbers.
    pub fn select_rows(&mut self, index: &Tensor) {
        for (kb, vb) in self.layers.iter_mut().flatten() {
            let index = index.to_device(kb.device());
            *kb = kb.index_select(0, &index);
            *vb = vb.index_select(0, &index);
        }
    }
}
