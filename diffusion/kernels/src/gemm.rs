//! Shared pieces of the CPU kernels: a checked matrix product on top of the `gemm` crate, access
//! to the `f32` data of CPU tensors, and splitting a batch over threads.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut, Range};
use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use gemm::Parallelism;

/// A matrix inside a slice: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn rows_t(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// The largest index a `rows x cols` matrix with strides `rs`, `cs` touches, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst = lhs rhs` (or `dst += lhs rhs` with `accumulate`) for `dst` of `m x n` (row-major, row
/// stride `dst_rs`), `lhs` of `m x k` and `rhs` of `k x n`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        extent(m, n, dst_rs, 1) <= dst.len(),
        "gemm: destination too small"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        extent(m, k, lhs.rs, lhs.cs) <= lhs.data.len(),
        "gemm: lhs too small"
    );
    assert!(
        extent(k, n, rhs.rs, rhs.cs) <= rhs.data.len(),
        "gemm: rhs too small"
    );
    // SAFETY: the asserts above keep every index the product touches inside the three slices,
    // and `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with `len` values of scratch space (holding whatever was there before), reusing
/// this thread's buffer unless it is already in use.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// Large buffers given back by [`PoolBuf`]s, for the next ones: fresh allocations of that size
/// come straight from the system, whose zeroed pages cost a fault each.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// At most this many buffers wait in the pool.
const POOL_BUFFERS: usize = 64;

/// A buffer of `f32` from the pool, which returns to it when dropped. Its contents start as
/// whatever the previous user left.
pub struct PoolBuf(Vec<f32>);

impl PoolBuf {
    /// A buffer of `len` values: the smallest pooled one that is large enough, else a new one.
    pub fn new(len: usize) -> Self {
        keep_freed_memory();
        let found = POOL.lock().ok().and_then(|mut pool| {
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i)?;
            Some(pool.swap_remove(best))
        });
        let mut v = found.unwrap_or_default();
        v.resize(len, 0.0);
        v.truncate(len);
        Self(v)
    }

    /// A buffer of `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let mut b = Self::new(len);
        b.fill(0.0);
        b
    }
}

impl Deref for PoolBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if let Ok(mut pool) = POOL.lock() {
            if pool.len() < POOL_BUFFERS {
                pool.push(v);
            } else if let Some(smallest) = pool
                .iter_mut()
                .min_by_key(|p| p.capacity())
                .filter(|p| p.capacity() < v.capacity())
            {
                *smallest = v;
            }
        }
    }
}

/// Keeps freed memory in the process (glibc on Linux): by default glibc hands large freed blocks
/// back to the system, and every training step then pays a page fault, and the zeroing of a
/// page, for each 4 KiB of the next step's tensors. Blocks up to 32 MiB stay in the heap, which is
/// never trimmed, so its size settles at the peak of a step. Runs once, when the kernels first take
/// a buffer from the pool.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: `mallopt` only changes glibc's allocation thresholds; both values are in
            // the ranges glibc accepts (the mmap threshold at most 32 MiB on 64-bit systems).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}

/// Threads the kernels may use (`RAYON_NUM_THREADS`, else the machine's cores).
///
/// Read once: without `RAYON_NUM_THREADS`, candle counts the physical cores from
/// `/proc/cpuinfo` on every call, which costs more than a small kernel.
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// How one image's products run: inside the product when the batch is a single image, else none
/// (the batch itself is spread over the threads).
pub fn inner_parallelism(batch: usize) -> Parallelism {
    let t = threads();
    if batch <= 1 && t > 1 {
        Parallelism::Rayon(t)
    } else {
        Parallelism::None
    }
}

/// Splits `0..n` into contiguous ranges, a few per thread so that a busy core does not hold
/// everyone up.
pub fn ranges(n: usize) -> Vec<Range<usize>> {
    let chunks = n.min(threads() * 4).max(1);
    let per = n.div_ceil(chunks).max(1);
    (0..n.div_ceil(per))
        .map(|i| i * per..((i + 1) * per).min(n))
        .collect()
}

thread_local! {
    /// Is this thread running a part of a [`parallel_for`]?
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f(i)` for every `i` in `0..n`, spread over candle's CPU threads (the ones its own
/// element-wise operations use, so that no second pool of threads competes for the cores). A call
/// from inside another one runs in the calling thread. Every part runs on the caller's
/// [`KernelPath`](crate::KernelPath), so a kernel picks the same code whichever thread runs it.
pub fn parallel_for(n: usize, f: impl Fn(usize) + Sync) {
    if n <= 1 || INSIDE.with(Cell::get) {
        (0..n).for_each(f);
        return;
    }
    let path = crate::path();
    candle_core::utils::barrier_pool().execute_chunked(n, |r| {
        let outer = INSIDE.with(|inside| inside.replace(true));
        crate::with_path(path, || r.for_each(&f));
        INSIDE.with(|inside| inside.set(outer));
    });
}

/// Calls `f(images, out)` for ranges of the batch, in parallel, where `out` is the part of `dst`
/// (`per_image` values for each image) that belongs to `images`.
pub fn for_each_images(
    dst: &mut [f32],
    per_image: usize,
    f: impl Fn(Range<usize>, &mut [f32]) + Sync + Send,
) {
    let n = dst.len().checked_div(per_image).unwrap_or(0);
    let ranges = ranges(n);
    if ranges.len() <= 1 {
        if n > 0 {
            f(0..n, dst);
        }
        return;
    }
    let base = SharedMut(dst.as_mut_ptr());
    parallel_for(ranges.len(), |i| {
        let r = ranges[i].clone();
        // SAFETY: the ranges are disjoint and inside `0..n`, so each call gets its own part of
        // `dst`, which stays borrowed mutably until all calls have returned.
        let out = unsafe {
            std::slice::from_raw_parts_mut(base.at(r.start * per_image), r.len() * per_image)
        };
        f(r, out)
    });
}

/// The sum over ranges of the batch of `f(images, acc)`, where each call adds into its own
/// zeroed `acc` of length `len`.
pub fn sum_over_images(
    n: usize,
    len: usize,
    f: impl Fn(Range<usize>, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let ranges = ranges(n);
    if len == 0 {
        return vec![];
    }
    let mut parts = PoolBuf::zeros(ranges.len() * len);
    let base = SharedMut(parts.as_mut_ptr());
    parallel_for(ranges.len(), |i| {
        // SAFETY: call `i` alone writes to values `i * len..(i + 1) * len` of `parts`.
        let acc = unsafe { std::slice::from_raw_parts_mut(base.at(i * len), len) };
        f(ranges[i].clone(), acc)
    });
    let mut total = parts[..len].to_vec();
    for p in parts[len..].chunks_exact(len) {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// The `f32` values of a contiguous CPU storage.
pub fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("fast CPU kernel: expected f32 data, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fast CPU kernel: expected a contiguous tensor"),
    }
}

/// Calls `f` on the values of a CPU `f32` tensor, made contiguous first.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(cpu_f32(c, l)?),
        _ => candle_core::bail!("fast CPU kernel: expected a CPU tensor"),
    }
}

/// Does this tensor take the fast path: `f32` on the CPU?
pub fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// A raw pointer that threads writing to disjoint parts of one buffer may share (the kernels'
/// own; not exported).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);

// SAFETY: the kernels of this crate give each thread its own range of the buffer (`ranges` or
// one image per index of `parallel_for`), write only inside it, and join every thread before the
// buffer is read or dropped; sharing the pointer between those threads is then sound.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer `i` values further on.
    ///
    /// # Safety
    /// `i` must stay inside the buffer the pointer points into.
    pub(crate) unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every index runs exactly once, also for calls made from inside another call (which run
    /// in the calling thread rather than waiting for threads that are busy with the outer one).
    #[test]
    fn parallel_for_runs_each_index_once_even_when_nested() {
        let counts: Vec<AtomicUsize> = (0..8 * 16).map(|_| AtomicUsize::new(0)).collect();
        parallel_for(8, |i| {
            parallel_for(16, |j| {
                counts[i * 16 + j].fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    /// The parts that other threads run see the caller's kernel path, not their own default.
    #[test]
    fn parallel_for_runs_every_part_on_the_callers_path() {
        use crate::{with_path, KernelPath};
        for want in [KernelPath::MatrixProducts, KernelPath::Reference] {
            let seen: Vec<std::sync::Mutex<Option<KernelPath>>> =
                (0..64).map(|_| std::sync::Mutex::new(None)).collect();
            with_path(want, || {
                parallel_for(64, |i| {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                    *seen[i].lock().unwrap() = Some(crate::path());
                })
            });
            assert!(seen.iter().all(|p| *p.lock().unwrap() == Some(want)));
        }
        assert_eq!(
            crate::path(),
            KernelPath::Fast,
            "the caller's path is restored"
        );
    }

    #[test]
    fn sum_over_images_adds_every_part() {
        let total = sum_over_images(37, 3, |images, acc| {
            for img in images {
                acc[0] += 1.0;
                acc[1] += img as f32;
                acc[2] += 2.0;
            }
        });
        assert_eq!(total, vec![37.0, (0..37).sum::<usize>() as f32, 74.0]);
    }
}
