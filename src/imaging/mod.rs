//! Image decoding, geometry (resize/crop shared by pixels, label maps and keypoints) and
//! encoding.

pub mod decode;
pub mod encode;
pub mod geometry;
