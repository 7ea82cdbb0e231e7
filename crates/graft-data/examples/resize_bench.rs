//! Times image preprocessing per image on a folder of images: decoding, the resize as graft does
//! it now (Pillow's arithmetic, `graft_data::resample`), the `image` crate's resize that graft
//! used before, and normalization. For BENCHMARKS.md's preprocessing section.
//!
//! cargo run --release --example resize_bench -- IMAGE_DIR SIZE [bicubic|bilinear] [REPEATS]

use std::path::{Path, PathBuf};
use std::time::Instant;

use graft_data::image::{CropOffset, ImageTransform, Interpolation, read_rgb};
use image::imageops::{self, FilterType};

fn images(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            images(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("png" | "jpg" | "jpeg")
        ) {
            out.push(path);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, size, rest @ ..] = args.as_slice() else {
        eprintln!("usage: resize_bench IMAGE_DIR SIZE [bicubic|bilinear] [REPEATS]");
        std::process::exit(2);
    };
    let size: u32 = size.parse().expect("SIZE is a number");
    let interpolation = rest
        .first()
        .map(|name| Interpolation::from_name(name).expect("bicubic or bilinear"))
        .unwrap_or(Interpolation::Bicubic);
    let repeats: usize = rest.get(1).map_or(3, |n| n.parse().expect("REPEATS"));
    let filter = match interpolation {
        Interpolation::Bilinear => FilterType::Triangle,
        _ => FilterType::CatmullRom,
    };
    let mut paths = Vec::new();
    images(Path::new(dir), &mut paths);
    assert!(!paths.is_empty(), "no images under {dir}");
    let preprocess = ImageTransform {
        image_size: size as usize,
        resize_shorter: None,
        squash_before_crop: false,
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation,
        crop_pct: None,
        crop_offset: CropOffset::RoundHalfEven,
        crops_below: None,
    };

    let time = |what: &str, f: &mut dyn FnMut()| {
        let mut best = f64::INFINITY;
        for _ in 0..repeats {
            let start = Instant::now();
            f();
            best = best.min(start.elapsed().as_secs_f64());
        }
        let per_image = best / paths.len() as f64 * 1e6;
        println!("{what:<34} {per_image:>9.1} us/image");
        per_image
    };
    let mut decoded = Vec::new();
    time("decode", &mut || {
        decoded = paths.iter().map(|p| read_rgb(p).unwrap().0).collect();
    });
    let (w, h) = decoded[0].dimensions();
    println!(
        "{} images ({w}x{h} first), to {size}x{size} {}, best of {repeats}",
        paths.len(),
        interpolation.name()
    );
    let before = time("resize, image crate (before)", &mut || {
        for image in &decoded {
            std::hint::black_box(imageops::resize(image, size, size, filter));
        }
    });
    let now = time("resize, Pillow's arithmetic (now)", &mut || {
        for image in &decoded {
            std::hint::black_box(preprocess.resize(image));
        }
    });
    let resized: Vec<_> = decoded.iter().map(|i| preprocess.resize(i)).collect();
    time("normalize", &mut || {
        for image in &resized {
            std::hint::black_box(preprocess.normalize(image));
        }
    });
    println!("resize now / before: {:.2}", now / before);
}
