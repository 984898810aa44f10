//! Pictures: image grids, line charts and combined figures, shown inline in the evcxr Jupyter
//! kernel (each type has `evcxr_display`) and saved to files for the command line.
//!
//! | item | notebook output | file |
//! | --- | --- | --- |
//! | [`ImageGrid`] | `image/png` | `.png` |
//! | [`LineChart`] | `image/svg+xml` | `.svg`, `.png` |
//! | [`Figure`] | `text/html` | `.html` |
//! | [`Animation`] | `image/gif` | `.gif` |
//!
//! evcxr keeps only the last output of each MIME type in a cell, so a cell that shows several
//! pictures should put them in one [`Figure`].

pub mod animation;
pub mod bitmap;
pub mod chart;
pub mod course;
pub mod figure;
pub mod font;
pub mod grid;
pub mod output;
pub mod training;

pub use animation::Animation;
pub use bitmap::Bitmap;
pub use chart::{Legend, LineChart, Series};
pub use course::{loss_chart, moving_average, schedule_chart, schedule_figure, LossHistory};
pub use figure::Figure;
pub use grid::ImageGrid;
pub use training::TrainingLog;
