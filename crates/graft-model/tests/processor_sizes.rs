//! graft's preprocessing at input sizes other than the folder's against transformers' image
//! processors (`tests/golden/vision/processor_sizes.json`, made by
//! `scripts/golden/make_processor_size_goldens.py`). For each `preprocessor_config.json` layout
//! graft's vision families read, as the Hub models ship it (ViT's squash, DeiT's squash before its
//! crop, DINOv2's BiT, CLIP's, ConvNeXt's `crop_pct` with `size` as an integer and as
//! `shortest_edge`), at sizes below and
//! above the folder's 224 (ConvNeXt also at 384, where its processor stops cropping), on a photo
//! wider than tall and one taller than wide: `processor_transform(folder).at_size(S)` is the
//! config a transformers user gets at S (the one graft's export writes; the script checks that the
//! folder's own processor class sized to S gives the same pixels), resizes to the size transformers
//! resizes to and crops where it crops, and its pixels are the slow (PIL) and the fast
//! (torchvision) processor's `pixel_values` to the bounds `BOUNDS` states.

use std::path::{Path, PathBuf};

use base64::Engine;
use graft_data::image::{CropOffset, decode_rgb, load_rgb};
use graft_model::ImageTransform;
use image::RgbImage;
use serde_json::Value;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vision")
}

/// The script's photos: chelsea.png as it is, coffee.png cropped to 260 x 400 at (70, 0).
fn photo(name: &str) -> RgbImage {
    match name {
        "chelsea.png" => load_rgb(&golden_dir().join("chelsea.png")).unwrap(),
        "coffee-260x400" => {
            let coffee = load_rgb(&golden_dir().join("coffee.png")).unwrap();
            image::imageops::crop_imm(&coffee, 70, 0, 260, 400).to_image()
        }
        other => panic!("unknown photo {other}"),
    }
}

fn png(images: &Value, key: &str) -> RgbImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(images[key].as_str().unwrap())
        .unwrap();
    decode_rgb(&bytes, Path::new(key)).unwrap()
}

fn triple(v: &Value) -> [f32; 3] {
    serde_json::from_value(v.clone()).unwrap()
}

/// `pixel_values` [3, S, S] of an 8-bit image, as the processors normalize it.
fn normalized(image: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] =
                ((pixel[c] as f64 / 255.0 - mean[c] as f64) / std[c] as f64) as f32;
        }
    }
    out
}

/// Max and mean abs difference in normalized units, and the max in 8-bit pixel levels (the
/// normalization undone: x * std + mean, times 255).
fn diffs(ours: &[f32], theirs: &[f32], std: [f32; 3]) -> (f64, f64, f64) {
    let plane = ours.len() / 3;
    let (mut max, mut sum, mut max_255) = (0f64, 0f64, 0f64);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let d = (*a as f64 - *b as f64).abs();
        max = max.max(d);
        sum += d;
        max_255 = max_255.max(d * std[i / plane] as f64 * 255.0);
    }
    (max, sum / ours.len() as f64, max_255)
}

/// The transform at S against the config a transformers user gets at S: its processor resizes the
/// shorter side to `shortest_edge` and crops `crop_size`, or squashes to `height` x `width`, with
/// the same filter, mean and std; and the intermediate size and crop start transformers computes.
fn check_sizes(what: &str, t: &ImageTransform, case: &Value) {
    let config = &case["at_size_config"];
    let size = case["size"].as_u64().unwrap() as usize;
    assert_eq!(t.image_size, size, "{what}");
    let processor = config["image_processor_type"].as_str().unwrap();
    match (config["size"].get("shortest_edge"), processor) {
        (Some(shortest), _) => {
            assert_eq!(processor, "BitImageProcessor", "{what}");
            assert_eq!(config["do_center_crop"], true, "{what}");
            assert!(!t.squash_before_crop, "{what}");
            assert_eq!(
                t.resize_shorter,
                Some(shortest.as_u64().unwrap() as usize),
                "{what}"
            );
            assert_eq!(config["crop_size"]["height"], size, "{what}");
            assert_eq!(config["crop_size"]["width"], size, "{what}");
        }
        (None, "DeiTImageProcessor") => {
            // The whole image squashed to `size` height/width, then the crop.
            assert_eq!(config["do_center_crop"], true, "{what}");
            assert!(t.squash_before_crop, "{what}");
            let side = config["size"]["height"].as_u64().unwrap() as usize;
            assert_eq!(config["size"]["width"], side, "{what}");
            assert_eq!(t.resize_shorter, Some(side), "{what}");
            assert_eq!(config["crop_size"]["height"], size, "{what}");
        }
        (None, _) => {
            assert_eq!(processor, "ViTImageProcessor", "{what}");
            assert_eq!(config["do_center_crop"], false, "{what}");
            assert_eq!(t.resize_shorter, None, "{what}");
            assert_eq!(config["size"]["height"], size, "{what}");
            assert_eq!(config["size"]["width"], size, "{what}");
        }
    }
    assert_eq!(config["resample"], t.interpolation.pil_code(), "{what}");
    assert_eq!(triple(&config["image_mean"]), t.mean, "{what}");
    assert_eq!(triple(&config["image_std"]), t.std, "{what}");
    // transformers' `center_crop` starts at int((side - crop) / 2).
    assert_eq!(t.crop_offset, CropOffset::Floor, "{what}");
    if let Some(shorter) = t.resize_shorter {
        // graft's resize: the shorter side to `shorter`, the longer one truncated (or both
        // sides to `shorter` when it squashes first).
        let image = photo(case["photo"].as_str().unwrap());
        let (w, h) = (image.width() as usize, image.height() as usize);
        let side = |n: usize| match t.squash_before_crop {
            true => shorter.max(size),
            false => (shorter * n / w.min(h)).max(size),
        };
        let (nh, nw) = (side(h), side(w));
        let want = |key: &str| -> Vec<usize> { serde_json::from_value(case[key].clone()).unwrap() };
        assert_eq!(vec![nh, nw], want("resized_hw"), "{what}: resized");
        assert_eq!(
            vec![(nh - size) / 2, (nw - size) / 2],
            want("crop_top_left"),
            "{what}: crop start"
        );
    }
}

/// Bounds on the difference from the processors' `pixel_values`: the max per pixel in 8-bit levels
/// (the normalization undone) and the mean in normalized units. Measured: graft's resize gives
/// Pillow's 8-bit pixels exactly on every case (what is left is f32 rounding, at most 2.4e-7);
/// torchvision's antialiased resize (the fast processor) is 1 or 2 levels from Pillow's on some
/// pixels, and up to 5 (mean 2.7e-3) where DeiT's squash enlarges one side and shrinks the other
/// (the taller photo at 240), which is torchvision's own difference from Pillow.
struct Bounds {
    slow_max_255: f64,
    slow_mean: f64,
    fast_max_255: f64,
    fast_mean: f64,
}

const BOUNDS: Bounds = Bounds {
    slow_max_255: 0.0,
    slow_mean: 1e-7,
    fast_max_255: 5.0,
    fast_mean: 3e-3,
};

#[test]
fn processors_at_other_sizes_match_transformers() {
    let text = std::fs::read_to_string(golden_dir().join("processor_sizes.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let folder_size = golden["folder_size"].as_u64().unwrap() as usize;
    let images = &golden["images"];
    eprintln!(
        "bounds: slow (PIL) max {}/255 per pixel, mean {:.1e}; fast (torchvision) max {}/255, \
         mean {:.1e} (normalized units)",
        BOUNDS.slow_max_255, BOUNDS.slow_mean, BOUNDS.fast_max_255, BOUNDS.fast_mean
    );
    let mut failures = Vec::new();
    for case in golden["cases"].as_array().unwrap() {
        let layout = case["layout"].as_str().unwrap();
        let photo_name = case["photo"].as_str().unwrap();
        let size = case["size"].as_u64().unwrap() as usize;
        let what = format!("{layout} {photo_name} at {size}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("preprocessor_config.json"),
            golden["folders"][layout]["config"].to_string(),
        )
        .unwrap();
        let folder = graft_model::vision::processor_transform(dir.path(), folder_size).unwrap();
        assert_eq!(folder.image_size, folder_size, "{what}");
        let t = folder.at_size(size, None);
        check_sizes(&what, &t, case);
        let ours = t.apply(&photo(photo_name));
        let slow = png(images, case["slow"].as_str().unwrap());
        let delta = png(images, case["fast_minus_slow"].as_str().unwrap());
        let mut fast = slow.clone();
        for (f, d) in fast.iter_mut().zip(delta.iter()) {
            *f = (*f as i32 + *d as i32 - 128) as u8;
        }
        let config = &case["at_size_config"];
        let (mean, std) = (triple(&config["image_mean"]), triple(&config["image_std"]));
        let (slow_max, slow_mean, slow_255) = diffs(&ours, &normalized(&slow, mean, std), std);
        let (fast_max, fast_mean, fast_255) = diffs(&ours, &normalized(&fast, mean, std), std);
        eprintln!(
            "{what}: slow max {slow_max:.2e} ({slow_255:.1}/255) mean {slow_mean:.1e}; \
             fast max {fast_max:.2e} ({fast_255:.1}/255) mean {fast_mean:.1e}"
        );
        if slow_255 > BOUNDS.slow_max_255 + 1e-3
            || slow_mean > BOUNDS.slow_mean
            || fast_255 > BOUNDS.fast_max_255 + 1e-3
            || fast_mean > BOUNDS.fast_mean
        {
            failures.push(what);
        }
    }
    let left_out = golden["left_out"]["reason"].as_object().unwrap();
    assert!(left_out.is_empty(), "layouts left out: {left_out:?}");
    assert!(failures.is_empty(), "over the bounds: {failures:?}");
}
