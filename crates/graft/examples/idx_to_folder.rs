//! Turns MNIST-style IDX files (Fashion-MNIST as Debian's `dataset-fashion-mnist` ships it) into
//! an image folder graft trains on: `OUT/<class name>/<index>.png`.
//!
//! ```sh
//! cargo run --release --example idx_to_folder -- \
//!     IMAGES.idx3-ubyte.gz LABELS.idx1-ubyte.gz OUT [--per-class N]
//! ```
//! `--per-class N` keeps the first N images of each class (a small, balanced subset).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Fashion-MNIST's class names, in label order.
const CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// The bytes of a file, gunzipped when it ends in `.gz`.
fn read(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not valid gzip", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The dimensions and payload of an IDX file of unsigned bytes.
fn idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{}: not an IDX file of unsigned bytes", path.display());
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        bail!("{}: truncated IDX header", path.display());
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let payload = bytes[header..].to_vec();
    if payload.len() != dims.iter().product::<usize>() {
        bail!(
            "{}: payload does not match dimensions {dims:?}",
            path.display()
        );
    }
    Ok((dims, payload))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut positional, mut per_class) = (Vec::new(), None);
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--per-class" {
            per_class = Some(
                args.get(i + 1)
                    .context("--per-class needs N")?
                    .parse::<usize>()?,
            );
            i += 2;
        } else {
            positional.push(PathBuf::from(&args[i]));
            i += 1;
        }
    }
    let [images, labels, out] = positional.as_slice() else {
        bail!("usage: idx_to_folder IMAGES LABELS OUT [--per-class N]");
    };
    let (dims, pixels) = idx(images)?;
    let (label_dims, label_bytes) = idx(labels)?;
    let [n, h, w] = dims[..] else {
        bail!(
            "{}: expected [n, rows, cols], found {dims:?}",
            images.display()
        );
    };
    if label_dims != [n] {
        bail!(
            "{} holds {label_dims:?} labels for {n} images",
            labels.display()
        );
    }
    let mut written = [0usize; 10];
    for (index, &label) in label_bytes.iter().enumerate() {
        let class = *CLASSES
            .get(label as usize)
            .with_context(|| format!("label {label} of image {index} is not 0-9"))?;
        if per_class.is_some_and(|limit| written[label as usize] >= limit) {
            continue;
        }
        let folder = out.join(class);
        std::fs::create_dir_all(&folder)?;
        let image = image::GrayImage::from_raw(
            w as u32,
            h as u32,
            pixels[index * h * w..(index + 1) * h * w].to_vec(),
        )
        .context("image size")?;
        image.save(folder.join(format!("{index:05}.png")))?;
        written[label as usize] += 1;
    }
    println!(
        "{} images in {} classes written to {}",
        written.iter().sum::<usize>(),
        CLASSES.len(),
        out.display()
    );
    Ok(())
}
