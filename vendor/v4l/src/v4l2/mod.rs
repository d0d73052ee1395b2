pub mod api;
pub use api::*;

pub mod videodev;
pub mod vidioc;
