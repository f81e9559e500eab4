//! How a command's output is kept with bounded memory and cut down to a result's budget.

mod capture;
mod log;
mod text;

pub use capture::{Capture, Rendered};
pub use log::{LogRead, OutputLog};
