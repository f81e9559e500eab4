//! How a command's output is kept with bounded memory, cleaned for a model to read, and cut
//! down to a result's budget.

mod capture;
mod clean;
mod fit;
mod log;
mod text;

pub use capture::{Capture, Rendered};
pub use log::{LogRead, OutputLog};
