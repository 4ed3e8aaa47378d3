//! What `dev` needs on disk — ONNX Runtime, the model, sample photos — found where the local
//! kit (`deploy/local/up.sh ort`) puts them, or refused with the command that fixes it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;

use super::DevArgs;

const FIX: &str = "run `deploy/local/up.sh ort` from the repository (about 2 minutes on a fresh \
                   machine), or use `scripts/dev.sh`, which does it for you";

#[derive(Debug)]
pub struct Found {
    pub ort_library: PathBuf,
    pub model: PathBuf,
    /// The photos, by file name, smallest first.
    pub images: Vec<(String, Vec<u8>)>,
}

/// Where the kit installs things: `$SWITCHYARD_LOCAL_HOME`, else `~/.cache/switchyard-local`.
fn kit_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("SWITCHYARD_LOCAL_HOME") {
        return Some(PathBuf::from(home));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/switchyard-local"))
}

pub fn find(args: &DevArgs) -> anyhow::Result<Found> {
    let kit = kit_home();
    let ort_library = find_ort(kit.as_deref())?;
    let model = match &args.model {
        Some(model) => {
            anyhow::ensure!(
                model.is_file(),
                "the model {} does not exist (--model / SWITCHYARD_YOLO_MODEL)",
                model.display()
            );
            model.clone()
        }
        None => kit
            .as_deref()
            .map(|kit| kit.join("models/yolov8n.onnx"))
            .filter(|model| model.is_file())
            .with_context(|| {
                format!("the generated YOLOv8n model is missing: {FIX} (or pass --model M.onnx)")
            })?,
    };
    let images_dir = match &args.images {
        Some(dir) => dir.clone(),
        None => kit
            .as_deref()
            .map(|kit| kit.join("samples"))
            .filter(|dir| dir.is_dir())
            .with_context(|| {
                format!("the sample photos are missing: {FIX} (or pass --images DIR)")
            })?,
    };
    let images = read_images(&images_dir)?;
    Ok(Found {
        ort_library,
        model,
        images,
    })
}

/// `ORT_DYLIB_PATH` when set (and then it must exist), else the kit venv's library.
fn find_ort(kit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "ORT_DYLIB_PATH names {}, which does not exist: point it at libonnxruntime.so, or \
             unset it and {FIX}",
            path.display()
        );
        return Ok(path);
    }
    let venv = std::env::var_os("SWITCHYARD_VENV")
        .map(PathBuf::from)
        .or_else(|| kit.map(|kit| kit.join("venv")));
    venv.as_deref().and_then(venv_ort).with_context(|| {
        format!("the ONNX Runtime library was not found: {FIX} (or set ORT_DYLIB_PATH)")
    })
}

/// `lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.*` in a venv, newest
/// Python first.
fn venv_ort(venv: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    pythons.sort();
    pythons.into_iter().rev().find_map(|python| {
        let capi = python.join("site-packages/onnxruntime/capi");
        let mut libraries: Vec<PathBuf> = std::fs::read_dir(&capi)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| {
                        name.starts_with("libonnxruntime.so") && !name.contains("providers")
                    })
            })
            .collect();
        libraries.sort();
        libraries.pop()
    })
}

fn read_images(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut images = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let known = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| {
                matches!(
                    ext.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "webp"
                )
            });
        if !known {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("image")
            .to_owned();
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        images.push((name, bytes));
    }
    anyhow::ensure!(
        !images.is_empty(),
        "{} holds no JPEG, PNG or WebP images: {FIX} (or pass --images DIR)",
        dir.display()
    );
    images.sort_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.0.cmp(&b.0)));
    Ok(images)
}

fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no OS randomness: {error}"))?;
    Ok(bytes)
}

/// `n` random bytes, base64 (a Standard Webhooks secret's body).
pub fn random_base64(n: usize) -> anyhow::Result<String> {
    Ok(base64::engine::general_purpose::STANDARD.encode(random_bytes(n)?))
}

/// `n` random bytes as URL-safe text (an API key).
pub fn random_token(n: usize) -> anyhow::Result<String> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(n)?))
}
