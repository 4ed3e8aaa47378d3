//! YOLOv8 detection through ONNX Runtime, Ultralytics-exact.
//!
//! - `decode`: bytes to RGB8, format sniffed, pixel count checked before decoding.
//! - `letterbox`: Ultralytics' LetterBox with OpenCV's bilinear resize, bit for bit.
//! - `model`: the session (ONNX Runtime loaded at run time) and the export's metadata.
//! - `batcher`: dynamic micro-batching on one inference thread.
//! - `nms`: Ultralytics' non_max_suppression and scale_boxes.
//! - `pipeline`: all of it for one image, stages overlapping across images.
//! - `worker`: the runtime's handler for vision backends' queues.
//!
//! Everything but `model`, `batcher` and `worker` is pure and tested without ONNX Runtime.

pub mod batcher;
pub mod decode;
pub mod letterbox;
pub mod model;
pub mod nms;
pub mod pipeline;
pub mod worker;
