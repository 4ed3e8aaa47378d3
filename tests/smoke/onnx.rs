use std::path::Path;

use ndarray::Array2;
use ort::session::Session;
use ort::value::TensorRef;
use switchyard_tests::endpoint;

/// `tests/fixtures/add_relu.onnx`: y = relu(x + b), x: float32 [N, 4], b = [-1, 0, 1, 2].
/// Made by `tests/fixtures/make_add_relu.py`.
const MODEL: &[u8] = include_bytes!("../fixtures/add_relu.onnx");

#[test]
fn runs_a_tiny_model_through_ort() {
    let dylib = endpoint("ORT_DYLIB_PATH");
    // `ort` panics deep inside if the library is missing; check first for a clear error.
    assert!(
        Path::new(&dylib).is_file(),
        "ORT_DYLIB_PATH={dylib} is not a file"
    );
    let environment = ort::init_from(&dylib).unwrap().build().unwrap();

    let mut session = Session::builder(&environment)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_memory(MODEL)
        .unwrap();
    assert_eq!(session.inputs()[0].name(), "x");
    assert_eq!(session.outputs()[0].name(), "y");

    let x =
        Array2::from_shape_vec((2, 4), vec![0.0f32, 0.0, 0.0, 0.0, 1.5, -3.0, -0.5, 1.0]).unwrap();
    let outputs = session
        .run(ort::inputs!["x" => TensorRef::from_array_view(&x).unwrap()])
        .unwrap();
    let y = outputs["y"].try_extract_array::<f32>().unwrap();
    assert_eq!(y.shape(), &[2, 4]);
    let expected = [0.0f32, 0.0, 1.0, 2.0, 0.5, 0.0, 0.5, 3.0];
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), expected);
}
