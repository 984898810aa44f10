//! The course's four changes to notebook 02's network, one switch each, so that each can be
//! taken out in turn (an ablation) and the same budget of training tells what it was worth.
//!
//! | change | without it |
//! | --- | --- |
//! | GroupNorm and GELU | BatchNorm and ReLU (notebook 02's), also in the time embedding and `to_vec` |
//! | rearrange pooling | 2x2 max pooling: `DownBlock` ends without its `RearrangePoolBlock` |
//! | sinusoidal time | `t / T` itself into the `EmbedBlock`s (notebook 02's), input size 1 |
//! | residuals and the global skip | `down0` returns `conv2`'s output alone; `out` sees `up2` alone |
//!
//! ```
//! use diffusion::notebook03::{Change, Changes};
//! let without = Changes::ALL.without(Change::RearrangePool);
//! assert!(!without.has(Change::RearrangePool) && without.has(Change::Residual));
//! assert_eq!(Changes::default(), Changes::ALL); // the course's network
//! ```

/// One of the four changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    GroupNormGelu,
    RearrangePool,
    SinusoidalTime,
    Residual,
}

impl Change {
    pub const ALL: [Change; 4] = [
        Change::GroupNormGelu,
        Change::RearrangePool,
        Change::SinusoidalTime,
        Change::Residual,
    ];

    /// What the change is.
    pub fn name(self) -> &'static str {
        match self {
            Change::GroupNormGelu => "GroupNorm and GELU",
            Change::RearrangePool => "rearrange pooling",
            Change::SinusoidalTime => "sinusoidal time embedding",
            Change::Residual => "residual connections and global skip",
        }
    }

    /// What the network has instead, without it.
    pub fn replaced_by(self) -> &'static str {
        match self {
            Change::GroupNormGelu => "BatchNorm and ReLU",
            Change::RearrangePool => "2x2 max pooling",
            Change::SinusoidalTime => "t / T itself",
            Change::Residual => "plain blocks, no global skip",
        }
    }
}

/// Which of the four changes a network makes; the default, [`Changes::ALL`], is the course's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Changes {
    pub group_norm_gelu: bool,
    pub rearrange_pool: bool,
    pub sinusoidal_time: bool,
    pub residual: bool,
}

impl Changes {
    /// The course's network: every change made.
    pub const ALL: Changes = Changes {
        group_norm_gelu: true,
        rearrange_pool: true,
        sinusoidal_time: true,
        residual: true,
    };

    fn switch(&mut self, change: Change) -> &mut bool {
        match change {
            Change::GroupNormGelu => &mut self.group_norm_gelu,
            Change::RearrangePool => &mut self.rearrange_pool,
            Change::SinusoidalTime => &mut self.sinusoidal_time,
            Change::Residual => &mut self.residual,
        }
    }

    /// Whether the network makes `change`.
    pub fn has(mut self, change: Change) -> bool {
        *self.switch(change)
    }

    /// The same changes but `change`.
    pub fn without(mut self, change: Change) -> Self {
        *self.switch(change) = false;
        self
    }
}

impl Default for Changes {
    fn default() -> Self {
        Self::ALL
    }
}
