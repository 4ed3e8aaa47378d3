//! Smoke tests: each real local service answers the client library the project uses.

mod aws;
mod kafka;
mod mongo;
mod onnx;
