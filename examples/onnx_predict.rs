//! A deployed student outside this project: loads a file written by
//! `ard-pipeline export` in ONNX Runtime through the `ort` crate alone, and
//! classifies CIFAR-10 test images read straight from the official binary file.
//!
//! ```sh
//! cargo run --release --example onnx_predict -- runs/deploy/quickstart/model.int8.onnx \
//!     data/cifar-10-batches-bin/test_batch.bin .venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0
//! ```

use ort::session::Session;
use ort::value::TensorRef;

/// One CIFAR-10 record: a label byte, then 3 x 32 x 32 bytes (R, G, B planes).
const RECORD: usize = 1 + 3 * 32 * 32;

/// The first index of the largest value (int8 logits tie often; the first wins,
/// as in PyTorch and NumPy).
fn argmax(row: &[f32]) -> usize {
    (1..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, test_batch, library] = &args[..] else {
        return Err("usage: onnx_predict MODEL.onnx test_batch.bin libonnxruntime.so".into());
    };
    let env = ort::init_from(library)?.build()?;
    let mut session = Session::builder(&env)?.commit_from_file(model)?;

    let bytes = std::fs::read(test_batch)?;
    let n = (bytes.len() / RECORD).min(1000);
    let (mut images, mut labels) = (Vec::with_capacity(n * 3072), Vec::with_capacity(n));
    for record in bytes.chunks_exact(RECORD).take(n) {
        labels.push(usize::from(record[0]));
        // The model takes RGB in [0, 1], channels first: exactly the file's layout, scaled.
        images.extend(record[1..].iter().map(|&b| f32::from(b) / 255.0));
    }
    let input = TensorRef::from_array_view((vec![n as i64, 3, 32, 32], &images[..]))?;
    let outputs = session.run(ort::inputs![input])?;
    let (_shape, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
    let right = logits
        .chunks_exact(10)
        .zip(&labels)
        .filter(|(row, &label)| argmax(row) == label)
        .count();
    println!(
        "{model}: {right} of {n} test images right ({:.1}%)",
        100.0 * right as f64 / n as f64
    );
    Ok(())
}
