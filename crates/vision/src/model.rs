//! The ONNX model: ONNX Runtime loaded at run time (`ORT_DYLIB_PATH`), one session, and what
//! Ultralytics' export metadata says about it (`names`, `imgsz`, `stride`, `task`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorRef, ValueType};
use tracing::{info, warn};

/// Where inference runs: `[vision] execution_provider`.
pub use switchyard_core::config::ExecutionProvider as Device;

#[derive(Clone, Debug)]
pub struct DetectorSettings {
    /// ONNX Runtime's intra-op threads; 0 leaves its default (one per core).
    pub intra_threads: usize,
    /// Whether ONNX Runtime's threads spin while waiting for work (its default). Off, they
    /// yield the cores to decoding and letterboxing between operators.
    pub spin: bool,
    pub device: Device,
    pub device_id: i32,
    /// `libonnxruntime.so`; `ORT_DYLIB_PATH` when absent.
    pub ort_library: Option<PathBuf>,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            intra_threads: 0,
            spin: true,
            device: Device::Cpu,
            device_id: 0,
            ort_library: None,
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "the ONNX Runtime library is not available: {0}. Install it (deploy/local/up.sh ort puts the \
         onnxruntime wheel's libonnxruntime.so in a venv; `source deploy/local/env.sh` then sets \
         ORT_DYLIB_PATH) or point ORT_DYLIB_PATH / [vision] ort_library at libonnxruntime.so"
    )]
    Runtime(String),
    #[error("cannot load the model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("model {path} is not a YOLOv8-style detector: {reason}")]
    Unsupported { path: String, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// What the worker needs to know about a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// `yolov8n` for `models/yolov8n.onnx`: what results name as the model.
    pub name: String,
    pub names: Vec<String>,
    /// The input's height and width.
    pub height: u32,
    pub width: u32,
    /// The most images one run takes: `None` for a dynamic batch axis.
    pub max_batch: Option<usize>,
    pub input: String,
    pub output: String,
}

impl ModelInfo {
    pub fn classes(&self) -> usize {
        self.names.len()
    }
}

/// One ONNX Runtime session and its model's description. `run` takes `&mut self`: one owner
/// (the batcher's thread) runs it, and ONNX Runtime parallelises inside each run.
#[derive(Debug)]
pub struct Detector {
    session: Session,
    info: ModelInfo,
    /// The execution provider in use, after any fallback.
    device: Device,
}

fn environment(library: Option<&Path>) -> Result<&'static Environment, ModelError> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let path = match library {
                Some(path) => path.to_path_buf(),
                None => std::env::var_os("ORT_DYLIB_PATH")
                    .map(PathBuf::from)
                    .ok_or_else(|| "ORT_DYLIB_PATH is not set".to_owned())?,
            };
            // `ort` would panic on a missing file deep inside; say which path is wrong instead.
            if !path.is_file() {
                return Err(format!("{} is not a file", path.display()));
            }
            ort::init_from(&path)
                .map_err(|error| format!("{}: {error}", path.display()))?
                .with_name("switchyard")
                .build()
                .map_err(|error| format!("{}: {error}", path.display()))
        })
        .as_ref()
        .map_err(|reason| ModelError::Runtime(reason.clone()))
}

impl Detector {
    pub fn load(path: &Path, settings: &DetectorSettings) -> Result<Detector, ModelError> {
        let environment = environment(settings.ort_library.as_deref())?;
        let load_error = |reason: String| ModelError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(load_error(
                "no such file (generate one with tools/vision/make_yolov8n.py, or export with \
                 `yolo export model=yolov8n.pt format=onnx dynamic=True`)"
                    .to_owned(),
            ));
        }
        let build = |device: Device| -> Result<Session, String> {
            let mut builder = Session::builder(environment)
                .map_err(|e| e.to_string())?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| e.to_string())?
                .with_intra_op_spinning(settings.spin)
                .map_err(|e| e.to_string())?;
            if settings.intra_threads > 0 {
                builder = builder
                    .with_intra_threads(settings.intra_threads)
                    .map_err(|e| e.to_string())?
                    .with_inter_threads(1)
                    .map_err(|e| e.to_string())?;
            }
            let provider = match device {
                Device::Cpu => None,
                Device::Cuda => Some(
                    ort::ep::CUDA::default()
                        .with_device_id(settings.device_id)
                        .build()
                        .error_on_failure(),
                ),
                Device::TensorRt => Some(
                    ort::ep::TensorRT::default()
                        .with_device_id(settings.device_id)
                        .build()
                        .error_on_failure(),
                ),
            };
            if let Some(provider) = provider {
                builder = builder
                    .with_execution_providers([provider])
                    .map_err(|e| e.to_string())?;
            }
            builder.commit_from_file(path).map_err(|e| e.to_string())
        };
        let (session, device) = match settings.device {
            Device::Cpu => (build(Device::Cpu).map_err(load_error)?, Device::Cpu),
            wanted => {
                let available = match wanted {
                    Device::Cuda => ort::ep::CUDA::is_available(),
                    Device::TensorRt => ort::ep::TensorRT::is_available(),
                    Device::Cpu => Ok(true),
                }
                .unwrap_or(false);
                let attempt = if available {
                    build(wanted)
                } else {
                    Err("this ONNX Runtime was built without it".to_owned())
                };
                match attempt {
                    Ok(session) => (session, wanted),
                    Err(reason) => {
                        warn!(message = "Execution provider unavailable; running on the CPU.", wanted = ?wanted, reason);
                        (build(Device::Cpu).map_err(load_error)?, Device::Cpu)
                    }
                }
            }
        };
        let info = describe(path, &session)?;
        info!(
            message = "Model loaded.",
            model = %path.display(),
            classes = info.classes(),
            input = format!("{}x{}", info.width, info.height),
            max_batch = info.max_batch.map_or_else(|| "dynamic".to_owned(), |n| n.to_string()),
            device = ?device,
        );
        Ok(Detector {
            session,
            info,
            device,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs `images` letterboxed inputs (`images × 3 × H × W` floats); returns the output's
    /// anchors count and its data (`images × (4 + nc) × anchors`).
    pub fn run(&mut self, input: &[f32], images: usize) -> Result<(usize, Vec<f32>), ModelError> {
        let (h, w) = (self.info.height as usize, self.info.width as usize);
        let shape = [images, 3, h, w];
        let tensor = TensorRef::from_array_view((shape, input))
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.info.input.as_str() => tensor])
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let (shape, data) = outputs[self.info.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let expected_rows = 4 + self.info.classes() as i64;
        if shape.len() != 3 || shape[0] != images as i64 || shape[1] != expected_rows {
            return Err(ModelError::Inference(format!(
                "output shape {shape:?} is not [{images}, {expected_rows}, anchors]"
            )));
        }
        Ok((shape[2] as usize, data.to_vec()))
    }
}

fn describe(path: &Path, session: &Session) -> Result<ModelInfo, ModelError> {
    let unsupported = |reason: String| ModelError::Unsupported {
        path: path.display().to_string(),
        reason,
    };
    let (Some(input), Some(output)) = (session.inputs().first(), session.outputs().first()) else {
        return Err(unsupported("it needs one input and one output".into()));
    };
    let dims = |value: &ValueType| match value {
        ValueType::Tensor { shape, .. } => Some(shape.iter().copied().collect::<Vec<i64>>()),
        _ => None,
    };
    let in_dims = dims(input.dtype())
        .filter(|d| d.len() == 4 && d[1] == 3)
        .ok_or_else(|| {
            unsupported(format!(
                "input `{}` is not a [N, 3, H, W] tensor",
                input.name()
            ))
        })?;
    let out_dims = dims(output.dtype())
        .filter(|d| d.len() == 3)
        .ok_or_else(|| {
            unsupported(format!(
                "output `{}` is not [N, 4 + nc, anchors]",
                output.name()
            ))
        })?;
    let metadata = session
        .metadata()
        .map_err(|e| unsupported(format!("unreadable metadata: {e}")))?;
    if let Some(task) = metadata.custom("task")
        && task != "detect"
    {
        return Err(unsupported(format!(
            "its task is `{task}`; only `detect` models are served"
        )));
    }
    let names = match metadata.custom("names") {
        Some(names) => {
            parse_names(&names).map_err(|e| unsupported(format!("metadata `names`: {e}")))?
        }
        None if out_dims[1] > 4 => (0..out_dims[1] - 4).map(|i| format!("class{i}")).collect(),
        None => return Err(unsupported("no `names` metadata and no class rows".into())),
    };
    if out_dims[1] > 0 && out_dims[1] != 4 + names.len() as i64 {
        return Err(unsupported(format!(
            "output has {} rows but the metadata names {} classes",
            out_dims[1],
            names.len()
        )));
    }
    let (height, width) = match metadata.custom("imgsz") {
        Some(imgsz) => {
            parse_imgsz(&imgsz).map_err(|e| unsupported(format!("metadata `imgsz`: {e}")))?
        }
        None if in_dims[2] > 0 && in_dims[3] > 0 => (in_dims[2] as u32, in_dims[3] as u32),
        None => (640, 640),
    };
    if (in_dims[2] > 0 && in_dims[2] != i64::from(height))
        || (in_dims[3] > 0 && in_dims[3] != i64::from(width))
    {
        return Err(unsupported(format!(
            "input is {}x{} but the metadata says imgsz {height}x{width}",
            in_dims[3], in_dims[2]
        )));
    }
    let name = path
        .file_stem()
        .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned());
    Ok(ModelInfo {
        path: path.to_path_buf(),
        name,
        names,
        height,
        width,
        max_batch: (in_dims[0] > 0).then_some(in_dims[0] as usize),
        input: input.name().to_owned(),
        output: output.name().to_owned(),
    })
}

/// Ultralytics writes `names` as a Python dict literal: `{0: 'person', 1: "o'clock"}`.
pub fn parse_names(text: &str) -> Result<Vec<String>, String> {
    let mut chars = text.trim().chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    if chars.next() != Some('{') {
        return Err("not a dict literal".into());
    }
    let mut pairs: Vec<(usize, String)> = Vec::new();
    loop {
        skip_ws(&mut chars);
        match chars.peek() {
            Some('}') => break,
            None => return Err("unterminated dict".into()),
            _ => {}
        }
        let mut key = String::new();
        while let Some(c) = chars.peek().copied().filter(char::is_ascii_digit) {
            key.push(c);
            chars.next();
        }
        let key: usize = key
            .parse()
            .map_err(|_| "a key is not a class id".to_owned())?;
        skip_ws(&mut chars);
        if chars.next() != Some(':') {
            return Err("expected `:` after a key".into());
        }
        skip_ws(&mut chars);
        let quote = chars
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or("a name is not a string")?;
        let mut name = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated string".into()),
                Some('\\') => match chars.next() {
                    Some('n') => name.push('\n'),
                    Some('t') => name.push('\t'),
                    Some(c) => name.push(c),
                    None => return Err("unterminated string".into()),
                },
                Some(c) if c == quote => break,
                Some(c) => name.push(c),
            }
        }
        pairs.push((key, name));
        skip_ws(&mut chars);
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            _ => return Err("expected `,` or `}`".into()),
        }
    }
    if pairs.is_empty() {
        return Err("no classes".into());
    }
    let count = pairs.iter().map(|(k, _)| k + 1).max().unwrap_or(0);
    if count > 100_000 {
        return Err("class ids are implausibly large".into());
    }
    let mut names: Vec<String> = (0..count).map(|i| format!("class{i}")).collect();
    for (key, name) in pairs {
        names[key] = name;
    }
    Ok(names)
}

/// `[640, 640]` (height, width) or `640`.
pub fn parse_imgsz(text: &str) -> Result<(u32, u32), String> {
    let numbers: Vec<u32> = text
        .trim()
        .trim_start_matches(['[', '('])
        .trim_end_matches([']', ')'])
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{text}` is not a size"))
        })
        .collect::<Result<_, _>>()?;
    match numbers[..] {
        [side] if side > 0 => Ok((side, side)),
        [h, w] if h > 0 && w > 0 => Ok((h, w)),
        _ => Err(format!("`{text}` is not [height, width]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_python_writes_them() {
        assert_eq!(
            parse_names("{0: 'person', 1: \"o'clock\", 2: 'a\\'b'}").as_deref(),
            Ok(&["person".to_owned(), "o'clock".to_owned(), "a'b".to_owned()][..])
        );
        // Gaps get placeholder names rather than shifting ids.
        assert_eq!(
            parse_names("{0: 'a', 2: 'c'}").as_deref(),
            Ok(&["a".to_owned(), "class1".to_owned(), "c".to_owned()][..])
        );
        assert!(parse_names("['a', 'b']").is_err());
        assert!(parse_names("{0: 'a'").is_err());
        assert!(parse_names("{}").is_err());
    }

    #[test]
    fn imgsz_parses_both_forms() {
        assert_eq!(parse_imgsz("[640, 640]"), Ok((640, 640)));
        assert_eq!(parse_imgsz("[384, 640]"), Ok((384, 640)));
        assert_eq!(parse_imgsz("320"), Ok((320, 320)));
        assert!(parse_imgsz("[0, 640]").is_err());
        assert!(parse_imgsz("big").is_err());
    }
}
